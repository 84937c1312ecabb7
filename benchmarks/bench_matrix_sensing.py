"""Batched engine vs a Python loop over the same 16 matrix-sensing configurations (issue: ≥ 4× at n=50, m=750, float32).

Both paths run the same MatrixSensing step on the same data for the same number of steps; the loop runs
the configurations one by one (C = 1 each). Prints config-steps/s for both and the ratio, the machine's
float32 GEMM GFLOP/s, and the fraction of it the batched step reaches.

    .venv/bin/python benchmarks/bench_matrix_sensing.py [--steps 200] [--threads N]
"""
from __future__ import annotations

import argparse
import time

import torch

from mirrorflow.engine.batched import run_batched, schedule_table
from mirrorflow.experiments.matrix_sensing import MatrixSensing, make_data
from mirrorflow.schedules import constant, turn_off


def gemm_gflops(n: int = 1024, reps: int = 10) -> float:
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def step_flops(C: int, n: int, m: int) -> float:
    """UUᵀ (2n³) + residual GEMM (2n²m) + ∇f GEMM (2mn²) + ∇f·U (2n³), per configuration."""
    return C * (4 * n**3 + 4 * n * n * m)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--configs", type=int, default=16)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--r", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, r, C, T = args.n, args.r, args.configs, args.steps
    m = 3 * n * r
    data = make_data(n, r, m, seed=0, dtype=torch.float32)
    scheds = [turn_off(0.02 * (1 + k), at=T // 2) if k % 2 else constant(0.01 * (1 + k)) for k in range(C)]
    inits = [10 ** (-1 - 0.1 * k) for k in range(C)]
    lam = schedule_table(scheds, T, torch.float32)
    log_every = T  # measure the step, not the metrics

    run_batched(MatrixSensing(data, inits[:2]), lam[:2, :5], 0.25, log_every=log_every)  # warm-up
    t = time.perf_counter()
    batched = run_batched(MatrixSensing(data, inits), lam, 0.25, log_every=log_every)
    t_batched = time.perf_counter() - t

    t = time.perf_counter()
    looped = [run_batched(MatrixSensing(data, [inits[k]]), lam[k : k + 1], 0.25, log_every=log_every) for k in range(C)]
    t_loop = time.perf_counter() - t

    diff = max(
        abs(float(batched.metrics["rec_error"][k, -1]) - float(looped[k].metrics["rec_error"][0, -1]))
        for k in range(C)
    )
    peak = gemm_gflops()
    achieved = step_flops(C, n, m) * T / t_batched / 1e9
    print(f"matrix sensing n={n} r={r} m={m} float32, {C} configs x {T} steps, {args.threads} threads")
    print(f"{'path':<22}{'seconds':>10}{'config-steps/s':>18}")
    print(f"{'batched engine':<22}{t_batched:>10.3f}{C * T / t_batched:>18.0f}")
    print(f"{'python loop':<22}{t_loop:>10.3f}{C * T / t_loop:>18.0f}")
    print(f"ratio (batched / loop): {t_loop / t_batched:.2f}x   (target >= 4x)")
    print(f"max |rec_error batched - loop| = {diff:.2e}")
    print(f"float32 GEMM peak (1024^3): {peak:.1f} GFLOP/s; batched step reaches {achieved:.1f} GFLOP/s = {achieved / peak:.0%}")


if __name__ == "__main__":
    main()

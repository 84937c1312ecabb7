"""Diagonal networks: a batched weight-decay sweep against a per-configuration loop, side by side.

Both sides run ``mirrorflow.engine.reparam_regression.ReparamRegression`` (the diagonal experiment's
problem) on the same data (Z ∈ ℝ^{N×d} i.i.d. N(0, 1), a sparse x*, y = Zx*) through ``run_batched``: the
batched side stacks C weight decays on the leading configuration axis, the loop runs single-config problems
one after the other (the first ``--loop-configs`` of them; the loop's cost per config-step does not depend
on C). Prints config-steps/s for C ∈ {1, 16, 64, 256}, the ratio, and whether the final x agree (1e-10).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_diagonal.py [--model mw] [--threads 1,2] [--steps 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mirrorflow import geometry
from mirrorflow.engine.batched import run_batched, schedule_table
from mirrorflow.engine.reparam_regression import ReparamRegression
from mirrorflow.errors import ConfigError
from mirrorflow.runtime import resolve_device
from mirrorflow.schedules import turn_off


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def data(N: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(N, d, generator=g, dtype=torch.float64)
    x_star = torch.zeros(d, dtype=torch.float64)
    x_star[:5] = 0.5 + torch.rand(5, generator=g, dtype=torch.float64)
    return Z, Z @ x_star


def timed(fn) -> tuple[float, object]:
    """(shortest of 3 wall times, the last result)."""
    best, out = float("inf"), None
    for _ in range(3):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def compare(args, threads: int, device: torch.device) -> None:
    torch.set_num_threads(threads)
    rep = geometry.get(args.model, args.dim)
    Z, y = data(args.samples, args.dim)
    w0 = rep.init(1.0)
    T = args.steps
    print(
        f"\n== diagonal '{args.model}', N={args.samples}, d={args.dim}, {T} steps (λ off at T/2), float64, "
        f"{threads} thread(s), device {device}"
    )
    print(f"{'C':>5}{'batched cfg-steps/s':>21}{'loop cfg-steps/s':>18}{'batched/loop':>14}{'same x':>8}")
    for C in args.configs:
        wds = np.geomspace(1e-3, 1.0, C) if C > 1 else np.array([0.1])
        lam = schedule_table([turn_off(float(v), T // 2) for v in wds], T, torch.float64, device)

        def batched():
            prob = ReparamRegression(rep, Z, y, w0, n_configs=C, device=device)
            tr = run_batched(prob, lam, args.lr, log_every=T)
            sync(device)
            return prob.x_of(tr.final_state).cpu()

        def loop():
            xs = []
            for k in range(min(C, args.loop_configs)):
                prob = ReparamRegression(rep, Z, y, w0, n_configs=1, device=device)
                tr = run_batched(prob, lam[k : k + 1], args.lr, log_every=T)
                xs.append(prob.x_of(tr.final_state).cpu())
            sync(device)
            return torch.cat(xs)

        t_b, x_b = timed(batched)
        t_l, x_l = timed(loop)
        k = x_l.shape[0]
        same = bool(torch.allclose(x_b[:k], x_l, rtol=1e-10, atol=1e-12))
        rb, rl = C * T / t_b, k * T / t_l
        print(f"{C:>5}{rb:>21,.0f}{rl:>18,.0f}{rb / rl:>13.1f}x{str(same):>8}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mw", help="a reparameterization name of mirrorflow.geometry (mw, ...)")
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--configs", default="1,16,64,256", help="comma-separated numbers of weight decays C")
    ap.add_argument("--loop-configs", type=int, default=8, help="configurations the loop runs (per-config cost)")
    ap.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto (auto: also the GPU when there is one)")
    args = ap.parse_args()
    args.configs = [int(c) for c in args.configs.split(",")]
    devices = [torch.device("cpu")]
    dev = resolve_device(args.device)
    if dev.type != "cpu":
        devices.append(dev)
    else:
        print(f"no GPU used (CUDA available: {torch.cuda.is_available()})")
    print(f"torch {torch.__version__}")
    for device in devices:
        for threads in (int(t) for t in args.threads.split(",")):
            compare(args, threads, device)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:  # e.g. --device cuda without CUDA
        raise SystemExit(f"error: {e}") from None

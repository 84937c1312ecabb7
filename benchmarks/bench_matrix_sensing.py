"""Matrix sensing: the batched engine against a reference NumPy loop and against the machine's GEMM peak.

On identical data (n=50, r=5, m=750, W_0 = 1e-3·I, η = 0.25 by default) it prints, side by side in one run,
for C ∈ {1, 16, 64, 256} configurations × {float32, float64}:

* config-steps/s of ``run_batched(MatrixSensing(...))`` (best of 3 timings; metrics at the ends only);
* the fraction of the measured GEMM peak (a 1024³ matmul, same dtype and threads) by the naive count
  4·n²·m + 4·n³ FLOP per config-step (UUᵀ, the residual GEMM, ∇f, ∇f·U in the full n² basis; the engine's
  packed symmetric basis does about half the sensing work, so the fraction can exceed what its own FLOPs
  would give);
* the ratio to the reference loop: Wu & Rebeschini's update ``U ← U − 2η·(1/m Σ r_i A_i)U``, ``U_0 = √α I``,
  in NumPy, one configuration at a time, per config-step, in the same dtype and in float64 (their code's
  dtype; NumPy's float32 matrix-vector product is the slower of the two on OpenBLAS builds), written with
  BLAS matrix-vector products on the (m, n²) matrix; and to the same update in float64 written as their
  published code writes it (``np.einsum`` over the (m, n, n) tensor, which NumPy runs in its own loops);

and checks that the engine (no weight decay, float64) and the reference give the same U after the
reference run. ``--growth`` prints how the cost of one step grows with n, m and C instead.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_matrix_sensing.py [--threads 1,2] [--device auto]
    PYTHONPATH=src .venv/bin/python benchmarks/bench_matrix_sensing.py --growth [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mirrorflow.engine.batched import run_batched, schedule_table
from mirrorflow.errors import ConfigError
from mirrorflow.experiments.matrix_sensing import MatrixSensing, make_data
from mirrorflow.runtime import resolve_device, resolve_dtype
from mirrorflow.schedules import constant

DTYPES = {name: resolve_dtype(name) for name in ("float32", "float64")}  # the rows, in this order


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(fn, repeats: int = 3) -> float:
    """Shortest wall time of ``repeats`` calls (the machine is shared: the minimum is the least disturbed)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def gemm_peak(dtype: torch.dtype, device: torch.device, n: int = 1024, reps: int = 2) -> float:
    """GFLOP/s of an n³ matmul (best of 3 timings of ``reps`` products)."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b

    def products():
        for _ in range(reps):
            a @ b
        sync(device)

    return 2 * n**3 * reps / best_of(products) / 1e9


def naive_flops(n: int, m: int) -> int:
    """UUᵀ (2n³) + residual (2n²m) + ∇f = Σ r_i A_i (2mn²) + ∇f·U (2n³), per config-step."""
    return 4 * n * n * m + 4 * n**3


def reference_loop(A: np.ndarray, y: np.ndarray, alpha: float, eta: float, steps: int) -> np.ndarray:
    """Wu & Rebeschini's gradient descent for one configuration: U ← U − 2η (1/m Σ r_i A_i) U, U_0 = √α I."""
    m, n2 = A.shape
    n = int(round(n2**0.5))
    U = np.sqrt(alpha) * np.eye(n, dtype=A.dtype)
    for _ in range(steps):
        r = A @ (U @ U.T).ravel() - y
        G = (r @ A / m).reshape(n, n)
        U = U - 2 * eta * G @ U
    return U


def reference_loop_einsum(A3: np.ndarray, y: np.ndarray, alpha: float, eta: float, steps: int) -> np.ndarray:
    """The same update written the way Wu & Rebeschini's published code writes it: ``np.einsum`` over the
    (m, n, n) sensing tensor for the residual and for Σ r_i A_i (NumPy's own einsum loops, no BLAS, one
    thread), U_0 = √α I."""
    m, n, _ = A3.shape
    U = np.sqrt(alpha) * np.eye(n, dtype=A3.dtype)
    for _ in range(steps):
        r = np.einsum("kij,ij->k", A3, U @ U.T) - y
        G = np.einsum("ijk,i->jk", A3, r) / m
        U = U - 2 * eta * G @ U
    return U


def engine_rate(data, C: int, steps: int, init: float, eta: float, device: torch.device) -> float:
    lam = schedule_table([constant(0.01 * (k % 4)) for k in range(C)], steps, data.A.dtype, device)
    prob = MatrixSensing(data, [init] * C, device=device)
    run_batched(prob, lam[:, :2], eta, log_every=steps)  # warm-up (allocations, kernels)

    def go():
        run_batched(prob, lam, eta, log_every=steps)
        sync(device)

    return C * steps / best_of(go)


def compare(args, threads: int, device: torch.device) -> None:
    torch.set_num_threads(threads)
    with threadpool_limits(threads):  # NumPy's BLAS gets the same number of threads as torch
        _compare(args, threads, device)


def _compare(args, threads: int, device: torch.device) -> None:
    n, r, m, init, eta = args.n, args.r, args.m, args.init, args.lr
    flops = naive_flops(n, m)
    print(
        f"\n== matrix sensing n={n} r={r} m={m} init={init:g} η={eta:g}; {threads} thread(s); device {device}; "
        f"naive {flops / 1e6:.2f} MFLOP per config-step"
    )
    data64 = make_data(n, r, m, seed=0, dtype=torch.float64)
    # same result: engine (C=1, no weight decay) vs the NumPy reference, float64
    T = args.check_steps
    U_ref = reference_loop(data64.A.numpy(), data64.y.numpy(), init, eta, T)
    prob = MatrixSensing(data64, [init], device=device)
    tr = run_batched(prob, schedule_table([constant(0.0)], T, torch.float64, device), eta, log_every=T)
    W_eng = prob.W(tr.final_state["X"])[0].cpu().numpy()
    W_ref = U_ref @ U_ref.T
    U_ein = reference_loop_einsum(data64.A.numpy().reshape(m, n, n), data64.y.numpy(), init, eta, T)
    print(
        f"after {T} steps: max |W_engine − W_reference| = {np.abs(W_eng - W_ref).max():.2e}, "
        f"max |W_einsum − W_reference| = {np.abs(U_ein @ U_ein.T - W_ref).max():.2e} "
        f"(‖W‖_* = {np.linalg.eigvalsh(W_ref).__abs__().sum():.6f}, ‖W − W*‖_F = "
        f"{np.linalg.norm(W_ref - data64.W_star.numpy()):.6f})"
    )
    refs = {}
    for name, dtype in DTYPES.items():
        data = make_data(n, r, m, seed=0, dtype=dtype)
        A, y = data.A.numpy(), data.y.numpy()
        ref_steps = max(20, args.work // 16)
        refs[name] = ref_steps / best_of(lambda: reference_loop(A, y, init, eta, ref_steps))
    A3 = data64.A.numpy().reshape(m, n, n)
    ein_steps = max(10, args.work // 64)
    refs["einsum"] = ein_steps / best_of(lambda: reference_loop_einsum(A3, data64.y.numpy(), init, eta, ein_steps))
    print(
        "NumPy reference (one config at a time), config-steps/s: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in refs.items() if k != "einsum")
        + f"; float64 in the published code's einsum form {refs['einsum']:,.0f}"
    )
    print(
        f"{'dtype':<8}{'C':>5}{'engine cfg-steps/s':>20}{'GFLOP/s (naive)':>17}{'peak GFLOP/s':>14}"
        f"{'of peak':>9}{'/ ref same dtype':>18}{'/ ref float64':>15}{'/ einsum ref':>14}"
    )
    for name, dtype in DTYPES.items():
        data = make_data(n, r, m, seed=0, dtype=dtype)
        for C in args.configs:
            steps = max(4, args.work // C)
            peak = gemm_peak(dtype, device)  # measured next to each row: the load on the machine changes
            rate = engine_rate(data, C, steps, init, eta, device)
            peak = max(peak, gemm_peak(dtype, device))
            gf = rate * flops / 1e9
            print(
                f"{name:<8}{C:>5}{rate:>20,.0f}{gf:>17.1f}{peak:>14.1f}{gf / peak:>9.0%}"
                f"{rate / refs[name]:>17.1f}x{rate / refs['float64']:>14.1f}x{rate / refs['einsum']:>13.1f}x"
            )


def growth(args, threads: int, device: torch.device) -> None:
    """Seconds per step and per config-step as n, m and C grow (float32)."""
    torch.set_num_threads(threads)
    print(f"\n== cost growth, float32, {threads} thread(s), device {device}")
    print(f"{'n':>5}{'m':>7}{'C':>5}{'ms/step':>10}{'µs/config-step':>16}{'naive GFLOP/s':>15}")
    for n, m in ((25, 375), (50, 375), (50, 750), (50, 1500), (100, 1500)):
        data = make_data(n, 5, m, seed=0, dtype=torch.float32)
        for C in (1, 16, 64):
            steps = max(4, args.work // (C * max(1, (n * n * m) // (50 * 50 * 750))))
            rate = engine_rate(data, C, steps, args.init, args.lr, device)
            print(
                f"{n:>5}{m:>7}{C:>5}{1e3 * C / rate:>10.2f}{1e6 / rate:>16.1f}{rate * naive_flops(n, m) / 1e9:>15.1f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--r", type=int, default=5)
    ap.add_argument("--m", type=int, default=750)
    ap.add_argument("--init", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=0.25)
    ap.add_argument("--configs", default="1,16,64,256", help="comma-separated numbers of configurations C")
    ap.add_argument("--threads", default="1", help="comma-separated torch/BLAS thread counts, e.g. 1,2")
    ap.add_argument("--work", type=int, default=800, help="config-steps per timing (steps = work / C)")
    ap.add_argument("--check-steps", type=int, default=200, help="steps of the engine-vs-reference check")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto (auto: also the GPU when there is one)")
    ap.add_argument("--growth", action="store_true", help="print the cost-growth table instead")
    args = ap.parse_args()
    args.configs = [int(c) for c in args.configs.split(",")]
    devices = [torch.device("cpu")]
    if args.device != "cpu":
        dev = resolve_device(args.device)
        devices = devices + [dev] if dev.type != "cpu" else devices
    if not any(d.type == "cuda" for d in devices):
        print(f"no GPU used (CUDA available: {torch.cuda.is_available()})")
    print(f"torch {torch.__version__}, numpy {np.__version__}")
    for device in devices:
        for threads in (int(t) for t in args.threads.split(",")):
            (growth if args.growth else compare)(args, threads, device)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:  # e.g. --device cuda without CUDA
        raise SystemExit(f"error: {e}") from None

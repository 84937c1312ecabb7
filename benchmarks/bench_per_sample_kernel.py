"""The per-sample dictionary kernel of sparse coding (App. E) alone, for several register tiles.

The kernel (``mirrorflow/experiments/sparse_coding/dictionary.py``) updates the atoms in blocks of ``MB``
with an ``MB × TB``-vector tile of accumulators; both are compile-time macros. This script compiles the
kernel's source once per tile given, runs one batch sweep of the paper's size (C = 10 configurations,
b = 200 positions, K = 50 atoms, r = 450 coordinates, float64; best of 3), and prints seconds per sweep,
multiply-adds per second (K²·r per position and configuration) and the projected time of the paper's 200
sweeps (100 iterations of 2 batches), with the largest difference in D from the first tile.

    python benchmarks/bench_per_sample_kernel.py   # the default tile 5:4 first, then other tiles
    python benchmarks/bench_per_sample_kernel.py --tiles 5:4,5:3,10:2 --threads 1,2
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from mirrorflow.experiments.sparse_coding import dictionary as SD


def compile_tile(mb: int, tb: int, workdir: Path) -> ctypes.CDLL:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("error: no C compiler (cc or gcc) on the PATH")
    src, lib = workdir / f"k_{mb}_{tb}.c", workdir / f"k_{mb}_{tb}.so"
    src.write_text(f"#define REAL double\n#define MB {mb}\n#define TB {tb}\n{SD._SOURCE}")
    subprocess.run([cc, *SD.CFLAGS, str(src), "-o", str(lib), "-lm"], check=True)
    return SD.load_kernel(lib)


def batch(C: int, b: int, K: int, P: int):
    g = torch.Generator().manual_seed(0)
    D = torch.randn(C, K, P, generator=g, dtype=torch.float64)
    D /= D.norm(dim=2, keepdim=True)
    X = 0.3 * torch.randn(C, b, K, generator=g, dtype=torch.float64)
    Y = 0.1 * torch.randn(C, b, P, generator=g, dtype=torch.float64)
    A = (SD.A0 * torch.eye(K, dtype=torch.float64)).expand(C, b, K, K).clone()
    return D, A, torch.zeros(C, b, K, P, dtype=torch.float64), X, Y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", default="5:4,5:3,10:2,4:4,8:3", help="comma-separated MB:TB tiles")
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    C, b, K, P = 10, 200, 50, 450
    fma = C * b * K * K * P
    print(f"per-sample kernel, C={C} b={b} K={K} r={P}, float64; {fma / 1e9:.2f}·10⁹ multiply-adds per sweep")
    print(f"{'tile':>6} {'thr':>4} {'ms/sweep':>9} {'GFMA/s':>7} {'200 sweeps':>11} {'max|ΔD|':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        libs = {t: compile_tile(*map(int, t.split(":")), Path(tmp)) for t in args.tiles.split(",")}
        for th in (int(x) for x in args.threads.split(",")):
            first = None
            for tile, so in libs.items():
                best = float("inf")
                for _ in range(3):
                    D, A, Bt, X, Y = batch(C, b, K, P)
                    t0 = time.perf_counter()
                    so.per_sample_sweep(
                        C, b, K, P, *(ctypes.c_void_p(t.data_ptr()) for t in (D, A, Bt, X, Y)), SD.EPS, th
                    )
                    best = min(best, time.perf_counter() - t0)
                first = D if first is None else first
                print(
                    f"{tile:>6} {th:>4} {1e3 * best:>9.1f} {fma / best / 1e9:>7.2f} {200 * best:>10.1f}s "
                    f"{float((D - first).abs().max()):>9.1e}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

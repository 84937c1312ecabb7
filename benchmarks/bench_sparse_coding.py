"""Sparse coding (App. E) at the paper's size: the batched run against a per-config loop, side by side.

For each dictionary update (``aggregated``, ``per_sample``) and thread count, times ``--iterations``
iterations of

* ``batched``: all k of ``--ks`` as one batched run (reduced basis; per-sample: the compiled kernel);
* ``loop``: the same configurations one at a time (C runs of one configuration, same code);
* ``loop, pixel space``: one configuration at a time without the reduced basis (P = 4096 instead of
  r = 450), i.e. the paper code's cost structure; timed on the first k only and scaled by C;

checks that batched and loop give the same MSE, and prints seconds per iteration, the projected time of
the paper's 100 iterations, and the ratios. The machine is usually shared: compare ratios measured in one run.

    python benchmarks/bench_sparse_coding.py                     # 64×64, k = 1..10, 2 iterations, threads 1 and 2
    python benchmarks/bench_sparse_coding.py --image-size 32 --iterations 5 --updates per_sample
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from mirrorflow.config import build
from mirrorflow.engine.batched import run_batched
from mirrorflow.experiments import sparse_coding as S
from mirrorflow.runtime import torch_threads


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def pixel_space_run(cfg: S.Config, Y: np.ndarray):
    """One configuration (k = cfg.ks[0]) with D in pixel coordinates (no reduced basis)."""
    Yt = torch.as_tensor(Y, dtype=torch.float64)
    with torch_threads(cfg.threads):
        p = S.SparseCoding(
            Yt,
            cfg.param,
            [cfg.ks[0]],
            cfg.n_atoms,
            cfg.batch_size,
            [cfg.seeds[0]],
            dict_update=cfg.dict_update,
            threads=cfg.threads,
            reduce=False,
        )
        lam = torch.full((1, cfg.iterations), cfg.alphas[0], dtype=torch.float64)
        return run_batched(p, lam, cfg.lr_scale, log_every=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--ks", default="1,2,3,4,5,6,7,8,9,10")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--updates", default="aggregated,per_sample")
    ap.add_argument("--no-pixel", action="store_true", help="skip the pixel-space loop")
    args = ap.parse_args()
    ks = tuple(int(k) for k in args.ks.split(","))
    Y = S.faces(args.image_size, 400)
    print(
        f"sparse coding, 400 faces of {args.image_size}×{args.image_size}, 50 atoms, batch 200, k = {args.ks}; "
        f"{args.iterations} iterations timed, projected to 100; torch {torch.__version__}, {os.cpu_count()} CPUs "
        f"(load average {os.getloadavg()[0]:.1f}); CUDA: {'yes' if torch.cuda.is_available() else 'no (CPU only)'}"
    )
    head = (
        f"{'update':>10} {'thr':>3} | {'batched s/it':>12} {'100 its':>8} | {'loop s/it':>10} {'ratio':>6} "
        f"| {'pixel loop s/it':>15} {'ratio':>6} | max |ΔMSE|"
    )
    print(head)
    print("-" * len(head))
    for upd in args.updates.split(","):
        for th in (int(t) for t in args.threads.split(",")):
            base = dict(
                image_size=args.image_size, iterations=args.iterations, dict_update=upd, threads=th, device="cpu"
            )
            cfg = build(S.Config, {**base, "ks": ks})
            tr, t_b = timed(lambda: S.run_sweep(cfg, Y=Y))
            loop, t_l = timed(lambda: [S.run_sweep(build(S.Config, {**base, "ks": (k,)}), Y=Y) for k in ks])
            dmse = float(np.nanmax(np.abs(tr.metrics["mse"] - np.concatenate([t.metrics["mse"] for t in loop]))))
            pix = "–"
            if not args.no_pixel:
                _, t_p = timed(lambda: pixel_space_run(build(S.Config, {**base, "ks": ks}), Y))
                t_p *= len(ks)
                pix = f"{t_p / args.iterations:>15.3f} {t_p / t_b:>6.1f}"
            print(
                f"{upd:>10} {th:>3} | {t_b / args.iterations:>12.3f} {100 * t_b / args.iterations:>7.0f}s "
                f"| {t_l / args.iterations:>10.3f} {t_l / t_b:>6.2f} | {pix} | {dmse:.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Benchmark: a batched weight-decay sweep of a diagonal linear network vs a Python loop over the same configs.

Both sides run the same ``DiagonalNetwork`` problem through ``mirrorflow.engine.batched.run_batched``;
the batched side stacks all C weight decays on a leading config axis (one GEMM pair per step), the loop
runs C single-config problems one after the other. Prints configuration-steps per second for each and
their ratio, and checks that both give the same final distances.

    .venv/bin/python benchmarks/bench_diagonal.py [--configs 32] [--steps 2000] [--model mw] [--threads 1]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from mirrorflow.config import build
from mirrorflow.experiments import diagonal as D


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=32, help="number of weight decays C")
    ap.add_argument("--steps", type=int, default=2000, help="total steps (half with weight decay)")
    ap.add_argument("--model", default="mw", choices=D.MODELS)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    wds = tuple(float(v) for v in np.geomspace(1e-3, 1.0, args.configs - 1)) + (0.0,)
    cfg = build(D.Config, {"model": args.model, "weight_decays": wds, "steps_on": args.steps // 2,
                           "steps_off": args.steps - args.steps // 2, "log_every": 100, "threads": args.threads})
    data = D.make_data(cfg.n_samples, cfg.dim, cfg.sparsity, cfg.seed)
    D.run_sweep(replace(cfg, steps_on=10, steps_off=10), data=data)  # warm-up

    t0 = time.perf_counter()
    batched, _ = D.run_sweep(cfg, data=data)
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    looped = [D.run_sweep(replace(cfg, weight_decays=(lam,)), data=data)[0] for lam in wds]
    t_loop = time.perf_counter() - t0

    loop_final = np.array([tr.final("dist")[0] for tr in looped])
    same = np.allclose(batched.final("dist"), loop_final, rtol=1e-10, atol=1e-12)
    work = args.configs * cfg.steps
    print(f"diagonal network '{args.model}', N={cfg.n_samples}, d={cfg.dim}, C={args.configs} weight decays, "
          f"{cfg.steps} steps, {args.threads} thread(s), torch {torch.__version__}")
    print(f"batched sweep : {t_batched:8.3f} s  {work / t_batched:12,.0f} config-steps/s")
    print(f"python loop   : {t_loop:8.3f} s  {work / t_loop:12,.0f} config-steps/s")
    print(f"ratio (batched / loop throughput): {t_loop / t_batched:.1f}x   same results: {same}")


if __name__ == "__main__":
    main()

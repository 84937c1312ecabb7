"""Sweep overhead per run beyond its compute: local backend (target < 50 ms per tiny run) and Ray on a local instance.

A tiny matrix-sensing grid (n=8, r=2, steps=200; ``--wds`` weight decays × ``--seeds`` seeds) is run

1. directly: the same units the sweep would form, ``run_many`` + ``write_run`` in a loop in this process
   (the experiment's own cost; no sweep machinery);
2. by ``sweep`` on the local backend: one worker in this process, batched (the normal case) and with
   ``batch_size=1`` (every run its own unit: the worst case); two workers on the process pool;
3. again over the finished store (resume: every run skipped);
4. on Ray: once with the instance the sweep starts and stops itself (as the command does), then on an
   instance started for the benchmark (``num_cpus`` = workers, 1 and 2): the first sweep pays for
   starting Ray's worker processes, a second one runs on warm workers.

"Compute" is the time spent inside the experiment's functions (``run_many``, ``write_run``, ``run``), which
the sweep measures around each call. The overhead per run is

    (wall × workers − Σ compute) / runs

i.e. worker-time not spent in the experiment (planning, manifest, dispatch, pickling, process start,
waiting); for one in-process worker it is simply (wall − Σ compute) / runs. The run's own compute includes
writing its figures (matrix sensing draws three PNGs per run, which dominates a tiny run).

    .venv/bin/python benchmarks/bench_sweep.py [--wds 2] [--seeds 6] [--no-ray]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wds", type=int, default=2, help="number of weight decays (configs sharing data)")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from mirrorflow.engine.grid import resolve
    from mirrorflow.engine.sweep import make_units, sweep
    from mirrorflow.engine.units import execute_unit
    from mirrorflow.experiments import load
    from mirrorflow.experiments import matrix_sensing as M

    wds = ",".join(f"{0.02 * k:g}" for k in range(args.wds))
    tokens = ["n=8", "r=2", "steps=200", f"wd={wds}", f"seeds=0..{args.seeds - 1}"]
    grid, points = resolve("matrix-sensing", load("matrix-sensing"), None, tokens)
    N = len(points)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    print(f"matrix sensing {' '.join(tokens)}: {N} runs, {torch.get_num_threads()} torch thread(s)\n")

    # warm-up: imports, matplotlib font cache, torch kernels
    execute_unit(make_units("matrix-sensing", M, points[:1], 1)[0], tmp / "warm")

    # 1. the experiment's own cost, same units as the batched sweep
    units = make_units("matrix-sensing", M, points, 1)
    t0 = time.perf_counter()
    direct_compute = sum(o.compute_s for u in units for o in execute_unit(u, tmp / "direct"))
    direct = time.perf_counter() - t0
    print(f"{'path':44s} {'wall s':>8s} {'compute s':>10s} {'overhead/run ms':>16s}")
    print(
        f"{'direct run_many + write_run (no sweep)':44s} {direct:8.2f} {direct_compute:10.2f} "
        f"{1e3 * (direct - direct_compute) / N:16.1f}"
    )

    rows: dict[str, float] = {}

    def report(label, res, workers):
        over = (res.seconds * workers - res.compute_s) / max(1, res.completed or res.total)
        rows[label] = over
        print(f"{label:44s} {res.seconds:8.2f} {res.compute_s:10.2f} {1e3 * over:16.1f}")
        return res

    res = report("local, 1 worker, batched", sweep(grid, points, tmp / "l1", workers=1), 1)
    report("local, 1 worker, batch_size=1", sweep(grid, points, tmp / "l1b", workers=1, batch_size=1), 1)
    report("local, 2 workers (process pool), batched", sweep(grid, points, tmp / "l2", workers=2), 2)
    t0 = time.perf_counter()
    again = sweep(grid, points, tmp / "l1", workers=1)
    resume = time.perf_counter() - t0
    assert again.skipped == N
    print(f"{'resume: all runs finished, skipped':44s} {resume:8.2f} {0.0:10.2f} {1e3 * resume / N:16.1f}")
    local_over = rows["local, 1 worker, batched"]
    print(
        f"\nlocal backend overhead per run (1 worker, batched): {1e3 * local_over:.1f} ms "
        f"(target < 50 ms: {'met' if local_over < 0.05 else 'NOT met'}); "
        f"vs direct wall: {1e3 * (res.seconds - direct) / N:+.1f} ms/run"
    )

    if not args.no_ray:
        import ray

        # as `mirrorflow sweep --backend ray` does it: the sweep starts and stops its own local instance
        print()
        report(
            "ray 1w, own instance (start, runs, stop)",
            sweep(grid, points, tmp / "ray-own", backend="ray", workers=1),
            1,
        )
        for workers in (1, 2):
            t0 = time.perf_counter()
            ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
            init = time.perf_counter() - t0
            # first sweep pays for starting the Ray worker processes (importing torch, mirrorflow)
            first = sweep(grid, points, tmp / f"ray{workers}a", backend="ray", workers=workers)
            warm = sweep(grid, points, tmp / f"ray{workers}b", backend="ray", workers=workers)
            ray.shutdown()
            print(f"\nRay local instance, {workers} worker(s): ray.init {init:.2f} s")
            report(f"ray {workers}w, first sweep (starts workers)", first, workers)
            report(f"ray {workers}w, warm workers", warm, workers)
        print(
            f"\nRay backend overhead per run on a local instance (1 worker): "
            f"{1e3 * rows['ray 1w, warm workers']:.1f} ms "
            f"with warm workers, {1e3 * rows['ray 1w, first sweep (starts workers)']:.1f} ms in the first sweep "
            f"(worker start spread over {N} runs), plus ray.init once; "
            f"{1e3 * rows['ray 1w, own instance (start, runs, stop)']:.1f} ms when the sweep starts and stops "
            "its own instance"
        )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

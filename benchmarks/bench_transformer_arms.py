"""Benchmark: weight-decay arms continued from snapshots of the constant run vs each arm from scratch.

``run_arms`` trains constant λ once and continues every turned-off arm from a snapshot at its turn-off
step; the naive way trains every arm from step 0. Both give the same numbers (checked here, and in
``tests/test_attention.py``). On the small ViT on digits, prints the wall time of each way and their ratio,
and the ratio of a step with 1 vs 2 torch threads (on a shared 2-core machine, 2 threads can be far slower).

    .venv/bin/python benchmarks/bench_transformer_arms.py [--epochs 10] [--offs 2,4,6]
"""

from __future__ import annotations

import argparse
import time

import torch

from mirrorflow.config import build
from mirrorflow.experiments import attention
from mirrorflow.experiments.transformer_kit.distributed import dist_env
from mirrorflow.experiments.transformer_kit.tasks import DigitsTask
from mirrorflow.experiments.transformer_kit.train import Trainer, run_arms
from mirrorflow.schedules import turn_off
from mirrorflow.training.monitor import SpectralMonitor


def trainer(cfg, task, value, schedule=None):
    spe = task.n_train // cfg.digits.batch_size
    model = attention.make_vit(cfg, 0)
    return Trainer(
        model,
        task,
        cfg.vit_spec(0, spe),
        value,
        dist_env("cpu"),
        SpectralMonitor(model, every=1, include="attention"),
        schedule=schedule,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--offs", default="2,4,6", help="turn-off epochs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    offs_ep = [int(x) for x in args.offs.split(",")]
    cfg = build(attention.Config, {"epochs": args.epochs, "parts": "sweep"})
    task = DigitsTask()
    spe = task.n_train // cfg.digits.batch_size
    offs = [e * spe for e in offs_ep]
    lam = cfg.ablation.weight_decay
    one_epoch = build(attention.Config, {"epochs": 1, "parts": "sweep"})

    warm = trainer(one_epoch, task, lam)  # first-call costs (lazy imports, allocations)
    run_arms(warm, lam, [spe // 2])

    t0 = time.perf_counter()
    arms = {a.name: a for a in run_arms(trainer(cfg, task, lam), lam, offs)}
    t_fork = time.perf_counter() - t0

    t0 = time.perf_counter()
    scratch = {}
    for name, sched in [("constant", None)] + [(f"off@{p}", turn_off(lam, at=p)) for p in offs]:
        tr = trainer(cfg, task, lam, sched)
        tr.advance(tr.spec.steps)
        scratch[name] = tr.rows
    t_scratch = time.perf_counter() - t0
    same = all(arms[n].rows[-1]["val_loss"] == scratch[n][-1]["val_loss"] for n in scratch)

    T = cfg.digits.epochs * spe
    print(f"ViT digits, {args.epochs} epochs ({T} steps), constant + {len(offs)} turned-off arms")
    print(f"  from snapshots: {t_fork:7.2f} s   ({T + sum(T - p for p in offs)} steps)")
    print(f"  from scratch  : {t_scratch:7.2f} s   ({T * (1 + len(offs))} steps)")
    print(f"  ratio scratch/snapshots: {t_scratch / t_fork:.2f}   identical final val loss: {same}")

    times = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        tr = trainer(one_epoch, task, lam)
        tr.advance(2)
        t0 = time.perf_counter()
        tr.advance(tr.spec.steps)
        times[threads] = (time.perf_counter() - t0) / (tr.spec.steps - 2)
    print(
        f"  step time 1 thread {times[1] * 1e3:.1f} ms, 2 threads {times[2] * 1e3:.1f} ms, "
        f"ratio 2/1 threads: {times[2] / times[1]:.2f}"
    )


if __name__ == "__main__":
    main()

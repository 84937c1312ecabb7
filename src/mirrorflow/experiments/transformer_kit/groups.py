"""Groups of arms: the unit of work of the transformer experiments, cached on disk, run on a worker pool.

A *group* is one (setting, weight decay, seed): the constant-λ run and the arms that branch from its
snapshots (λ turned off at given steps, the automatic switch-off; :func:`.train.run_arms`). Each group is
described by a :class:`GroupJob` — its directory, the config values its numbers depend on, and its cost in
training steps — and computed by an experiment's :class:`GroupRunner`.

* **Cache.** A finished group is a run directory (``config.yaml``, ``metrics.csv`` with an ``arm``
  column, ``summary.json`` last). Its config is the store's :func:`~mirrorflow.store.cache_key` of the
  experiment's config — all of it except the keys that do not change the numbers (workers, threads, device)
  and the grid keys that enumerate the groups (the lists of weight decays and seeds) — plus the group's own
  values (its weight decay, seed, ...). It is reused when :func:`~mirrorflow.store.is_cached` finds a
  finished, complete group of that config; otherwise it is recomputed, so a new or changed config key
  never reuses a stale group.
* **Pool.** :meth:`GroupRunner.run_all` first computes the unfinished groups on the engine's worker pool
  (:func:`mirrorflow.engine.pool.run_pool`, ``workers`` processes; each rebuilds the runner from the
  experiment module's ``make_runner(values, out)``, once per process), longest first, then loads every group
  in order. The first failure stops the pool and is raised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ...config import config_dict
from ...engine.pool import run_pool
from ...store import METRICS, RunDir, cache_key, is_cached, read_csv
from .train import ArmResult


@dataclass(frozen=True)
class GroupJob:
    """One group: where it lives, what determines its numbers, what it costs, and how to build it.

    ``params`` are the experiment's own arguments for computing the group (weight decay, seed, part, ...).
    """

    path: Path
    config: dict
    steps: int
    params: dict = field(default_factory=dict)
    cost: float = 1.0  # relative cost of one training step (orders the pool: most expensive first)


# ------------------------------------------------------------------------------------- files
def save_group(path: Path | str, config: Mapping, arms: Sequence[ArmResult], seconds: float) -> None:
    """One group: config.yaml, metrics.csv (all arms, column ``arm``), summary.json last."""
    rd = RunDir(path)
    rd.write_config(dict(config))
    rows, cols = [], ["arm", "value"]
    for a in arms:
        for r in a.rows:
            rows.append({"arm": a.name, "value": a.value, **r})
            for k in r:
                if k not in cols:
                    cols.append(k)
    rd.write_metrics(rows, cols)
    rd.finish(
        {
            "arms": [
                {
                    "name": a.name,
                    "value": a.value,
                    "off_at": a.off_at,
                    "diverged_at": a.diverged_at,
                    "status": "diverged" if a.diverged_at is not None else "finished",
                    **a.info,
                }
                for a in arms
            ],
            "seconds": round(seconds, 3),
        }
    )


def load_group(path: Path | str) -> list[ArmResult]:
    """The arms of a finished group written by :func:`save_group`."""
    rd = RunDir(path)
    summary = rd.summary()
    by_arm: dict[str, list[dict]] = {}
    for r in read_csv(rd.file(METRICS)):
        name = r.pop("arm")
        r.pop("value", None)
        by_arm.setdefault(name, []).append({k: _num(v) for k, v in r.items()})
    out = []
    for a in summary["arms"]:
        info = {k: v for k, v in a.items() if k not in ("name", "value", "off_at", "diverged_at", "status")}
        out.append(
            ArmResult(a["name"], float(a["value"]), by_arm.get(a["name"], []), a["off_at"], a["diverged_at"], info)
        )
    return out


def _num(v: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def group_key(cfg: Any, grid: Sequence[str]) -> dict:
    """The part of a group's config that comes from the experiment's config ``cfg``: the store's
    :func:`~mirrorflow.store.cache_key` (all keys but the volatile ones and ``grid``), with the resolved
    precision — left out when ``f32``: the groups written before precision existed are float32 and stay
    valid. The job adds the group's own values (weight decay, seed, ...)."""
    resolved = {**config_dict(cfg), "precision": cfg.resolved_precision}
    return cache_key(resolved, grid, added={"precision": "f32"})


def group_done(job: GroupJob) -> bool:
    """True when ``job``'s directory holds a finished, complete group of ``job.config`` (a
    :func:`mirrorflow.store.cache_key`; :func:`mirrorflow.store.is_cached`, the store's one "finished" check)."""
    return is_cached(job.path, job.config)


# -------------------------------------------------------------------------------------- runner
class GroupRunner:
    """Computes the groups of one experiment run; subclasses implement :meth:`compute`.

    ``progress(k)`` is advanced by the training steps of each group as it is computed or loaded.
    """

    def __init__(
        self, module: str, values: Mapping, out: Path | str, env, progress: Callable[[int], None] | None = None
    ):
        self.module = module  # the experiment module's name (worker processes import it)
        self.values = dict(values)  # the config as plain values (rebuilt in worker processes)
        self.out = Path(out)
        self.env = env
        self.progress = progress

    def compute(self, job: GroupJob) -> list[ArmResult]:  # pragma: no cover - abstract
        raise NotImplementedError

    def group(self, job: GroupJob) -> list[ArmResult]:
        """The arms of ``job``: loaded when finished before, else computed (and written on rank 0)."""
        if group_done(job):
            if self.progress is not None and job.steps:
                self.progress(job.steps)
            return load_group(job.path)
        t0 = time.perf_counter()
        arms = self.compute(job)
        if self.env.is_main:
            save_group(job.path, job.config, arms, time.perf_counter() - t0)
        return arms

    def prepare(self, jobs: Sequence[GroupJob], workers: int) -> None:
        """With ``workers > 1`` (and not under ``torchrun``), compute the unfinished jobs on a process pool,
        most expensive first; afterwards :meth:`group` loads them (without advancing the progress again)."""
        if workers <= 1 or self.env.distributed:
            return
        todo = sorted((j for j in jobs if not group_done(j)), key=lambda j: -j.steps * j.cost)
        if len(todo) <= 1:
            return
        progress, self.progress = self.progress, None
        run_pool(
            partial(_worker_job, self.module, self.values, str(self.out)),
            todo,
            workers,
            on_result=(lambda j, _: progress(j.steps)) if progress is not None else None,
        )

    def run_all(self, jobs: Sequence[GroupJob], workers: int = 1) -> list[list[ArmResult]]:
        """Every job's arms, in order (:meth:`prepare` first)."""
        self.prepare(jobs, workers)
        return [self.group(j) for j in jobs]


_WORKER: dict = {}


def _worker_job(module: str, values: dict, out: str, job: GroupJob) -> None:
    """A group in a worker process; the runner (data, pretrained model) is built once per process."""
    import importlib

    key = (module, repr(sorted(values.items())), out)
    if key not in _WORKER:
        _WORKER.clear()
        _WORKER[key] = importlib.import_module(module).make_runner(values, out)
    _WORKER[key].group(job)

"""Sweeps: run every point of a grid into one run store, resumably, locally or on Ray.

The run store of a sweep is a directory ``DIR`` with one run directory per grid point, ``DIR/<run id>``
(:mod:`mirrorflow.store`), plus ``DIR/sweep.yaml`` (the experiment, the axes and the run ids, read
by ``mirrorflow report``). A run is finished when its ``summary.json`` exists; it is written last and
atomically, so a sweep killed at any moment (SIGKILL included) leaves finished runs intact and unfinished
ones without a summary. Re-running the same command skips the finished runs, deletes what unfinished
ones left behind, and runs only those.

Work is cut into *units*:

* experiments with the batched trio (``Config.data_key()``, ``run_many``, ``write_run``): configurations
  with equal ``data_key()`` go to the batched engine as one tensor program (one unit, at most
  ``batch_size`` configurations; a group is split further so that every worker gets work);
* other experiments: one ``mod.run(cfg, out)`` per unit.

The local backend runs units on the engine's worker pool (:mod:`mirrorflow.engine.pool`) sized to the cores
(``workers``; one torch thread each unless ``threads`` says otherwise), or in this process when one worker
suffices; the Ray backend
(:mod:`mirrorflow.engine.ray_backend`) makes each unit a Ray task. Both call :func:`execute_unit`, so a
run gives the same numbers on either backend. A unit that raises leaves ``error.txt`` in its run
directories (no summary: a re-run retries them) and the sweep goes on.

Only one command may write a store at a time: the sweep holds the store's lock
(:class:`mirrorflow.store.StoreLock`, released by the kernel if the process dies).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..config import cores
from ..errors import ConfigError
from ..store import (
    ERROR,
    MANIFEST,
    SUMMARY,
    RunDir,
    has_finished_run,
    is_cached,
    read_manifest,
    write_manifest,
    writing,
)
from .grid import Grid, GridPoint
from .pool import run_pool
from .protocol import is_batched
from .units import Outcome, Unit, _fail, execute_unit

BACKENDS = ("local", "ray")
DEFAULT_BATCH = 128


@dataclass
class SweepResult:
    out: Path
    total: int
    skipped: int  # finished before this sweep started
    completed: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    compute_s: float = 0.0  # Σ time spent inside run_many/write_run/run (all workers together)

    @property
    def missing(self) -> int:
        return self.total - self.skipped - self.completed

    def line(self) -> str:
        return (
            f"{self.total} runs: {self.skipped} finished before, {self.completed} run now, "
            f"{len(self.failed)} failed ({self.seconds:.1f} s)"
        )


# ----------------------------------------------------------------------------------- planning
def pending_points(points: Sequence[GridPoint], out: Path, experiment: str) -> tuple[list[GridPoint], int]:
    """Points whose run directory holds no finished, complete run of the point's config (the store's one check,
    :func:`mirrorflow.store.is_cached`: a damaged or truncated run is not finished); their leftovers are
    removed. → (todo, skipped)."""
    from ..config import config_dict

    todo: list[GridPoint] = []
    for p in points:
        rd = RunDir(out / p.run_id)
        if rd.path.exists() and not rd.path.is_dir():
            raise ConfigError(f"{rd.path}: is a file, not a run directory (move it away)")
        if is_cached(rd.path, {"experiment": experiment, **config_dict(p.config)}):
            continue
        if rd.path.exists():
            shutil.rmtree(rd.path)  # half-written run of a killed sweep: start it afresh
        todo.append(p)
    return todo, len(points) - len(todo)


def make_units(
    experiment: str,
    mod: Any,
    points: Sequence[GridPoint],
    workers: int,
    batch_size: int = DEFAULT_BATCH,
    threads: int = 1,
) -> list[Unit]:
    """Cut pending points into units: data-sharing batches for batched experiments, single runs otherwise.

    Batches hold configurations with equal ``data_key()`` (in grid order), at most ``batch_size`` and at
    most ``ceil(len(points) / workers)`` of them, so that ``workers`` processes all get work.
    """
    from ..config import config_dict

    if not points:
        return []
    if not is_batched(mod):
        return [Unit(experiment, (config_dict(p.config),), (p.run_id,), False, threads, mod.__name__) for p in points]
    groups: dict[Any, list[GridPoint]] = {}
    for p in points:
        key = p.config.data_key()
        groups.setdefault(repr(key), []).append(p)
    cap = max(1, min(batch_size, math.ceil(len(points) / max(1, workers))))
    units = []
    for members in groups.values():
        for i in range(0, len(members), cap):
            chunk = members[i : i + cap]
            units.append(
                Unit(
                    experiment,
                    tuple(config_dict(p.config) for p in chunk),
                    tuple(p.run_id for p in chunk),
                    True,
                    threads,
                    mod.__name__,
                )
            )
    return units


def run_local(
    units: Sequence[Unit],
    out: Path,
    workers: int,
    on_done: Callable[[list[Outcome]], None],
    on_start: Callable[[], None] | None = None,
) -> None:
    """Run units in this process (``workers == 1`` or one unit) or on the engine's worker pool
    (:func:`mirrorflow.engine.pool.run_pool`: fork or spawn, no orphans); a unit whose worker died is recorded
    as failed (``error.txt``) and the sweep goes on.

    ``on_start()`` is called once the pool's processes exist (so e.g. a progress bar's thread starts after
    the fork)."""
    if workers <= 1 or len(units) <= 1:
        if on_start is not None:
            on_start()
        for u in units:
            on_done(execute_unit(u, out))
        return
    run_pool(
        partial(execute_unit, out=out),
        units,
        workers,
        on_result=lambda u, outcomes: on_done(outcomes),
        on_error=lambda u, e: on_done([_fail(out, rid, e) for rid in u.run_ids]),  # the worker process died
        on_start=on_start,
    )


def remove_unfinished(points: Sequence[GridPoint], out: Path) -> None:
    """Delete the run directories of ``points`` that have no summary (a run cut off mid-way)."""
    for p in points:
        rd = RunDir(out / p.run_id)
        if rd.path.exists() and not rd.done and not rd.file(ERROR).exists():
            shutil.rmtree(rd.path, ignore_errors=True)


# ---------------------------------------------------------------------------------- manifest
def check_manifest(out: Path, grid: Grid) -> dict:
    """The store's ``sweep.yaml`` (validated; ``{}`` when new), refusing a store of another experiment."""
    old = read_manifest(out) or {}
    if old.get("experiment") not in (None, grid.experiment):
        raise ConfigError(f"{out} holds a sweep of experiment {old['experiment']!r}, not {grid.experiment!r}")
    return old


def update_manifest(out: Path, grid: Grid, points: Sequence[GridPoint]) -> None:
    """``DIR/sweep.yaml``: experiment, axes and run ids; merged with an earlier sweep into the same DIR."""
    old = check_manifest(out, grid)
    axes = list(old.get("axes") or [])
    runs = {r["id"]: r.get("params", {}) for r in old.get("runs") or []}
    for a in grid.axes:
        if a not in axes:
            axes.append(a)
    for p in points:
        runs[p.run_id] = p.params
    write_manifest(out, grid.experiment, axes, runs)


# ---------------------------------------------------------------------------------- the sweep
def sweep(
    grid: Grid,
    points: Sequence[GridPoint],
    out: Path | str,
    backend: str = "local",
    address: str | None = None,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    threads: int | None = None,
    progress: Callable[[int, int, int], Callable[[int], None] | None] | None = None,
) -> SweepResult:
    """Run the pending points of a resolved grid (``grid.module`` is the experiment module) into ``out``.

    ``progress(total, skipped, pending)`` may return a callable ``advance(k)`` called as runs finish.
    ``workers`` defaults to the cores (local) or to the Ray cluster's CPUs (ray); ``threads`` (torch threads
    per unit) defaults to 1: the parallelism is across processes, and the experiments' tensors are small
    (more intra-op threads only add synchronization, and on a shared machine spin-waiting).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if address is not None and backend != "ray":
        raise ConfigError("--address needs --backend ray")
    out = Path(out)
    mod = grid.module
    if mod is None:
        raise ValueError("sweep: the grid has no experiment module (use engine.grid.resolve)")
    t0 = time.perf_counter()
    check_manifest(out, grid)  # a damaged or foreign store is refused before anything is created

    def keep(p: Path) -> bool:  # what a failed sweep keeps: finished runs, and the manifest that lists them
        return has_finished_run(p) or (p.name == MANIFEST and any(out.glob(f"*/{SUMMARY}")))

    # locked; a sweep that fails (e.g. an unreachable Ray head, Ctrl-C) leaves only finished runs behind
    with writing(out, keep=keep):
        return _sweep_locked(grid, points, out, backend, address, workers, batch_size, threads, progress, t0)


def _sweep_locked(grid, points, out, backend, address, workers, batch_size, threads, progress, t0) -> SweepResult:
    mod = grid.module
    todo, skipped = pending_points(points, out, grid.experiment)
    update_manifest(out, grid, points)
    result = SweepResult(out, len(points), skipped)
    advance: Callable[[int], None] | None = None

    def on_start() -> None:
        nonlocal advance
        if progress is not None:
            advance = progress(len(points), skipped, len(todo))

    def on_done(outcomes: Iterable[Outcome]) -> None:
        n = 0
        for o in outcomes:
            n += 1
            result.compute_s += o.compute_s
            if o.ok:
                result.completed += 1
            else:
                result.failed[o.run_id] = o.error or "failed"
        if advance is not None and n:
            advance(n)

    def run_todo() -> None:
        if not todo:
            on_start()
        elif backend == "local":
            w = workers or cores()
            units = make_units(grid.experiment, mod, todo, w, batch_size, threads or 1)
            run_local(units, out, w, on_done, on_start)
        else:
            from . import ray_backend

            ray_backend.run_units(
                lambda w: make_units(grid.experiment, mod, todo, w, batch_size, threads or 1),
                out,
                address,
                workers,
                on_done,
                on_start,
            )

    try:
        run_todo()
    finally:  # interrupted, or runs that could not even record their error (a full disk): leave only whole
        remove_unfinished(todo, out)  # runs and error.txt behind (a re-run resumes them)
    result.seconds = time.perf_counter() - t0
    return result

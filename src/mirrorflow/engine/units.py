"""Units of work of a sweep and how one is executed (the same code on the local pool and on Ray).

A :class:`Unit` is one piece of work for a worker: one configuration, or a batch of configurations that
share data (run by the experiment's ``run_many`` as one tensor program). :func:`execute_unit` runs it into
the run store and never raises: a failing run gets ``error.txt`` (no summary, so a re-run retries it).
The experiment module is named in the unit and imported by the worker.
"""

from __future__ import annotations

import contextlib
import importlib
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..store import ERROR, atomic_write


@dataclass(frozen=True)
class Unit:
    """One piece of work for a worker: configs (as plain dicts) and their run ids."""

    experiment: str
    configs: tuple[dict, ...]
    run_ids: tuple[str, ...]
    batched: bool
    threads: int = 1
    module: str = ""  # the experiment module's name, resolved in the parent (a worker may not share its registry)

    def __len__(self) -> int:
        return len(self.run_ids)


@dataclass
class Outcome:
    """What happened to one run of a unit."""

    run_id: str
    ok: bool
    error: str | None = None
    compute_s: float = 0.0  # this run's share of the unit's time inside the experiment's own code


def execute_unit(unit: Unit, out: Path | str) -> list[Outcome]:
    """Run one unit into ``out/<run id>`` (batched: ``run_many`` then ``write_run`` per config).

    Exceptions do not escape: the runs of a failing unit get ``error.txt`` and a failed outcome.
    """
    from ..config import build
    from ..runtime import torch_threads

    out = Path(out)
    outcomes: list[Outcome] = []
    with torch_threads(max(1, unit.threads)):
        try:
            mod = importlib.import_module(unit.module)
            cfgs = [build(mod.Config, d) for d in unit.configs]
            if unit.batched:
                t0 = time.perf_counter()
                results = mod.run_many(cfgs)
                share = (time.perf_counter() - t0) / len(cfgs)
                for cfg, res, rid in zip(cfgs, results, unit.run_ids):
                    t1 = time.perf_counter()
                    mod.write_run(cfg, res, out / rid, share)
                    outcomes.append(Outcome(rid, True, None, share + time.perf_counter() - t1))
            else:
                for cfg, rid in zip(cfgs, unit.run_ids):
                    t0 = time.perf_counter()
                    try:
                        mod.run(cfg, out / rid)
                        outcomes.append(Outcome(rid, True, None, time.perf_counter() - t0))
                    except Exception as e:  # one failing run does not stop the others
                        outcomes.append(_fail(out, rid, e, time.perf_counter() - t0))
        except Exception as e:
            done = {o.run_id for o in outcomes}
            outcomes += [_fail(out, rid, e) for rid in unit.run_ids if rid not in done]
    return outcomes


def _fail(out: Path, rid: str, exc: BaseException, seconds: float = 0.0) -> Outcome:
    line = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    with contextlib.suppress(OSError):
        atomic_write(out / rid / ERROR, "".join(traceback.format_exception(exc)))
    return Outcome(rid, False, line, seconds)

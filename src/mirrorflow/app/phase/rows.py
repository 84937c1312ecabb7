"""The rows of a phase diagram grouped into batched programs (rows that share data run as one program),
and running them (resuming from finished groups)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...config import config_dict
from ...store import run_id
from .spec import AUTO, PhaseSpec, cell_group, lam_schedule


def _row_key(spec: PhaseSpec, schedule: str, values: Mapping[str, float], seed: int) -> tuple:
    """What identifies a row: the values the schedule uses (``none`` ignores wd and off, ``constant`` and
    ``auto`` ignore off), so identical rows run once."""
    ignored = {"none": ("wd", "off"), "constant": ("off",), AUTO: ("off",)}.get(schedule, ())
    return (schedule, seed) + tuple(sorted((k, float(v)) for k, v in values.items() if k not in ignored))


@dataclass
class Group:
    cfg: Any
    rows: list[dict]  # row-key values of each row
    keys: list[tuple]  # each row's _row_key
    schedules: list[str]
    values: list[dict]  # each row's full values (phase keys + axis values)
    check: set[int] = dataclasses.field(default_factory=set)  # rows checked against Theorem 3.11

    @property
    def gid(self) -> str:
        return run_id(
            {"cfg": config_dict(self.cfg), "rows": [list(map(str, k)) for k in self.keys], "check": sorted(self.check)},
            "group",
        )


def plan_rows(spec: PhaseSpec) -> tuple[list[Group], dict]:
    """Every distinct row of the grid, grouped by shared data; and ``index[(schedule, seed, j, i)] → (group,
    row)`` for cell (x_i, y_j)."""
    row_defaults = spec.program.row_keys(spec.base)
    picked = theory_cells(spec)
    groups: dict[str, Group] = {}
    where: dict[tuple, tuple[str, int]] = {}
    index = {}
    for seed in spec.seeds:
        for j, yv in enumerate(spec.y.values):
            for i, xv in enumerate(spec.x.values):
                values = {**spec.fixed, spec.x.key: float(xv), spec.y.key: float(yv)}
                cfg = cell_group(spec, values, seed)
                row = {k: values.get(k, v) for k, v in row_defaults.items()}
                if "seed" in row_defaults:
                    row["seed"] = seed
                gkey = run_id(config_dict(cfg))
                g = groups.setdefault(gkey, Group(cfg, [], [], [], []))
                for s in spec.schedules:
                    key = _row_key(spec, s, values, seed)
                    if key not in where:
                        where[key] = (gkey, len(g.rows))
                        g.rows.append(row)
                        g.keys.append(key)
                        g.schedules.append(s)
                        g.values.append(values)
                    index[(s, seed, j, i)] = where[key]
                    if seed == spec.seeds[0] and (j, i) in picked and s != "constant":
                        g.check.add(where[key][1])
    return list(groups.values()), {k: (list(groups).index(g), r) for k, (g, r) in index.items()}


def theory_cells(spec: PhaseSpec) -> set[tuple[int, int]]:
    """The (j, i) cells checked against Theorem 3.11: an even sub-grid of at most ``spec.theory`` cells."""
    if not spec.theory:
        return set()
    k = max(1, math.isqrt(spec.theory))
    pick = lambda n: sorted({int(round(v)) for v in np.linspace(0, n - 1, min(n, k))})  # noqa: E731
    return {(j, i) for j in pick(spec.y.count) for i in pick(spec.x.count)}


def run_group(spec: PhaseSpec, g: Group, progress=None) -> list[dict]:
    """One batched program for all rows of ``g``; per row its final metrics, and for ``auto`` rows the
    step from which AutoTurnOff set λ = 0 (``auto_off``; NaN when it never fired)."""
    import torch

    from ...engine.batched import schedule_table
    from ...runtime import torch_threads

    prog = spec.program
    T = prog.horizon(g.cfg)
    lam = schedule_table([lam_schedule(spec, s, v, g.cfg) for s, v in zip(g.schedules, g.values)], T)
    lr = torch.tensor([float(v["lr"]) for v in g.values], dtype=torch.float64)
    autos = {c: spec.auto.make(float(v["wd"])) for c, (s, v) in enumerate(zip(g.schedules, g.values)) if s == AUTO}
    observe = None
    log_every = T
    if autos:
        log_every = spec.auto_every

        def observe(t, metrics):  # metrics measured after t steps, i.e. after step t − 1's update
            offs = {}
            for c, a in autos.items():
                if not a.triggered:
                    a.observe(t - 1, {a.signal: float(metrics[a.signal][c])})
                    if a.triggered:
                        offs[c] = a.off_from
            return offs

    with torch_threads(spec.threads), torch.no_grad():
        trace = prog.run(
            g.cfg, g.rows, lam.to(dtype=_dtype(g.cfg)), lr.to(dtype=_dtype(g.cfg)), log_every, progress, observe
        )
    out = prog.final(g.cfg, g.rows, trace)
    for c, a in autos.items():
        out[c]["auto_off"] = float(a.off_from) if a.off_from is not None else float("nan")
        if a.off_from is not None:
            lam[c, a.off_from :] = 0.0
    if g.check:
        for c, marks in prog.theory(g.cfg, g.rows, trace, sorted(g.check), lam[:, -1].numpy()).items():
            out[c].update(marks)
    return out


def _dtype(cfg):
    """The torch dtype of a batched experiment's ``dtype`` field (float64 or float32)."""
    from ...runtime import resolve_dtype

    return resolve_dtype(cfg.dtype)


def run_grid(
    spec: PhaseSpec,
    groups: Sequence[Group],
    done: Mapping[str, list[dict]],
    save: Callable[[Group, list[dict]], None],
    progress=None,
) -> tuple[list[list[dict]], float, float]:
    """Run every group not in ``done`` (``save`` stores each as it finishes); returns the per-group rows,
    wall and CPU seconds of what ran."""
    from ...engine.progress import progress_or_bar

    results = []
    todo = [g for g in groups if g.gid not in done]
    t0, c0 = time.perf_counter(), time.process_time()
    total = sum(spec.program.horizon(g.cfg) for g in todo)
    with progress_or_bar(progress, max(total, 1), f"phase: {spec.experiment}", show=bool(todo)) as bar:
        for g in groups:
            if g.gid in done:
                results.append(done[g.gid])
                continue
            rows = run_group(spec, g, bar)
            save(g, rows)
            results.append(rows)
    return results, time.perf_counter() - t0, time.process_time() - c0

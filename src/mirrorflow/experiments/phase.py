"""Phase diagrams: a 2-D grid of configurations per weight-decay schedule, run as batched tensor programs.

The paper's claim (Sec. 3–5; docs/theory.md#stored) is that weight decay switched off part-way ("turned
off") reaches solutions that neither constant weight decay (it trades fit for norm) nor no weight decay
(wrong geometry) reaches. A phase diagram maps where that holds over two config axes, e.g. weight decay λ
× initialization scale α for matrix sensing:

    mirrorflow phase matrix-sensing x=wd:1e-3:1:32:log y=init_scale:1e-3:1e-1:32:log metric=rec_error \\
        n=20 steps=2000 --out runs/phase-ms

Tokens:

* ``x=KEY:LO:HI:COUNT[:log|lin]`` and ``y=...`` — the two axes (any numeric config field; ``lin`` default);
* ``schedules=constant,turn_off,none`` — one grid per schedule (the config's ``schedule`` field; ``none``
  ignores λ, so its cells are run once per distinct config);
* ``metric=rec_error`` — the metric that decides "turned off beats both" (lower is better): a cell is
  outlined where turn_off < (1 − ``margin``) × min(constant, none), ``margin=0.01`` by default;
* ``metrics=a,b,c`` — the heatmaps to draw (default: the experiment's ``PHASE_METRICS`` here);
* ``device=cpu|cuda`` — where the batched programs run; ``threads=N`` torch threads on the CPU (default 1);
* every other ``key=value`` is a base config override (``n=20 steps=2000 off=0.5``); ``log_every``
  defaults to ``steps`` (only the final metrics are drawn).

All cells of one schedule that share data run as one batched program (the experiment's ``run_many``
groups by ``Config.data_key``). Output (run store): ``config.yaml``, ``cells.csv`` (one row per cell and
schedule), ``phase_<metric>.png`` per metric, ``winner.png``, and ``summary.json`` last (wall time per
schedule, the fraction of cells where turning off wins).
"""
from __future__ import annotations

import dataclasses
import math
import time
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..config import build, check_count, check_threads, config_dict, parse_overrides
from ..errors import ConfigError
from ..schedules import SCHEDULE_KINDS
from ..store import RunDir, run_id, write_csv, writing

MAX_CELLS = 65536  # per schedule (x count × y count)
SCHEDULES = ("constant", "turn_off", "none")
PHASE_METRICS = {"matrix-sensing": ("rec_error", "nuclear_norm", "time_to_train_loss")}
OPTIONS = ("x", "y", "schedules", "metric", "metrics", "margin", "device", "threads")


@dataclass(frozen=True)
class Axis:
    """One grid axis: ``count`` values of config field ``key`` from ``lo`` to ``hi`` (log or linear spacing)."""

    key: str
    lo: float
    hi: float
    count: int
    log: bool

    @property
    def values(self) -> np.ndarray:
        return np.geomspace(self.lo, self.hi, self.count) if self.log else np.linspace(self.lo, self.hi, self.count)

    def spec(self) -> str:
        return f"{self.key}:{self.lo:g}:{self.hi:g}:{self.count}:{'log' if self.log else 'lin'}"


def parse_axis(name: str, text: str, config_cls) -> Axis:
    """``KEY:LO:HI:COUNT[:log|lin]`` → :class:`Axis`; a bad part raises ConfigError naming ``name``."""
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise ConfigError(f"{name}: expected KEY:LO:HI:COUNT[:log|lin], got {text!r}")
    key = parts[0].strip().replace("-", "_")
    hints = typing.get_type_hints(config_cls)
    numeric = [f.name for f in dataclasses.fields(config_cls) if hints[f.name] in (int, float)]
    if key not in numeric:
        raise ConfigError(f"{name}: unknown axis key {key!r} (numeric config keys: {', '.join(sorted(numeric))})")
    try:
        lo, hi = float(parts[1]), float(parts[2])
    except ValueError:
        raise ConfigError(f"{name}: LO and HI must be numbers, got {text!r}") from None
    count = check_count(f"{name}: COUNT", parts[3], low=2, high=MAX_CELLS)
    scale = parts[4].strip().lower() if len(parts) == 5 else "lin"
    if scale not in ("log", "lin"):
        raise ConfigError(f"{name}: spacing must be 'log' or 'lin', got {scale!r}")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"{name}: range of {key} must have LO < HI, got {parts[1]}..{parts[2]}")
    if scale == "log" and lo <= 0:
        raise ConfigError(f"{name}: a log range of {key} needs LO > 0, got {parts[1]}")
    return Axis(key, lo, hi, count, scale == "log")


@dataclass
class PhaseSpec:
    experiment: str
    x: Axis
    y: Axis
    base: object  # the experiment's Config
    schedules: tuple[str, ...]
    metric: str
    metrics: tuple[str, ...]
    margin: float
    device: str | None
    threads: int

    def as_dict(self) -> dict:
        return {"experiment": self.experiment, "x": self.x.spec(), "y": self.y.spec(),
                "schedules": list(self.schedules), "metric": self.metric, "metrics": list(self.metrics),
                "margin": self.margin, "base": config_dict(self.base)}


def parse(experiment: str, tokens: Sequence[str], mod) -> PhaseSpec:
    """Tokens of ``mirrorflow phase`` → :class:`PhaseSpec` (validated; ConfigError names the bad key)."""
    kv = parse_overrides(tokens)
    for need in ("x", "y"):
        if need not in kv:
            raise ConfigError(f"{need}: missing axis (give {need}=KEY:LO:HI:COUNT[:log|lin])")
    if not hasattr(mod, "run_many") or not hasattr(mod, "summarize"):
        raise ConfigError(f"experiment {experiment!r} has no batched run_many/summarize; phase needs them")
    x, y = parse_axis("x", kv["x"], mod.Config), parse_axis("y", kv["y"], mod.Config)
    if x.key == y.key:
        raise ConfigError(f"y: both axes vary {x.key!r}")
    if x.count * y.count > MAX_CELLS:
        raise ConfigError(f"y: too many cells ({x.count}×{y.count} = {x.count * y.count}; at most {MAX_CELLS} "
                          "per schedule)")
    schedules = tuple(dict.fromkeys(s.strip() for s in kv.get("schedules", ",".join(SCHEDULES)).split(",")
                                    if s.strip()))
    if not schedules:
        raise ConfigError("schedules: give at least one schedule (e.g. schedules=constant,turn_off,none)")
    for s in schedules:
        if s not in SCHEDULE_KINDS:
            raise ConfigError(f"schedules: unknown schedule {s!r} (known: {', '.join(SCHEDULE_KINDS)})")
    if "schedule" in kv or "schedule" in (x.key, y.key):
        raise ConfigError("schedule: phase runs one grid per schedule; use schedules=a,b,c")
    known = PHASE_METRICS.get(experiment)
    metrics = tuple(m.strip() for m in kv.get("metrics", ",".join(known or ())).split(",") if m.strip())
    metric = kv.get("metric", metrics[0] if metrics else "")
    if known is not None:
        for key, names in (("metric", (metric,)), ("metrics", metrics)):
            bad = [m for m in names if m not in known]
            if bad:
                raise ConfigError(f"{key}: unknown metric {bad[0]!r} (known: {', '.join(known)})")
    if not metric:
        raise ConfigError("metric: give the metric to compare schedules by (metric=NAME)")
    metrics = metrics or (metric,)
    try:
        margin = float(kv.get("margin", 0.01))
    except ValueError:
        raise ConfigError(f"margin: expected a number, got {kv['margin']!r}") from None
    threads = check_threads("threads", check_count("threads", kv.get("threads", 1)), zero_ok=False)
    if not 0 <= margin < 1:
        raise ConfigError(f"margin must be in [0, 1), got {margin:g}")
    device = kv.get("device")
    if device is not None:
        _check_device(device)
    base = build(mod.Config, {k: v for k, v in kv.items() if k not in OPTIONS}, allow_ignored=True)
    if "log_every" not in kv and hasattr(base, "log_every") and hasattr(base, "steps"):
        base = replace(base, log_every=base.steps)  # only final metrics are drawn: record at 0 and T
    spec = PhaseSpec(experiment, x, y, base, schedules, metric, metrics, margin, device, threads)
    for s in schedules:  # each schedule, at the grid's corners: every bad value is reported before running
        for xv in (x.values[0], x.values[-1]):
            for yv in (y.values[0], y.values[-1]):
                cell_config(spec, s, xv, yv)
    return spec


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device: unknown device {device!r} (cpu or cuda[:i])") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} was asked for but CUDA is not available here")


def cell_config(spec: PhaseSpec, schedule: str, xv: float, yv: float):
    """The config of one cell: the base with both axis values and the schedule (``none``: λ = 0)."""
    hints = typing.get_type_hints(type(spec.base))
    vals = {"schedule": schedule}
    for ax, v in ((spec.x, xv), (spec.y, yv)):
        vals[ax.key] = int(round(v)) if hints[ax.key] is int else float(v)
    if schedule == "none" and "wd" in hints:
        vals["wd"] = 0.0
    if spec.device is not None:
        if "device" not in hints:
            raise ConfigError(f"device: experiment {spec.experiment!r} has no device option")
        vals["device"] = spec.device
    try:
        return build(type(spec.base), {**config_dict(spec.base), **vals}, allow_ignored=True)
    except ConfigError as e:
        raise ConfigError(f"schedule {schedule} at {spec.x.key}={xv:g}, {spec.y.key}={yv:g}: {e}") from None


def run_grid(spec: PhaseSpec, mod, progress: Callable[[int], None] | None = None) -> tuple[dict, dict]:
    """All cells of every schedule; returns ``({schedule: {metric: (ny, nx) array}}, {schedule: (wall, cpu)})``.

    Each schedule's grid is one call of ``mod.run_many`` (one batched program per shared data); identical
    configs (``none`` along a λ axis) run once."""
    import torch

    from ..engine.batched import torch_threads
    from ..engine.progress import progress_or_bar

    xs, ys = spec.x.values, spec.y.values
    grids, seconds = {}, {}
    for s in spec.schedules:
        cells = [cell_config(spec, s, xv, yv) for yv in ys for xv in xs]
        ids = [run_id(config_dict(c)) for c in cells]
        unique: dict[str, int] = {}
        todo = []
        for rid, c in zip(ids, cells):
            if rid not in unique:
                unique[rid] = len(todo)
                todo.append(c)
        groups = len({(c.data_key(), getattr(c, "steps", 0)) for c in todo}) if hasattr(todo[0], "data_key") else 1
        t0, c0 = time.perf_counter(), time.process_time()
        with torch_threads(spec.threads), torch.no_grad(), \
                progress_or_bar(progress, getattr(spec.base, "steps", 1) * groups, f"phase: {s}") as bar:
            results = mod.run_many(todo, bar)
        summaries = [mod.summarize(c, r) for c, r in zip(todo, results)]
        seconds[s] = (time.perf_counter() - t0, time.process_time() - c0)
        missing = [m for m in spec.metrics + (spec.metric,) if m not in summaries[0]]
        if missing:
            raise ConfigError(f"metric: unknown metric {missing[0]!r} (known: "
                              f"{', '.join(k for k, v in summaries[0].items() if isinstance(v, (int, float)))})")
        order = [unique[rid] for rid in ids]
        grid = {}
        for m in dict.fromkeys(spec.metrics + (spec.metric, "status")):
            vals = [summaries[i].get(m) for i in order]
            if m == "status":
                grid[m] = np.array(vals, dtype=object).reshape(len(ys), len(xs))
            else:
                grid[m] = np.array([np.nan if v is None else float(v) for v in vals]).reshape(len(ys), len(xs))
        grids[s] = grid
    return grids, seconds


def turn_off_wins(grids: Mapping[str, Mapping[str, np.ndarray]], metric: str, margin: float) -> np.ndarray | None:
    """Cells where turn_off < (1 − margin)·min(constant, none) on ``metric`` (NaN — never reached or
    diverged — counts as worst). None unless all three schedules were run."""
    if not all(s in grids for s in SCHEDULES):
        return None

    def worst_nan(s):
        v = grids[s][metric]
        return np.where(np.isfinite(v), v, np.inf)

    t, c, n = worst_nan("turn_off"), worst_nan("constant"), worst_nan("none")
    return np.isfinite(t) & (t < (1.0 - margin) * np.minimum(c, n))


def plan_phase(experiment: str, tokens: Sequence[str], out: Path | str | None = None):
    """``mirrorflow phase`` up to running (and its ``--dry-run``): (module, validated :class:`PhaseSpec`, run
    directory). Nothing is created."""
    from . import load

    mod = load(experiment)
    experiment = experiment.replace("_", "-")
    spec = parse(experiment, tokens, mod)
    out = Path(out) if out is not None else Path("runs") / run_id(spec.as_dict(), prefix=f"phase-{experiment}")
    RunDir(out).check_out()
    return mod, spec, out


def run_phase(experiment: str, tokens: Sequence[str], out: Path | str | None = None, force: bool = False,
              progress: Callable[[int], None] | None = None) -> tuple[Path, dict]:
    """Parse, run every schedule's grid, write the run directory (summary.json last); returns (dir, summary)."""
    mod, spec, out = plan_phase(experiment, tokens, out)
    rd = RunDir(out)
    with writing(out):  # locked; a failed grid leaves nothing half-written behind
        if not force and rd.finished_with(spec.as_dict()):  # refuses a finished grid of another spec
            return out, rd.summary()
        rd.clear()
        grids, seconds = run_grid(spec, mod, progress)
        wins = turn_off_wins(grids, spec.metric, spec.margin)
        write_phase(rd, spec, grids, seconds, wins)
    return out, rd.summary()


def write_phase(rd: RunDir, spec: PhaseSpec, grids, seconds, wins) -> None:
    from ..report.figures import save_png
    from ..report.phase import phase_heatmaps, winner_map

    xs, ys = spec.x.values, spec.y.values
    rd.write_config(spec.as_dict())
    rows = []
    for s, grid in grids.items():
        for j, yv in enumerate(ys):
            for i, xv in enumerate(xs):
                row = {"schedule": s, spec.x.key: float(xv), spec.y.key: float(yv), "status": grid["status"][j, i]}
                row.update({m: float(grid[m][j, i]) for m in grid if m != "status"})
                row["turn_off_wins"] = bool(wins[j, i]) if wins is not None else ""
                rows.append(row)
    write_csv(rd.file("cells.csv"), rows)
    for m in spec.metrics:
        save_png(phase_heatmaps(
            xs, ys, {s: g[m] for s, g in grids.items()}, m, spec.x.key, spec.y.key, spec.x.log, spec.y.log, wins), rd.file(f"phase_{m}.png"))
    if wins is not None:
        save_png(winner_map(xs, ys, {s: g[spec.metric] for s, g in grids.items()},
                                                spec.metric, spec.x.key, spec.y.key, spec.x.log, spec.y.log, wins), rd.file("winner.png"))
    summary = {
        "experiment": spec.experiment,
        "cells_per_schedule": len(xs) * len(ys),
        "seconds": {s: round(v[0], 3) for s, v in seconds.items()},  # wall time per schedule
        "cpu_seconds": {s: round(v[1], 3) for s, v in seconds.items()},  # this process's CPU time
        "seconds_total": round(sum(v[0] for v in seconds.values()), 3),
        "device": spec.device or "cpu",
        "threads": spec.threads,
        "diverged": {s: int((g["status"] == "diverged").sum()) for s, g in grids.items()},
    }
    if wins is not None:
        summary["turn_off_wins_fraction"] = float(wins.mean())
        if wins.any():
            jj, ii = np.nonzero(wins)
            summary["turn_off_wins_box"] = {spec.x.key: [float(xs[ii.min()]), float(xs[ii.max()])],
                                            spec.y.key: [float(ys[jj.min()]), float(ys[jj.max()])]}
        for s in grids:
            v = grids[s][spec.metric]
            summary[f"best_{spec.metric}_{s}"] = float(np.nanmin(v)) if np.isfinite(v).any() else None
    rd.finish(summary)


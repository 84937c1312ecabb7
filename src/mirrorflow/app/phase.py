"""Phase diagrams: a 2-D grid of configurations per weight-decay schedule, run as batched tensor programs.

The paper's claim (Sec. 3–5; docs/theory.md#stored) is that weight decay switched off part-way ("turned
off") reaches solutions that neither constant weight decay (it trades fit for norm) nor no weight decay
(wrong geometry) reaches. A phase diagram maps where that holds — and *when* to switch — over two keys of
any experiment with a batched engine (matrix sensing, diagonal networks, sparse coding):

    mirrorflow phase matrix-sensing x=wd:1e-3:1:32:log y=init_scale:1e-3:1e-1:32:log metric=rec_error \\
        n=20 steps=2000 --out runs/phase-ms
    mirrorflow phase diagonal x=off:0.05:0.95:16 y=wd:0.01:1:16:log seeds=0,1,2 model=mw --out runs/phase-dn

Tokens:

* ``x=KEY:LO:HI:COUNT[:log|lin]`` and ``y=...`` — the two axes (``lin`` default). KEY is any numeric config
  field of the experiment, a row key of its program (:mod:`.phase_programs`: ``init_scale``; sparse coding
  ``k``), or one of the phase's own keys, the same on every experiment:
  ``wd`` (λ), ``lr`` (η; sparse coding: ``lr_scale``) and ``off`` — the switch point as a *fraction of the
  run* in [0, 1] (the λ table switches at step round(off·T));
* ``wd=``, ``lr=``, ``off=`` — their values where they are not an axis (defaults: the experiment's config);
* ``seeds=0,1,2`` — every cell runs once per seed (matrix sensing, diagonal networks: a seed draws the data,
  one batched program per seed; sparse coding: per-row seeds in one program); a cell reports the mean and
  the half-width of the 95 % t-interval over the seeds;
* ``schedules=constant,turn_off,none[,auto]`` — one grid per schedule (``none`` ignores λ and ``off``,
  ``constant`` ignores ``off``: their cells run once per distinct configuration); ``auto`` is
  ``training.AutoTurnOff`` run in the same batch: λ until its signal fires (default with an ``off`` axis);
* ``auto=plateau[:SIGNAL[:TOL[:WINDOW]]]`` or ``auto=threshold:SIGNAL:LEVEL`` — its rule (default
  ``plateau:<the program's signal>:0.01:5``), observed every ``auto_every`` steps (default T/100);
* ``metric=NAME`` — the metric (lower is better) that decides the winner of a cell and whether "turned
  off beats both": turn_off < (1 − ``margin``)·min(constant, none), ``margin=0.01`` by default;
* ``metrics=a,b,c`` — the heatmaps to draw (default: the program's ``metrics``);
* ``theory=N`` — cells (an even sub-grid, first seed) where Theorem 3.11's predicted limit
  (``geometry.predict_limit``) is compared with the trained point (default 64 where the family has one);
* ``facet=KEY:V1,V2,...`` — a third key: one complete phase run per value in ``DIR/KEY=V``;
* ``device=cpu|cuda`` — where the batched programs run; ``threads=N`` torch threads on the CPU (default 1);
* every other ``key=value`` is a base config override (``n=20 steps=2000``); only final metrics are kept.

All rows (cells × schedules × seeds) that share data run as ONE batched program. Output (run store):
``config.yaml``, ``cells.csv`` (one row per cell and schedule: mean, interval, winner and margin),
``groups/`` (each finished program's rows: a killed run resumes from them), the figures of
:mod:`mirrorflow.report.phase`, and ``summary.json`` last (wall time, runs per second, the win fraction,
the winning box, the automatic switch-off against the best fixed switch).
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import build, check_count, check_threads, config_dict, parse_overrides, parse_seeds, split_list
from ..errors import ConfigError
from ..experiments import canonical, load
from ..schedules import SCHEDULE_KINDS, from_spec
from ..store import RunDir, read_summary, run_id, write_csv, write_json, writing
from .phase_programs import PROGRAMS, PhaseProgram

MAX_CELLS = 65536  # per schedule (x count × y count)
SCHEDULES = ("constant", "turn_off", "none")
PHASE_KEYS = ("wd", "lr", "off")  # the phase's own keys: λ, η, the switch point as a fraction of the run
OPTIONS = (
    "x",
    "y",
    "schedules",
    "metric",
    "metrics",
    "margin",
    "device",
    "threads",
    "seeds",
    "auto",
    "auto_every",
    "theory",
) + PHASE_KEYS
THEORY_CELLS = 64  # default number of cells (an even sub-grid, first seed) checked against Theorem 3.11
AUTO = "auto"


@dataclass(frozen=True)
class Axis:
    """One grid axis: ``count`` values of key ``key`` from ``lo`` to ``hi`` (log or linear spacing)."""

    key: str
    lo: float
    hi: float
    count: int
    log: bool
    integer: bool = False

    @property
    def values(self) -> np.ndarray:
        v = np.geomspace(self.lo, self.hi, self.count) if self.log else np.linspace(self.lo, self.hi, self.count)
        return np.round(v) if self.integer else np.array([float(f"{x:.12g}") for x in v])  # 0.275, not 0.27499…

    def spec(self) -> str:
        return f"{self.key}:{self.lo:g}:{self.hi:g}:{self.count}:{'log' if self.log else 'lin'}"


def parse_axis(name: str, text: str, keys: Mapping[str, type]) -> Axis:
    """``KEY:LO:HI:COUNT[:log|lin]`` → :class:`Axis` over one of ``keys`` (name → int/float); a bad part
    raises ConfigError naming ``name``."""
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise ConfigError(f"{name}: expected KEY:LO:HI:COUNT[:log|lin], got {text!r}")
    key = parts[0].strip().replace("-", "_")
    if key not in keys:
        raise ConfigError(f"{name}: unknown axis key {key!r} (numeric keys: {', '.join(sorted(keys))})")
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
    if (key == "lr" and lo <= 0) or (key == "wd" and lo < 0):
        raise ConfigError(
            f"{name}: {key} must be {'> 0' if key == 'lr' else '≥ 0'} over the whole axis, got LO={parts[1]}"
        )
    if key == "off" and not (lo >= 0 and hi <= 1):
        raise ConfigError(
            f"{name}: off is the switch point as a fraction of the run, in [0, 1]; got {parts[1]}..{parts[2]}"
        )
    return Axis(key, lo, hi, int(count), scale == "log", keys[key] is int)


@dataclass(frozen=True)
class AutoRule:
    """The automatic switch-off (``training.AutoTurnOff``): ``mode`` on ``signal`` with its parameters."""

    mode: str
    signal: str
    tol: float = 0.01
    window: int = 5
    threshold: float | None = None

    def spec(self) -> str:
        if self.mode == "threshold":
            return f"threshold:{self.signal}:{self.threshold:g}"
        return f"plateau:{self.signal}:{self.tol:g}:{self.window}"

    def make(self, value: float):
        from ..training.auto_off import AutoTurnOff

        return AutoTurnOff(
            value, signal=self.signal, mode=self.mode, tol=self.tol, window=self.window, threshold=self.threshold
        )


def parse_auto(text: str | None, signal: str, signals: Sequence[str]) -> AutoRule:
    """``plateau[:SIGNAL[:TOL[:WINDOW]]]`` or ``threshold:SIGNAL:LEVEL`` → :class:`AutoRule` (ConfigError
    naming ``auto``)."""
    parts = [p.strip() for p in (text or "plateau").split(":")]
    mode = parts[0]
    if mode not in ("plateau", "threshold"):
        raise ConfigError(f"auto: expected plateau[:SIGNAL[:TOL[:WINDOW]]] or threshold:SIGNAL:LEVEL, got {text!r}")
    sig = parts[1] if len(parts) > 1 and parts[1] else signal
    if sig not in signals:
        raise ConfigError(f"auto: unknown signal {sig!r} (known: {', '.join(signals)})")
    try:
        if mode == "threshold":
            if len(parts) != 3:
                raise ConfigError(f"auto: threshold needs threshold:SIGNAL:LEVEL, got {text!r}")
            rule = AutoRule(mode, sig, threshold=float(parts[2]))
        else:
            if len(parts) > 4:
                raise ConfigError(f"auto: expected plateau[:SIGNAL[:TOL[:WINDOW]]], got {text!r}")
            tol = float(parts[2]) if len(parts) > 2 else 0.01
            window = float(parts[3]) if len(parts) > 3 else 5
            if window != int(window):
                raise ValueError
            rule = AutoRule(mode, sig, tol, int(window))
        rule.make(1.0)  # AutoTurnOff's own checks (tol ≥ 0, window ≥ 1, finite threshold)
    except ValueError as e:
        raise ConfigError(
            f"auto: {e}" if str(e) else f"auto: TOL, WINDOW and LEVEL must be numbers, got {text!r}"
        ) from None
    return rule


@dataclass
class PhaseSpec:
    experiment: str
    x: Axis
    y: Axis
    base: Any  # the experiment's Config
    schedules: tuple[str, ...]
    metric: str
    metrics: tuple[str, ...]
    margin: float
    device: str | None
    threads: int
    seeds: tuple[int, ...]
    fixed: dict[str, float]  # the phase keys (wd, lr, off) that are not an axis
    auto: AutoRule | None = None
    auto_every: int = 0
    theory: int = 0  # cells checked against Theorem 3.11 (0: none)

    @property
    def program(self) -> PhaseProgram:
        return PROGRAMS[self.experiment]

    def as_dict(self) -> dict:
        d = {
            "experiment": self.experiment,
            "x": self.x.spec(),
            "y": self.y.spec(),
            "schedules": list(self.schedules),
            "metric": self.metric,
            "metrics": list(self.metrics),
            "margin": self.margin,
            "seeds": list(self.seeds),
            **self.fixed,
        }
        if self.auto is not None:
            d.update(auto=self.auto.spec(), auto_every=self.auto_every)
        if self.theory:
            d["theory"] = self.theory
        return {**d, "base": config_dict(self.base)}


def _fields(cfg) -> set[str]:
    """The field names of a config dataclass."""
    return {f.name for f in dataclasses.fields(cfg)}


def _numeric_keys(config_cls, program: PhaseProgram, base) -> dict[str, type]:
    hints = typing.get_type_hints(config_cls)
    keys = {f.name: hints[f.name] for f in dataclasses.fields(config_cls) if hints[f.name] in (int, float)}
    keys.pop("seed", None)  # seeds are the phase's seeds= list
    keys.update({k: type(v) for k, v in program.row_keys(base).items() if k != "seed"})
    keys.update({k: float for k in PHASE_KEYS})
    return keys


def parse(experiment: str, tokens: Sequence[str], mod) -> PhaseSpec:
    """Tokens of ``mirrorflow phase`` → :class:`PhaseSpec` (validated; ConfigError names the bad key)."""
    return parse_spec(experiment, parse_overrides(tokens), mod)


def parse_spec(experiment: str, kv: Mapping[str, str], mod) -> PhaseSpec:
    """:func:`parse` of the ``key=value`` pairs that :func:`mirrorflow.config.parse_overrides` read."""
    for need in ("x", "y"):
        if need not in kv:
            raise ConfigError(f"{need}: missing axis (give {need}=KEY:LO:HI:COUNT[:log|lin])")
    if experiment not in PROGRAMS:
        raise ConfigError(
            f"experiment {experiment!r} has no batched engine for phase diagrams (phase runs: {', '.join(PROGRAMS)})"
        )
    program = PROGRAMS[experiment]
    base = build(mod.Config, {k: v for k, v in kv.items() if k not in OPTIONS}, allow_ignored=True)
    keys = _numeric_keys(mod.Config, program, base)
    x, y = parse_axis("x", kv["x"], keys), parse_axis("y", kv["y"], keys)
    if x.key == y.key:
        raise ConfigError(f"y: both axes vary {x.key!r}")
    if x.count * y.count > MAX_CELLS:
        raise ConfigError(
            f"y: too many cells ({x.count}×{y.count} = {x.count * y.count}; at most {MAX_CELLS} per schedule)"
        )
    switch_axis = "off" in (x.key, y.key)
    default = ",".join(SCHEDULES + ((AUTO,) if switch_axis else ()))
    schedules = tuple(dict.fromkeys(split_list(kv.get("schedules", default), "schedules")))
    if not schedules:
        raise ConfigError("schedules: give at least one schedule (e.g. schedules=constant,turn_off,none)")
    for s in schedules:
        if s not in SCHEDULE_KINDS + (AUTO,):
            raise ConfigError(f"schedules: unknown schedule {s!r} (known: {', '.join(SCHEDULE_KINDS + (AUTO,))})")
    if "schedule" in kv:
        raise ConfigError("schedule: phase runs one grid per schedule; use schedules=a,b,c")
    metrics = tuple(split_list(kv.get("metrics", ",".join(program.metrics)), "metrics"))
    metric = kv.get("metric", program.compare)
    for key, names, known in (("metric", (metric,), program.lower_better), ("metrics", metrics, program.metrics)):
        bad = [m for m in names if m not in known]
        if bad:
            what = "metric to compare by (lower is better)" if key == "metric" else "metric"
            raise ConfigError(f"{key}: unknown {what} {bad[0]!r} (known: {', '.join(known)})")
    if not metrics:
        raise ConfigError("metrics: name at least one metric (known: " + ", ".join(program.metrics) + ")")
    try:
        margin = float(kv.get("margin", 0.01))
    except ValueError:
        raise ConfigError(f"margin: expected a number, got {kv['margin']!r}") from None
    threads = check_threads("threads", check_count("threads", kv.get("threads", 1)), zero_ok=False)
    if not 0 <= margin < 1:
        raise ConfigError(f"margin must be in [0, 1), got {margin:g}")
    device = kv.get("device")
    if device is not None:
        from ..runtime import resolve_device

        resolve_device(device)
        if "device" not in _fields(base):
            raise ConfigError(f"device: experiment {experiment!r} has no device option")
        base = dataclasses.replace(base, device=device)
    seeds = (
        parse_seeds(kv["seeds"])
        if "seeds" in kv
        else ((int(program.row_keys(base)["seed"]),) if "seed" in program.row_keys(base) else (int(base.seed),))
    )
    fixed = {}
    defaults = {"wd": program.wd(base), "lr": program.lr(base), "off": program.switch(base)}
    for k in PHASE_KEYS:
        if k in (x.key, y.key):
            if k in kv:
                raise ConfigError(f"{k}: {k} is an axis; drop {k}={kv[k]}")
            continue
        try:
            fixed[k] = float(kv[k]) if k in kv else float(defaults[k])
        except ValueError:
            raise ConfigError(f"{k}: expected a number, got {kv[k]!r}") from None
        v = fixed[k]
        if k == "off" and not 0 <= v <= 1:
            raise ConfigError(
                f"off: the switch point is a fraction of the run in [0, 1] on every experiment, "
                f"got {v:g} (a step? give off={v:g}/steps)"
            )
        if not math.isfinite(v) or v < 0 or (k == "lr" and v == 0):
            raise ConfigError(f"{k}: expected a finite number {'> 0' if k == 'lr' else '≥ 0'}, got {v:g}")
    auto = None
    auto_every = 0
    if AUTO in schedules or "auto" in kv:
        if AUTO not in schedules:
            schedules += (AUTO,)
        auto = parse_auto(kv.get("auto"), program.signal, program.metrics)
        try:
            auto_every = int(kv.get("auto_every", 0))
        except ValueError:
            raise ConfigError(f"auto_every: expected a number of steps, got {kv['auto_every']!r}") from None
        if auto_every < 0:
            raise ConfigError(f"auto_every must be a positive number of steps, got {auto_every}")
        auto_every = auto_every or max(1, program.horizon(base) // 100)
    try:
        theory = int(kv.get("theory", THEORY_CELLS if program.theory_note(base) is None else 0))
    except ValueError:
        raise ConfigError(f"theory: expected a number of cells to check (0: none), got {kv['theory']!r}") from None
    if theory < 0:
        raise ConfigError(f"theory must be a number of cells ≥ 0, got {theory}")
    if theory and program.theory_note(base) is not None:
        raise ConfigError(f"theory: {program.theory_note(base)}")
    spec = PhaseSpec(
        experiment,
        x,
        y,
        base,
        schedules,
        metric,
        metrics,
        margin,
        device,
        threads,
        seeds,
        fixed,
        auto,
        auto_every,
        theory,
    )
    for xv in (x.values[0], x.values[-1]):  # every bad value is reported before running
        for yv in (y.values[0], y.values[-1]):
            for s in schedules:
                _lam_schedule(spec, s, {**fixed, x.key: xv, y.key: yv}, cell_group(spec, {x.key: xv, y.key: yv}))
    return spec


def cell_group(spec: PhaseSpec, values: Mapping[str, float], seed: int | None = None):
    """The config of the group a cell's rows run in: the base with the axis values that are config fields
    (not row keys, not phase keys) and the seed where the seed draws the data."""
    rows = spec.program.row_keys(spec.base)
    hints = typing.get_type_hints(type(spec.base))
    vals = {
        k: (int(round(v)) if hints[k] is int else float(v))
        for k, v in values.items()
        if k not in rows and k not in PHASE_KEYS
    }
    if seed is not None and "seed" not in rows:
        vals["seed"] = seed
    if not vals:
        return spec.base
    try:
        return build(type(spec.base), {**config_dict(spec.base), **vals}, allow_ignored=True)
    except ConfigError as e:
        where = ", ".join(f"{k}={v:g}" for k, v in values.items())
        raise ConfigError(f"at {where}: {e}") from None


def _lam_schedule(spec: PhaseSpec, schedule: str, values: Mapping[str, float], cfg):
    """λ_t of one row: ``schedule`` at strength ``wd``, switched off at step round(off·T) (``auto``: λ ≡ wd
    until AutoTurnOff fires); ConfigError naming the cell."""
    T = spec.program.horizon(cfg)
    kind = "constant" if schedule == AUTO else schedule
    try:
        return from_spec(kind, float(values["wd"]), int(round(float(values["off"]) * T)), T)
    except ValueError as e:
        where = ", ".join(f"{k}={values[k]:g}" for k in (spec.x.key, spec.y.key))
        raise ConfigError(f"schedule {schedule} at {where}: {e}") from None


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

    from ..engine.batched import schedule_table
    from ..runtime import torch_threads

    prog = spec.program
    T = prog.horizon(g.cfg)
    lam = schedule_table([_lam_schedule(spec, s, v, g.cfg) for s, v in zip(g.schedules, g.values)], T)
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
    from ..runtime import resolve_dtype

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
    from ..engine.progress import progress_or_bar

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


# --------------------------------------------------------------------------------------- cells
def assemble(spec: PhaseSpec, groups, results, index) -> dict[str, dict[str, np.ndarray]]:
    """``{schedule: {metric: (ny, nx) mean over seeds, metric + "_half": 95 % t-interval half-width,
    "diverged": seeds that diverged, "auto_off": the automatic switch point (a fraction of the run, mean
    over the seeds where it fired), "auto_fired": in how many seeds it fired}}``."""
    from ..report.stats import t_interval_columns

    ny, nx, S = spec.y.count, spec.x.count, len(spec.seeds)
    names = list(dict.fromkeys(spec.metrics + (spec.metric,)))
    picked = theory_cells(spec)
    grids = {}
    for s in spec.schedules:
        raw = {m: np.full((S, ny, nx), np.nan) for m in names + ["auto_off"]}
        div = np.zeros((ny, nx), dtype=int)
        theory = np.full((ny, nx), "", dtype=object)
        gap = np.full((ny, nx), np.nan)
        for k, seed in enumerate(spec.seeds):
            for j in range(ny):
                for i in range(nx):
                    gi, r = index[(s, seed, j, i)]
                    row = results[gi][r]
                    for m in names:
                        raw[m][k, j, i] = np.nan if row[m] is None else row[m]  # JSON stores NaN as null
                    if row.get("auto_off") is not None:
                        raw["auto_off"][k, j, i] = row["auto_off"] / spec.program.horizon(groups[gi].cfg)
                    div[j, i] += row["status"] == "diverged"
                    if k == 0 and (j, i) in picked and row.get("theory"):  # one row may fill many cells
                        theory[j, i] = row["theory"]
                        gap[j, i] = np.nan if row.get("theory_gap") is None else row["theory_gap"]
        grid = {"diverged": div, "theory": theory, "theory_gap": gap}
        for m in names:
            mean, half, _ = t_interval_columns(raw[m].reshape(S, -1))
            grid[m], grid[m + "_half"] = mean.reshape(ny, nx), half.reshape(ny, nx)
        if s == AUTO:
            fired = np.isfinite(raw["auto_off"])
            grid["auto_off"] = np.where(
                fired.any(0), np.where(fired, raw["auto_off"], 0).sum(0) / np.maximum(fired.sum(0), 1), np.nan
            )  # mean over the seeds where it fired
            grid["auto_fired"] = np.isfinite(raw["auto_off"]).sum(axis=0)
        grids[s] = grid
    return grids


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


def winners(grids: Mapping[str, Mapping[str, np.ndarray]], metric: str, margin: float):
    """Per cell: the index (into ``grids``) of the schedule with the lowest mean ``metric`` (−1 where none is
    finite), its relative margin (runner-up − best)/|runner-up| (inf without a finite runner-up), and whether
    it is clear: margin ≥ ``margin`` and, with seeds, its 95 % interval below the runner-up's."""
    names = list(grids)
    mean = np.stack([np.where(np.isfinite(grids[s][metric]), grids[s][metric], np.inf) for s in names])
    half = np.stack([np.nan_to_num(grids[s][metric + "_half"], nan=0.0) for s in names])
    order = np.argsort(mean, axis=0, kind="stable")
    best = np.take_along_axis(mean, order[:1], 0)[0]
    if len(names) > 1:
        second = np.take_along_axis(mean, order[1:2], 0)[0]
    else:
        second = np.full_like(best, np.inf)
    with np.errstate(all="ignore"):
        rel = np.where(np.isfinite(second), (second - best) / np.abs(second), np.inf)
    hb = np.take_along_axis(half, order[:1], 0)[0]
    hs = np.take_along_axis(half, order[1:2], 0)[0] if len(names) > 1 else np.zeros_like(hb)
    clear = (rel >= margin) & (best + hb < second - hs)
    win = np.where(np.isfinite(best), order[0], -1)
    return win, np.where(np.isfinite(best), rel, np.nan), clear & np.isfinite(best)


NEAR_BEST = 2.0  # a fixed switch is "near the best" when its metric is within this factor of the best one


def best_switch(spec: PhaseSpec, grids) -> list[dict] | None:
    """On a switch-time map (``off`` an axis, ``turn_off`` run): per value of the other axis, the best fixed
    switch (fraction, metric), how flat the optimum is (``near_best``: the range of switch points whose
    metric is within ``NEAR_BEST``× of the best), and with ``auto`` where the automatic switch-off landed
    (fraction, seeds where it fired, metric). None otherwise."""
    if "off" not in (spec.x.key, spec.y.key) or "turn_off" not in grids:
        return None
    along_x = spec.x.key == "off"
    offs, other = (spec.x, spec.y) if along_x else (spec.y, spec.x)
    orient = (lambda a: a) if along_x else (lambda a: a.T)  # noqa: E731
    fixed = orient(grids["turn_off"][spec.metric])
    out = []
    for j, v in enumerate(other.values):
        row = np.where(np.isfinite(fixed[j]), fixed[j], np.inf)
        b = int(np.argmin(row))
        ok = np.isfinite(row[b])
        near = offs.values[row <= NEAR_BEST * row[b]] if ok else []
        r = {
            other.key: float(v),
            "best_off": float(offs.values[b]) if ok else None,
            f"best_{spec.metric}": float(row[b]) if ok else None,
            "near_best": [float(min(near)), float(max(near))] if ok else None,
        }
        if AUTO in grids:
            frac, fired = orient(grids[AUTO]["auto_off"])[j, 0], orient(grids[AUTO]["auto_fired"])[j, 0]
            val = orient(grids[AUTO][spec.metric])[j, 0]
            r.update(
                {
                    "auto_off": float(frac) if np.isfinite(frac) else None,
                    "auto_fired": f"{int(fired)}/{len(spec.seeds)}",
                    f"auto_{spec.metric}": float(val) if np.isfinite(val) else None,
                }
            )
        out.append(r)
    return out


# ------------------------------------------------------------------------------------- running
def plan_phase(experiment: str, tokens: Sequence[str], out: Path | str | None = None, check_out: bool = True):
    """``mirrorflow phase`` up to running (and its ``--dry-run``): (module, validated :class:`PhaseSpec`, run
    directory). Nothing is created."""
    return _plan_phase(experiment, parse_overrides(tokens), out, check_out)


def _plan_phase(experiment: str, kv: Mapping[str, str], out: Path | str | None = None, check_out: bool = True):
    mod = load(experiment)
    experiment = canonical(experiment)
    spec = parse_spec(experiment, kv, mod)
    out = Path(out) if out is not None else Path("runs") / run_id(spec.as_dict(), prefix=f"phase-{experiment}")
    if check_out:
        RunDir(out).check_out()
    return mod, spec, out


def open_run_dir(out: Path, config: Mapping, force: bool) -> tuple[RunDir, dict[str, list[dict]] | None]:
    """The run directory of a phase (or of a faceted phase) with ``config``: (directory, finished groups to
    resume from), or (directory, None) when it already holds the finished run of this config (nothing to
    run). ``force`` starts over."""
    from ..store import read_config

    rd = RunDir(out)
    rd.check_out()
    if force:
        rd.clear()
        for p in rd.file("groups").glob("*.json"):
            p.unlink()
        return rd, {}
    if rd.finished_with(config):
        return rd, None
    done = {}
    same = rd.file("config.yaml").is_file() and read_config(rd.file("config.yaml")) == config
    for p in sorted(rd.file("groups").glob("*.json")):
        if same:
            done[p.stem] = read_summary(p)["rows"]
        else:
            p.unlink()  # programs of another config (e.g. another auto rule) must not be resumed later
    return rd, done


def split_facet(kv: Mapping[str, str]) -> tuple[str | None, tuple[float, ...], dict[str, str]]:
    """``facet=KEY:V1,V2,...`` among the ``key=value`` pairs ``kv`` → (KEY, values, the other pairs);
    (None, (), kv) without a facet."""
    if "facet" not in kv:
        return None, (), dict(kv)
    key, _, raw = kv["facet"].partition(":")
    key = key.strip().replace("-", "_")
    try:
        values = tuple(dict.fromkeys(float(v) for v in split_list(raw, "facet")))
    except ValueError:
        raise ConfigError(f"facet: expected KEY:V1,V2,... (numbers), got {kv['facet']!r}") from None
    if not key or not values:
        raise ConfigError(f"facet: expected KEY:V1,V2,... (numbers), got {kv['facet']!r}")
    for axis in ("x", "y"):
        if kv.get(axis, "").split(":")[0].strip().replace("-", "_") == key:
            raise ConfigError(f"facet: {key} is already the {axis} axis")
    if key in kv:
        raise ConfigError(f"facet: {key} is the facet; drop {key}={kv[key]}")
    rest = {k: v for k, v in kv.items() if k != "facet"}
    return key, values, rest


def is_faceted(tokens: Sequence[str]) -> bool:
    """Whether the tokens of ``mirrorflow phase`` give a ``facet=`` (one phase run per facet value)."""
    return "facet" in parse_overrides(tokens)


def plan_facets(experiment: str, tokens: Sequence[str], out: Path | str | None = None):
    """A faceted phase (``facet=KEY:V1,V2``): (KEY, [(value, spec, sub-directory)], directory); each facet is
    a complete phase run with ``KEY=value`` in ``directory/KEY=value``. Nothing is created."""
    return _plan_facets(experiment, parse_overrides(tokens), out)


def _plan_facets(experiment: str, kv: Mapping[str, str], out: Path | str | None = None):
    key, values, rest = split_facet(kv)
    specs = []
    for v in values:
        _, spec, _ = _plan_phase(experiment, {**rest, key: f"{v:g}"}, ".", check_out=False)
        specs.append((v, spec))
    if out is None:
        out = Path("runs") / run_id(
            {"facet": key, "specs": [s.as_dict() for _, s in specs]}, prefix=f"phase-{canonical(experiment)}"
        )
    return key, [(v, spec, Path(out) / f"{key}={v:g}") for v, spec in specs], Path(out)


def run_phase(
    experiment: str,
    tokens: Sequence[str],
    out: Path | str | None = None,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[Path, dict]:
    """Parse, run every group (resuming from finished ones), write the run directory (summary.json last);
    returns (dir, summary). With ``facet=KEY:V1,V2`` one phase per value, then the facets' summary."""
    return _run_phase(experiment, parse_overrides(tokens), out, force, progress)


def _run_phase(experiment: str, kv: Mapping[str, str], out: Path | str | None, force: bool, progress):
    if "facet" in kv:
        return _run_facets(experiment, kv, out, force, progress)
    _, spec, out = _plan_phase(experiment, kv, out)
    # locked; a failed or interrupted phase keeps its finished programs (groups/, resumed next time) and its
    # config, and removes everything else it added
    with writing(out, keep=lambda p: p.name in ("groups", "config.yaml")):
        rd, done = open_run_dir(Path(out), spec.as_dict(), force)
        if done is None:
            return out, rd.summary()
        rd.write_config(spec.as_dict())
        groups, index = plan_rows(spec)
        results, wall, cpu = run_grid(
            spec, groups, done, lambda g, rows: write_json(rd.file(f"groups/{g.gid}.json"), {"rows": rows}), progress
        )
        grids = assemble(spec, groups, results, index)
        write_phase(rd, spec, grids, groups, wall, cpu, resumed=sum(g.gid in done for g in groups))
    return out, rd.summary()


def write_phase(rd: RunDir, spec: PhaseSpec, grids, groups, wall: float, cpu: float, resumed: int = 0) -> None:
    """cells.csv, the figures (:func:`mirrorflow.report.phase.draw`), summary.json last."""
    from ..report.phase import draw

    xs, ys = spec.x.values, spec.y.values
    wins = turn_off_wins(grids, spec.metric, spec.margin)
    win, rel, clear = winners(grids, spec.metric, spec.margin)
    names = list(grids)
    rows = []
    for s, grid in grids.items():
        for j, yv in enumerate(ys):
            for i, xv in enumerate(xs):
                row = {
                    "schedule": s,
                    spec.x.key: float(xv),
                    spec.y.key: float(yv),
                    "diverged_seeds": int(grid["diverged"][j, i]),
                }
                for m in dict.fromkeys(spec.metrics + (spec.metric,)):
                    row[m] = float(grid[m][j, i])
                    row[m + "_half"] = float(grid[m + "_half"][j, i])
                if s == AUTO:
                    row["auto_off"] = float(grid["auto_off"][j, i])
                    row["auto_fired"] = int(grid["auto_fired"][j, i])
                if spec.theory:
                    row["theory"] = grid["theory"][j, i]
                    row["theory_gap"] = float(grid["theory_gap"][j, i])
                row["winner"] = names[win[j, i]] if win[j, i] >= 0 else ""
                row["margin"] = float(rel[j, i])
                row["clear"] = bool(clear[j, i])
                row["turn_off_wins"] = bool(wins[j, i]) if wins is not None else ""
                rows.append(row)
    write_csv(rd.file("cells.csv"), rows, list(dict.fromkeys(k for r in rows for k in r)))
    n_rows = sum(len(g.rows) for g in groups)
    row_steps = sum(len(g.rows) * spec.program.horizon(g.cfg) for g in groups)
    summary = {
        "experiment": spec.experiment,
        "title": f"{spec.program.title}: {spec.program.describe(spec.base)}",
        "axes": {
            a: {"key": ax.key, "values": [float(v) for v in ax.values], "log": ax.log}
            for a, ax in (("x", spec.x), ("y", spec.y))
        },
        "fixed": spec.fixed,
        "labels": dict(spec.program.labels),
        "symbols": dict(spec.program.symbols),
        "metric": spec.metric,
        "metrics": list(spec.metrics),
        "lower_better": [m for m in spec.metrics if m in spec.program.lower_better],
        "references": {m: v for m, v in spec.program.references.items() if m in spec.metrics},
        "margin": spec.margin,
        "schedules": list(spec.schedules),
        "seeds": list(spec.seeds),
        "cells_per_schedule": len(xs) * len(ys),
        "rows": n_rows,  # distinct runs (cells × schedules × seeds, identical ones once)
        "groups": len(groups),
        "groups_resumed": resumed,
        "seconds_total": round(wall, 3),  # wall time of the programs run now (not the resumed ones)
        "cpu_seconds": round(cpu, 3),
        "row_steps_per_second": round(row_steps / wall, 1) if wall > 0 and not resumed else None,
        "row_steps_per_cpu_second": round(row_steps / cpu, 1) if cpu > 0 and not resumed else None,
        "device": spec.device or config_dict(spec.base).get("device", "cpu"),
        "threads": spec.threads,
        "diverged": {s: int((g["diverged"] > 0).sum()) for s, g in grids.items()},
        "winner_fraction": {s: float((win == k).mean()) for k, s in enumerate(names)},
        "clear_fraction": float(clear.mean()),
    }
    if spec.auto is not None:
        summary["auto"] = spec.auto.spec()
    note = spec.program.theory_note(spec.base)
    if note is not None:
        summary["theory"] = note
    elif spec.theory:
        summary["theory"] = {
            s: {k: int((g["theory"] == k).sum()) for k in sorted(set(g["theory"].ravel()) - {""})}
            for s, g in grids.items()
            if (g["theory"] != "").any()
        }
    if wins is not None:
        summary["turn_off_wins_fraction"] = float(wins.mean())
        if wins.any():
            jj, ii = np.nonzero(wins)
            summary["turn_off_wins_box"] = {
                spec.x.key: [float(xs[ii.min()]), float(xs[ii.max()])],
                spec.y.key: [float(ys[jj.min()]), float(ys[jj.max()])],
            }
    for s in grids:
        v = grids[s][spec.metric]
        summary[f"best_{spec.metric}_{s}"] = float(np.nanmin(v)) if np.isfinite(v).any() else None
    switch = best_switch(spec, grids)
    if switch is not None:
        summary["best_switch"] = switch
    draw(rd.path, summary, rows)
    rd.finish(summary)


def _run_facets(experiment: str, kv: Mapping[str, str], out: Path | str | None, force: bool, progress):
    """One phase run per facet value (each resumable on its own), then ``winner_facets.png`` and
    ``summary.json`` (per facet: the win fraction, the winners, the title) in the top directory."""
    from ..report.figures import save_png
    from ..report.phase import facet_winners, title_of
    from ..store import read_csv

    key, facets, out = _plan_facets(experiment, kv, out)
    RunDir(out).check_out()
    config = {
        "experiment": canonical(experiment),
        "facet": key,
        "values": [v for v, _, _ in facets],
        "runs": [sub.name for _, _, sub in facets],
    }
    # locked; the facets' own directories (each locked and cleaned by its run) and the config stay on failure
    with writing(out, keep=lambda p: p.is_dir() or p.name == "config.yaml"):
        rd, done = open_run_dir(out, config, force)
        if done is None:
            return out, rd.summary()
        rd.write_config(config)
        subs = {}
        for v, _spec, sub in facets:
            rest = {k: x for k, x in kv.items() if k != "facet"}
            _, subs[sub.name] = _run_phase(experiment, {**rest, key: f"{v:g}"}, sub, force, progress)
        panels = [(name, s, read_csv(out / name / "cells.csv")) for name, s in subs.items()]
        first = next(iter(subs.values()))
        unfaceted = {**first, "fixed": {k: v for k, v in first["fixed"].items() if k != key}}
        save_png(
            facet_winners(panels, title_of(unfaceted, f"Which schedule wins, as {key} changes?")),
            rd.file("winner_facets.png"),
        )
        keep = (
            "title",
            "turn_off_wins_fraction",
            "turn_off_wins_box",
            "winner_fraction",
            "clear_fraction",
            "seconds_total",
            "best_switch",
        )
        rd.finish(
            {
                "experiment": config["experiment"],
                "facet": key,
                "facet_values": config["values"],
                "metric": first["metric"],
                "facets": {name: {k: s[k] for k in keep if k in s} for name, s in subs.items()},
                "seconds_total": round(sum(s["seconds_total"] for s in subs.values()), 3),
            }
        )
    return out, rd.summary()

"""What ``mirrorflow phase`` runs, parsed and validated: the axes, the automatic switch-off rule, the
:class:`PhaseSpec`, and each cell's config and λ schedule (the tokens: :mod:`mirrorflow.app.phase`)."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...config import build, check_count, check_threads, config_dict, parse_overrides, parse_seeds, split_list
from ...errors import ConfigError
from ...schedules import SCHEDULE_KINDS, from_spec
from .programs import PROGRAMS, PhaseProgram

MAX_CELLS = 65536  # per schedule (x count × y count)
SCHEDULES = ("constant", "turn_off", "none")
PHASE_KEYS = ("wd", "lr", "off")  # the phase's own keys: λ, η, the switch point as a fraction of the run
SWITCH_FIELDS = ("off_at",)  # the configs' own switch point: a phase varies it through its axis off
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
        from ...training.auto_off import AutoTurnOff

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
    for name in ("x", "y"):
        if kv[name].split(":")[0].strip() in SWITCH_FIELDS:
            raise ConfigError(
                f"{name}: the switch point's axis is off (a fraction of the run, e.g. {name}=off:0.1:0.9:5), "
                f"not {kv[name].split(':')[0].strip()}"
            )
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
        from ...runtime import resolve_device

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
                lam_schedule(spec, s, {**fixed, x.key: xv, y.key: yv}, cell_group(spec, {x.key: xv, y.key: yv}))
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


def lam_schedule(spec: PhaseSpec, schedule: str, values: Mapping[str, float], cfg):
    """λ_t of one row: ``schedule`` at strength ``wd``, switched off at step round(off·T) (``auto``: λ ≡ wd
    until AutoTurnOff fires); ConfigError naming the cell."""
    T = spec.program.horizon(cfg)
    kind = "constant" if schedule == AUTO else schedule
    try:
        return from_spec(kind, float(values["wd"]), int(round(float(values["off"]) * T)), T)
    except ValueError as e:
        where = ", ".join(f"{k}={values[k]:g}" for k in (spec.x.key, spec.y.key))
        raise ConfigError(f"schedule {schedule} at {where}: {e}") from None

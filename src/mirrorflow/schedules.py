"""Regularization-strength schedules λ_t: pure functions of the step.

A schedule maps a step ``t`` (0, 1, 2, ...) to a weight-decay strength ``λ_t ≥ 0`` and knows its
accumulated strength

    integral(t) = Σ_{s<t} λ_s ,

so that, with a learning rate η, the accumulated regularization of the paper is
``a_t = -η · integral(t)`` (``a_t = -∫_0^t α_s ds`` in discrete form; docs/theory.md#notation).
The paper compares schedules at *equal total regularization* (App. C, Table 2): see
:func:`with_budget` and :func:`turn_off_for_budget`.

Style follows optax's schedules: one small constructor per schedule, formula in the docstring,
``ValueError`` naming the bad argument.

>>> s = turn_off(0.2, at=50)
>>> s(49), s(50), s.integral(100)
(0.2, 0.0, 10.0)
>>> round(with_budget(cosine_decay(1.0, until=500), budget=10.0, horizon=1000).integral(1000), 12)
10.0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Schedule",
    "constant",
    "turn_off",
    "linear_decay",
    "cosine_decay",
    "piecewise",
    "with_budget",
    "turn_off_for_budget",
    "from_spec",
    "switch_off_step",
    "TriggeredSchedule",
    "SCHEDULE_KINDS",
]


def as_number(name: str, value) -> int | float:
    """A user's number as a Python ``int`` or ``float``: NumPy and 0-d torch scalars behave exactly like
    Python numbers (``np.float32(0.5)`` is the float 0.5, a fraction; ``np.int64(50)`` is the step 50).
    ``bool``, ``None``, strings and arrays are refused with a ``ValueError`` naming ``name``.

    >>> as_number("at", np.float32(0.5)), as_number("at", np.int64(3))
    (0.5, 3)
    """
    if hasattr(value, "item") and not isinstance(value, (int, float)):  # NumPy / torch scalar
        if tuple(getattr(value, "shape", ())) != ():
            raise ValueError(f"{name} must be a number, got an array of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def as_count(name: str, value, minimum: int = 1) -> int:
    """A whole number ≥ ``minimum`` (a step count, a period): ``3``, ``3.0``, ``np.int64(3)`` are 3; a
    fractional value (``2.7``) is refused, never truncated (``ValueError`` naming ``name``).

    >>> as_count("horizon", 100.0)
    100
    """
    v = as_number(name, value)
    if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if int(v) < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer ≥ {minimum}")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(v)


def _finite_nonneg(name: str, value: float) -> float:
    v = float(as_number(name, value))
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if v < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return v


def is_fraction(at) -> bool:
    """True when ``at`` is a fraction of the horizon: a ``float`` in [0, 1] (NumPy/torch floats too)."""
    try:
        at = as_number("at", at)
    except ValueError:
        return False
    return isinstance(at, float) and 0.0 <= at <= 1.0


def resolve_step(name: str, at: float, horizon: int | None) -> float:
    """A point in training given as a step (int, or float ≥ 1) or as a fraction of ``horizon``.

    ``at`` of type ``float`` in [0, 1] is a fraction of the horizon (``1.0`` is the whole horizon); an
    ``int``, or a float above 1, is a step. Fractional steps are allowed: the schedule then applies the
    fractional part of λ on the last step so budgets are exact.
    """
    if at is None:
        raise ValueError(f"{name} must be a step or a fraction of the horizon, got {at!r}")
    at = as_number(name, at)
    v = _finite_nonneg(name, at)
    if horizon is not None:
        horizon = as_count("horizon", horizon)
    if is_fraction(at):
        if horizon is None:
            raise ValueError(f"{name}={at!r} is a fraction of the horizon, but no horizon was given")
        v = v * horizon
    if horizon is not None and v > horizon:
        raise ValueError(f"{name}={at!r} is beyond the horizon ({horizon} steps)")
    return v


def switch_off_step(key: str, at, steps: int, unit: str = "steps", end_ok: bool = False) -> int:
    """The step (or epoch) at which weight decay switches off in a run of ``steps``: the one way every
    experiment's config says *when* (Remark 3.9: λ_t = λ for t < t_off, then 0).

    ``at`` is a step ``1..steps-1`` (an int, or a whole float above 1) or a fraction of the run, a float in
    [0, 1] as in :func:`resolve_step` (``0.4`` of 60 steps is step 24, rounded to the nearest step; it must
    land on a step in ``1..steps-1``). With ``end_ok`` the point may be the end of the run (``steps``, or the
    fraction 1.0): the zero point of a linear or cosine decay over the whole run. Anything else is refused with
    one line naming ``key``, the key the user typed (``ValueError``; configs turn it into a ``ConfigError``).

    >>> switch_off_step("off_at", 0.4, 60), switch_off_step("off_at", 24, 60)
    (24, 24)
    """
    last = steps if end_ok else steps - 1
    try:
        v = as_number(key, at)
    except ValueError:
        v = None
    if isinstance(v, float) and 0.0 <= v <= 1.0:  # a fraction, as in resolve_step (1.0 is the whole run)
        step = int(round(v * steps))
        if not 1 <= step <= last:
            raise ValueError(f"{key}={at!r} is step {step} of {steps} {unit}: it must fall in 1..{last}")
        return step
    if v is not None and math.isfinite(v) and float(v).is_integer() and 1 <= v <= last:
        return int(v)
    shown = f"{v:g}" if v is not None and math.isfinite(v) else repr(at)
    fraction = "(0, 1]" if end_ok else "(0, 1)"
    raise ValueError(
        f"{key} must be a step in 1..{last} or a fraction of the run in {fraction} "
        f"(the run has {steps} {unit}), got {shown}"
    )


def _opt(name: str, value):
    """``as_number`` that lets ``None`` through (an argument still to be resolved)."""
    return None if value is None else as_number(name, value)


@dataclass(frozen=True)
class Schedule:
    """λ_t as a vectorized function of the step, with ``integral(t) = Σ_{s<t} λ_s``.

    ``values`` maps an integer array of steps to strengths; ``cumulative`` maps an integer array of
    ``t`` to the exact sum ``Σ_{s<t} λ_s`` (closed forms, no loops over steps).
    """

    values: Callable[[np.ndarray], np.ndarray]
    cumulative: Callable[[np.ndarray], np.ndarray]
    name: str = "schedule"
    params: dict = field(default_factory=dict)
    #: set on a schedule still waiting for its horizon or its λ: ``(horizon, value) -> Schedule``
    resolve_with: Callable[[int | None, float | None], Schedule] | None = None

    @property
    def unresolved(self) -> bool:
        """True while the horizon (a fraction ``at``) or the value (``value=None``) is still open."""
        return self.resolve_with is not None

    @property
    def value_open(self) -> bool:
        """True when λ itself is still open (``value=None``/``init=None``: λ is the optimizer's weight decay)."""
        return _value_open(self.params)

    def resolve(self, horizon: int | None = None, value: float | None = None) -> Schedule:
        """Fix what was left open: ``horizon`` for fractions of training, ``value`` for λ (e.g. the
        optimizer's ``weight_decay``). A resolved schedule returns itself.

        >>> s = turn_off(at=0.25)
        >>> s.unresolved, s.resolve(horizon=8, value=0.1).table(3).tolist()
        (True, [0.1, 0.1, 0.0])
        """
        if self.resolve_with is None:
            return self
        return self.resolve_with(horizon, value)

    def __call__(self, step: int) -> float:
        return float(self.values(np.asarray([step], dtype=np.int64))[0])

    def integral(self, t: int) -> float:
        """Accumulated strength Σ_{s<t} λ_s (the paper's ∫_0^t α_s ds in steps)."""
        return float(self.cumulative(np.asarray([t], dtype=np.int64))[0])

    def table(self, steps: int) -> np.ndarray:
        """λ_0, ..., λ_{steps-1} as a float64 array."""
        return np.asarray(self.values(np.arange(int(steps), dtype=np.int64)), dtype=np.float64)

    def scaled(self, factor: float) -> Schedule:
        factor = _finite_nonneg("factor", factor)
        return Schedule(
            lambda s: factor * self.values(s),
            lambda t: factor * self.cumulative(t),
            self.name,
            {**self.params, "scale": factor * self.params.get("scale", 1.0)},
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"


def _value_open(params: Mapping) -> bool:
    return params.get("value", params.get("init", 0.0)) is None


@runtime_checkable
class TriggeredSchedule(Protocol):
    """A schedule whose switch-off is decided during training from what it observes
    (:class:`~mirrorflow.training.auto_off.AutoTurnOff`). Besides λ_t (``__call__``) and Σ_{s<t} λ_s
    (``integral``), the scheduler that drives it fixes its open horizon and λ in place (``resolve_horizon``),
    feeds it the training metrics (``observe``) and saves and restores it with a checkpoint."""

    def __call__(self, step: int) -> float: ...

    def integral(self, t: int) -> float: ...

    def resolve_horizon(self, horizon: int | None, value: float | None = None) -> None: ...

    def observe(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: Mapping) -> None: ...


def _pending(name: str, params: dict, build: Callable[[int | None, float | None], Schedule]) -> Schedule:
    """A schedule waiting for its horizon and/or value: calling it raises, ``resolve`` builds it."""
    args = ", ".join(f"{k}={v!r}" for k, v in params.items())
    missing = []
    if _value_open(params):
        missing.append("λ (value=None takes it from the optimizer)")
    if any(is_fraction(v) for k, v in params.items() if k in ("at", "until")):
        missing.append("the horizon (the fraction is of the number of training steps)")

    def fail(_):
        raise ValueError(
            f"{name}({args}) still needs {' and '.join(missing)}: call .resolve(horizon=..., value=...), or pass it "
            "to WeightDecayScheduler(..., horizon=N) or the Trainer callback "
            "(which uses max_steps and the optimizer's λ)"
        )

    return Schedule(fail, fail, name, params, resolve_with=build)


def _late(h: int | None, horizon: int | None, at) -> int | None:
    """The horizon a pending schedule is built with: the one given late (``resolve``) only for a fraction; a
    step beyond a run's length is the caller's to warn about (``WeightDecayScheduler``), not an error."""
    return h if h is not None and horizon is None and is_fraction(at) else horizon


def _t(t: np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(t, dtype=np.float64), 0.0)


def constant(value: float) -> Schedule:
    """λ_t = c for all t; integral(t) = c·t.

    >>> constant(0.01).integral(1000)
    10.0
    """
    c = _finite_nonneg("value", value)
    return Schedule(
        lambda s: np.full(np.shape(s), c, dtype=np.float64),
        lambda t: c * _t(t),
        "constant",
        {"value": c},
    )


def turn_off(value: float | None = None, at: float | None = None, horizon: int | None = None) -> Schedule:
    """λ_t = c for t < t_off, 0 afterwards (Remark 3.9: the metric freezes at R_{a_T}).

    ``at`` is a step or a fraction of ``horizon``. A fractional ``at`` applies c·(at − ⌊at⌋) on step ⌊at⌋,
    so integral(∞) = c·at exactly. Without a horizon, a fraction waits for one (:meth:`Schedule.resolve`);
    ``value=None`` waits for λ (the optimizer's weight decay in :class:`WeightDecayScheduler`).

    >>> turn_off(2.0, at=0.25, horizon=8).table(4).tolist()
    [2.0, 2.0, 0.0, 0.0]
    """
    if at is None:
        raise ValueError("turn_off needs at= (a step, or a fraction of the horizon)")
    value, at = _opt("value", value), as_number("at", at)
    horizon = None if horizon is None else as_count("horizon", horizon)
    if value is None or (is_fraction(at) and horizon is None):
        return _pending(
            "turn_off",
            {"value": value, "at": at},
            lambda h, v: turn_off(value if value is not None else v, at, _late(h, horizon, at)),
        )
    return _turn_off_at_step(_finite_nonneg("value", value), resolve_step("at", at, horizon))


def _turn_off_at_step(c: float, t_off: float) -> Schedule:
    def values(s):
        s = np.asarray(s, dtype=np.float64)
        return c * np.clip(t_off - s, 0.0, 1.0)

    return Schedule(values, lambda t: c * np.minimum(_t(t), t_off), "turn_off", {"value": c, "at": t_off})


def linear_decay(
    init: float | None, until: float | None = None, horizon: int | None = None, *, end: float | None = None
) -> Schedule:
    """λ_t = c·(1 − t/T) for t < T, 0 afterwards, with c = ``init`` and T = ``until``;
    Σ_{s<t} λ_s = c·(t − t(t−1)/(2T)) for t ≤ T.

    ``until`` is *when* λ reaches 0 — a step, or a float in (0, 1] as a fraction of ``horizon`` — not the
    final value (λ always ends at 0; torch's ``LinearLR(end_factor=...)`` names a final factor instead).

    ``end=`` is the old name of ``until`` (accepted with a ``FutureWarning``).

    >>> linear_decay(1.0, until=4).table(5).tolist()
    [1.0, 0.75, 0.5, 0.25, 0.0]
    """
    return _decay("linear_decay", init, _until("linear_decay", until, end), horizon)


def cosine_decay(
    init: float | None, until: float | None = None, horizon: int | None = None, *, end: float | None = None
) -> Schedule:
    """λ_t = c·½(1 + cos(π t/T)) for t < T, 0 afterwards, with c = ``init`` and T = ``until`` (a step, or a
    fraction of ``horizon``: when λ reaches 0, not a final value, as in :func:`linear_decay`).

    Σ_{s<n} cos(sθ) = sin(nθ/2)·cos((n−1)θ/2)/sin(θ/2) with θ = π/T gives integral(t) in closed form.

    >>> round(cosine_decay(1.0, until=100).integral(100), 6)
    50.5
    """
    return _decay("cosine_decay", init, _until("cosine_decay", until, end), horizon)


def _until(kind: str, until, end):
    """``until``, or the old keyword ``end`` (same meaning: the step where λ reaches 0) with a FutureWarning."""
    if end is None:
        return until
    if until is not None:
        raise ValueError(f"{kind}: give until= (the step where λ reaches 0) or its old name end=, not both")
    import warnings

    warnings.warn(
        f"{kind}(end=...) is now until=: the step (or fraction of the horizon) where λ reaches 0, not λ's final level",
        FutureWarning,
        stacklevel=3,
    )
    return end


def _decay(kind: str, init, until, horizon) -> Schedule:
    """The decays from ``init`` to 0 at step ``until`` (:func:`linear_decay`, :func:`cosine_decay`)."""
    if until is None:
        raise ValueError(f"{kind} needs until= (the step, or fraction of the horizon, where λ reaches 0)")
    init, until = _opt("init", init), as_number("until", until)
    horizon = None if horizon is None else as_count("horizon", horizon)
    if init is None or (is_fraction(until) and horizon is None):
        return _pending(
            kind,
            {"init": init, "until": until},
            lambda h, v: _decay(kind, init if init is not None else v, until, _late(h, horizon, until)),
        )
    c = _finite_nonneg("init", init)
    T = resolve_step("until", until, horizon)
    if T <= 0:
        raise ValueError(
            f"until={until!r}: {kind}(init, until) decays λ from init to 0, and until is the step (or the fraction "
            "of the horizon) at which λ reaches 0, so it must be > 0; it is not λ's final level (as end_factor is in "
            "torch's LinearLR): λ always ends at 0"
        )
    build = _linear if kind == "linear_decay" else _cosine
    values, cumulative = build(c, T)
    return Schedule(values, cumulative, kind, {"init": c, "until": T})


def _linear(c: float, T: float):
    def values(s):
        s = np.asarray(s, dtype=np.float64)
        return c * np.clip(1.0 - s / T, 0.0, 1.0) * (s >= 0)

    def cumulative(t):
        n = np.minimum(_t(t), math.ceil(T))  # steps s < n contribute
        return c * (n - n * (n - 1) / (2.0 * T))

    return values, cumulative


def _cosine(c: float, T: float):
    theta = math.pi / T

    def values(s):
        s = np.asarray(s, dtype=np.float64)
        return c * 0.5 * (1.0 + np.cos(theta * s)) * ((s < T) & (s >= 0))

    def cumulative(t):
        n = np.minimum(_t(t), math.ceil(T))
        cos_sum = np.sin(n * theta / 2) * np.cos((n - 1) * theta / 2) / math.sin(theta / 2)
        return c * 0.5 * (n + cos_sum)

    return values, cumulative


def piecewise(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Join schedules: ``schedules[k]`` runs on [b_{k-1}, b_k), called with the step relative to b_{k-1}.

    Like optax's ``join_schedules``. ``len(boundaries) == len(schedules) - 1``, boundaries increasing.

    >>> piecewise([constant(1.0), constant(0.5)], [2]).table(4).tolist()
    [1.0, 1.0, 0.5, 0.5]
    """
    schedules = list(schedules)
    bounds = [as_count("boundaries", b, minimum=0) for b in boundaries]
    if not schedules:
        raise ValueError("schedules must not be empty")
    if len(bounds) != len(schedules) - 1:
        raise ValueError(f"boundaries must have {len(schedules) - 1} entries, got {len(bounds)}")
    if any(b < 0 for b in bounds) or any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
        raise ValueError(f"boundaries must be non-negative and increasing, got {bounds}")
    starts = [0, *bounds]
    ends = [*bounds, None]

    def values(s):
        s = np.asarray(s, dtype=np.int64)
        out = np.zeros(s.shape, dtype=np.float64)
        for sched, a, b in zip(schedules, starts, ends):
            mask = (s >= a) if b is None else ((s >= a) & (s < b))
            if mask.any():
                out[mask] = sched.values(s[mask] - a)
        return out

    def cumulative(t):
        t = np.asarray(t, dtype=np.int64)
        out = np.zeros(t.shape, dtype=np.float64)
        for sched, a, b in zip(schedules, starts, ends):
            local = np.clip(t - a, 0, None if b is None else b - a)
            out += sched.cumulative(local)
        return out

    return Schedule(values, cumulative, "piecewise", {"schedules": schedules, "boundaries": bounds})


def with_budget(schedule: Schedule, budget: float, horizon: int) -> Schedule:
    """Rescale ``schedule`` so that its total strength over ``horizon`` steps equals ``budget``.

    Σ_{s<horizon} λ_s = budget exactly (up to float rounding); the shape is kept. This is how the paper
    compares linear and cosine decay with constant weight decay at the same ∫λ (App. C, Table 2).
    """
    budget = _finite_nonneg("budget", budget)
    horizon = as_count("horizon", horizon)
    total = schedule.integral(horizon)
    if total <= 0:
        if budget == 0:
            return schedule
        raise ValueError(f"schedule has zero total strength over {horizon} steps; cannot reach budget={budget}")
    return schedule.scaled(budget / total)


def turn_off_for_budget(value: float, budget: float, horizon: int | None = None) -> Schedule:
    """Constant ``value`` until ``budget`` = Σλ is spent, then 0: ``turn_off(value, at=budget/value)``.

    Table 2's rows "constant 0.02 / 0.2 / 2 / 20, t-o" are this with the budget of constant 0.01 over
    the whole run.

    >>> turn_off_for_budget(20.0, budget=10.0).integral(10**6)
    10.0
    """
    c = _finite_nonneg("value", value)
    budget = _finite_nonneg("budget", budget)
    if c == 0:
        raise ValueError("value must be positive to spend a budget")
    t_off = budget / c
    if horizon is not None and t_off > as_count("horizon", horizon):
        raise ValueError(f"budget={budget} at value={c} needs {t_off:g} steps, beyond the horizon ({horizon})")
    return _turn_off_at_step(c, t_off)


SCHEDULE_KINDS = ("none", "constant", "turn_off", "linear", "cosine")


def from_spec(kind: str, value: float = 0.0, at: float | None = None, horizon: int | None = None) -> Schedule:
    """Build a schedule from a config: ``kind`` in :data:`SCHEDULE_KINDS`.

    - ``none``: λ ≡ 0;  ``constant``: λ ≡ value;
    - ``turn_off``: ``value`` until ``at``;  ``linear``/``cosine``: from ``value`` down to 0 at ``at``.
    """
    if kind == "none":
        return constant(0.0)
    if kind == "constant":
        return constant(value)
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULE_KINDS)}; got {kind!r}")
    if at is None:
        raise ValueError(f"schedule {kind!r} needs an off-point 'at'")
    if kind == "turn_off":
        return turn_off(value, at, horizon)
    if kind == "linear":
        return linear_decay(value, at, horizon)
    return cosine_decay(value, at, horizon)

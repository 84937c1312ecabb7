"""``AutoTurnOff``: a weight-decay schedule whose turn-off time is set by a monitored signal.

The paper fixes the turn-off step by hand (Remark 3.9: after λ = 0 training continues with the frozen
geometry R_{a_T}; docs/theory.md#exp-matrix-sensing, Table 2). This schedule switches λ off when

* ``mode="plateau"``: the signal (default ``spectral/rho``, the paper's ρ) has stopped moving: over the
  last ``window + 1`` observations v_0..v_w (taken at the steps where it was measured),
  ``(max v − min v) / |v_w| ≤ tol``;
* ``mode="threshold"``: the signal (e.g. the train ``loss``) has reached ``threshold``
  (``v ≤ threshold``, or ``v ≥ threshold`` with ``direction="above"``).

With t* = ``triggered_at`` (the step of the observation that fired):

    λ_t = base(t)  for t ≤ t*,     λ_t = 0  for t > t*

(the observation comes after step t*'s update, so step t* was decayed and step t*+1 is the first without).
Before a trigger, ``base`` is a constant ``value`` or any schedule; ``value=None`` takes λ from the optimizer
(the driven group's initial ``weight_decay``, as ``turn_off(at=...)`` does) when a
:class:`~mirrorflow.training.scheduler.WeightDecayScheduler` or a callback wraps it.
``max_step`` is an optional fallback:
λ_t = 0 for t ≥ ``max_step`` even without a trigger. Non-finite signal values (ρ is NaN while a LoRA
product is still 0) are skipped. The state (trigger step, recent observations) survives
``state_dict()`` / ``load_state_dict()``, also through :class:`WeightDecayScheduler`'s state dict.

>>> s = AutoTurnOff(0.1, signal="loss", mode="threshold", threshold=0.5)
>>> for t, loss in enumerate([2.0, 1.0, 0.4, 0.3]):
...     s.observe(t, {"loss": loss})
>>> s.triggered_at, s(2), s(3), s.integral(10)
(2, 0.1, 0.0, 0.30000000000000004)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping

import numpy as np

from ..schedules import as_count, as_number

__all__ = ["AutoTurnOff"]

MODES = ("plateau", "threshold")


class AutoTurnOff:
    """A schedule ``step -> λ`` that turns itself off when a monitored signal fires (module docstring).

    Args:
        value: λ before the turn-off: a number, a schedule/callable ``step -> λ``, or ``None``: the
            optimizer's ``weight_decay`` (filled in by ``WeightDecayScheduler`` / the callbacks).
        signal: the metrics key to watch (``"spectral/rho"``, ``"spectral/rho_mean"``, ``"loss"``, ...).
        mode: ``"plateau"`` or ``"threshold"``.
        tol: plateau tolerance on the relative range of the last ``window + 1`` observations.
        window: number of observation intervals the plateau must span (≥ 1).
        threshold: the level for ``mode="threshold"`` (required there).
        direction: ``"below"`` (fire when v ≤ threshold, e.g. a loss) or ``"above"``.
        min_step: ignore observations before this step (e.g. warm-up).
        max_step: fallback: λ = 0 from this step on even without a trigger.
    """

    def __init__(
        self,
        value: float | Callable[[int], float] | None = None,
        signal: str = "spectral/rho",
        mode: str = "plateau",
        tol: float = 0.01,
        window: int = 5,
        threshold: float | None = None,
        direction: str = "below",
        min_step: int = 0,
        max_step: int | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if direction not in ("below", "above"):
            raise ValueError(f"direction must be 'below' or 'above', got {direction!r}")
        if callable(value) or value is None:
            self.base = value
        else:
            v = float(as_number("value", value))
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"value must be a finite non-negative number, got {value!r}")
            self.base = v
        if mode == "threshold":
            if threshold is None or not math.isfinite(float(as_number("threshold", threshold))):
                raise ValueError("threshold: mode='threshold' needs a finite threshold")
            threshold = float(as_number("threshold", threshold))
        tol = float(as_number("tol", tol))
        if not (tol >= 0 and math.isfinite(tol)):
            raise ValueError(f"tol must be finite and non-negative, got {tol!r}")
        if not isinstance(signal, str) or not signal:
            raise TypeError(f"signal must be a metrics key (a non-empty str), got {signal!r}")
        self.signal = signal
        self.mode = mode
        self.tol = tol
        self.window = as_count("window", window)
        self.threshold = threshold
        self.direction = direction
        self.min_step = as_count("min_step", min_step, minimum=0)
        self.max_step = None if max_step is None else as_count("max_step", max_step, minimum=0)
        self.triggered_at: int | None = None
        self.trigger_value: float | None = None
        self._recent: deque[tuple[int, float]] = deque(maxlen=self.window + 1)

    # -- the schedule --------------------------------------------------------------------------------
    @property
    def off_from(self) -> int | None:
        """First step with λ = 0 (``triggered_at + 1``, or ``max_step``), ``None`` while on."""
        cands = []
        if self.triggered_at is not None:
            cands.append(self.triggered_at + 1)
        if self.max_step is not None:
            cands.append(self.max_step)
        return min(cands) if cands else None

    def resolve_horizon(self, horizon: int | None, value: float | None = None) -> None:
        """Fix an open λ (``AutoTurnOff(None)``: λ = ``value``, the optimizer's weight decay) or an open
        horizon / λ of the base schedule (``AutoTurnOff(turn_off(at=0.5))``), in place."""
        if self.base is None and value is not None:
            self.base = float(value)
        elif getattr(self.base, "unresolved", False):
            self.base = self.base.resolve(horizon, value)

    def _base(self, step: int) -> float:
        if self.base is None:
            raise ValueError(
                "value=None takes λ from the optimizer: wrap this AutoTurnOff in "
                "WeightDecayScheduler(opt, ...) or a callback, or give value="
            )
        if not callable(self.base):
            return self.base
        v = float(self.base(step))
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"value: the schedule returned λ = {v!r} at step {step}; λ must be finite and ≥ 0")
        return v

    def __call__(self, step: int) -> float:
        off = self.off_from
        if off is not None and step >= off:
            return 0.0
        return self._base(int(step))

    def integral(self, t: int) -> float:
        """Σ_{s<t} λ_s with the turn-off known so far."""
        t = int(t)
        off = self.off_from
        end = t if off is None else min(t, off)
        if end <= 0:
            return 0.0
        if not callable(self.base):
            return self._base(0) * end
        if hasattr(self.base, "integral"):
            return float(self.base.integral(end))
        return float(sum(self._base(s) for s in range(end)))

    def table(self, steps: int) -> np.ndarray:
        return np.asarray([self(s) for s in range(int(steps))], dtype=np.float64)

    # -- the trigger ---------------------------------------------------------------------------------
    @property
    def triggered(self) -> bool:
        return self.triggered_at is not None

    def observe(self, step: int, metrics: Mapping[str, float]) -> None:
        """Feed the metrics measured after step ``step``; may set :attr:`triggered_at` (= ``step``)."""
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a mapping of metrics keys to numbers, got {type(metrics).__name__}")
        step = as_count("step", step, minimum=-1)  # -1: measured before the first step
        if self.triggered_at is not None or self.signal not in metrics:
            return
        v = float(as_number(f"metrics[{self.signal!r}]", metrics[self.signal]))
        if not math.isfinite(v) or step < self.min_step:
            return
        if self._recent and step <= self._recent[-1][0]:
            if step < self._recent[-1][0]:
                return  # out of order: ignore
            self._recent.pop()  # same step observed again: keep the newer value
        self._recent.append((step, v))
        if self.mode == "threshold":
            fired = v <= self.threshold if self.direction == "below" else v >= self.threshold
        else:
            fired = False
            if len(self._recent) == self.window + 1:
                vals = [x for _, x in self._recent]
                scale = abs(vals[-1])
                spread = max(vals) - min(vals)
                fired = spread <= self.tol * scale if scale > 0 else spread == 0
        if fired:
            self.triggered_at = step
            self.trigger_value = v

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "triggered_at": self.triggered_at,
            "trigger_value": self.trigger_value,
            "recent": [list(x) for x in self._recent],
            "signal": self.signal,
            "mode": self.mode,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict` output (types and values checked before anything changes)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state_dict must be a mapping from AutoTurnOff.state_dict(), got {type(state).__name__}")
        t, tv, recent = state.get("triggered_at"), state.get("trigger_value"), state.get("recent", [])
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 0):
            raise ValueError(f"state_dict['triggered_at'] must be a step ≥ 0 or None, got {t!r}")
        if tv is not None and not isinstance(tv, (int, float)):
            raise TypeError(f"state_dict['trigger_value'] must be a number or None, got {tv!r}")
        if not isinstance(recent, (list, tuple)) or not all(
            isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(y, (int, float)) for y in x) for x in recent
        ):
            raise TypeError(f"state_dict['recent'] must be a list of [step, value] pairs, got {recent!r}")
        if state.get("signal", self.signal) != self.signal or state.get("mode", self.mode) != self.mode:
            raise ValueError(
                f"state_dict is for signal={state.get('signal')!r} mode={state.get('mode')!r}, "
                f"this AutoTurnOff watches signal={self.signal!r} mode={self.mode!r}"
            )
        t = state.get("triggered_at")
        self.triggered_at = None if t is None else int(t)
        tv = state.get("trigger_value")
        self.trigger_value = None if tv is None else float(tv)
        self._recent = deque(((int(s), float(v)) for s, v in state.get("recent", [])), maxlen=self.window + 1)

    def __repr__(self) -> str:
        crit = (
            f"tol={self.tol}, window={self.window}"
            if self.mode == "plateau"
            else f"threshold={self.threshold} ({self.direction})"
        )
        return (
            f"AutoTurnOff(value={self.base!r}, signal={self.signal!r}, mode={self.mode!r}, {crit}, "
            f"triggered_at={self.triggered_at})"
        )

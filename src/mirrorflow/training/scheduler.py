"""``WeightDecayScheduler``: a weight-decay schedule for any ``torch.optim`` optimizer.

It is a ``torch.optim.lr_scheduler.LRScheduler`` that drives ``weight_decay`` instead of ``lr``: at
construction it sets λ_0, and each ``step()`` sets the next step's λ in the ``weight_decay`` of every
selected param group. So it composes like torch's own schedulers: beside any LR scheduler, inside
``SequentialLR`` (λ from one schedule until a milestone, then from the next, restarted at its step 0) and
``ChainedScheduler``, and its ``state_dict()`` holds only numbers, lists and strings
(``torch.save(..., weights_only=True)`` round-trips it). ``get_last_wd()`` gives λ; ``get_last_lr()`` the
learning rates, which it leaves alone. (``SequentialLR`` resets every group's ``lr`` to ``initial_lr`` when
it is built: build it before the LR schedulers, as for any ``SequentialLR``.)

It also reports the paper's accumulated regularization (docs/theory.md#notation)

    a_t = -Σ_{s<t} η_s λ_s ,

read from the learning rate and weight decay *actually used* at each ``optimizer.step()`` (an
optimizer step pre-hook), so the order of ``lr_scheduler.step()`` and ``wd_scheduler.step()`` does not
matter and skipped optimizer steps (AMP overflow) do not count.

* Coupled decay (SGD, Adam, ...: the gradient gets ``+λw``): SGD's step is ``w ← w − η(∇f + λw)``,
  so the decay part accumulates ``−ηλ`` per step: ``a_t = −Σ η_s λ_s``. (With momentum β the
  steady-state step is η/(1−β); ``a_t`` keeps the plain η, as the paper defines it.)
* Decoupled decay (AdamW, or ``decoupled_weight_decay=True``): torch applies ``w ← (1 − η λ) w``, so
  λ is multiplied by the learning rate: again ``a_t = −Σ η_s λ_s`` to first order, and the exact
  multiplicative shrink ``Π(1 − η_s λ_s) = exp(log_shrink)`` is reported as ``log_shrink``.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler

from ..schedules import Schedule, TriggeredSchedule, as_count

ScheduleLike = Schedule | Callable[[int], float]

#: |a_∞| below this is too small for the geometry to change (docs/training-tools.md, "How much regularization"):
#: Eq. (9)'s scale γ_a = e^{2a}·γ_0 then moves by less than 10 % (e^{-0.1} ≈ 0.905), while the change of the
#: type of bias (L2 → L1) happens on the scale |a| ~ 1.
MIN_EFFECTIVE_A = 0.05


class SmallRegularizationWarning(UserWarning):
    """The planned accumulated regularization a_∞ is too small for the implicit bias to change."""


def warn_if_small(a_inf: float, what: str = "the planned schedule") -> bool:
    """Warn (:class:`SmallRegularizationWarning`) when |a_∞| < :data:`MIN_EFFECTIVE_A`; True if it warned."""
    if abs(a_inf) >= MIN_EFFECTIVE_A:
        return False
    warnings.warn(
        f"{what} accumulates a_∞ = {a_inf:.3g} (a = −Σ η_t λ_t): with |a_∞| < {MIN_EFFECTIVE_A} the geometry's "
        f"scale e^(2a) changes by {100 * (1 - math.exp(2 * a_inf)):.1f} % only, too little for the implicit bias "
        "to change (it changes type on the scale |a| ~ 1); raise λ, the learning rate or the decay period",
        SmallRegularizationWarning,
        stacklevel=3,
    )
    return True


def switch_step(schedule) -> float | None:
    """The step at which a schedule switches λ off for good: ``turn_off``'s ``at``, ``linear_decay`` /
    ``cosine_decay``'s ``until``, an :class:`~mirrorflow.training.auto_off.AutoTurnOff`'s fallback ``max_step``;
    None for other schedules."""
    params = getattr(schedule, "params", None)
    if isinstance(params, dict) and getattr(schedule, "name", "") in ("turn_off", "linear_decay", "cosine_decay"):
        v = params.get("at", params.get("until"))
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    v = getattr(schedule, "max_step", None)
    return float(v) if isinstance(v, int) else None


def warn_if_beyond(schedule, horizon: int | None, horizon_name: str = "horizon") -> bool:
    """Warn when the schedule's switch step (:func:`switch_step`) lies beyond the run's ``horizon`` steps, so λ
    is never switched off; the message names both numbers. True if it warned."""
    t = switch_step(schedule)
    if horizon is None or t is None or t <= horizon:
        return False
    warnings.warn(
        f"{schedule!r} switches λ off at step {t:g}, beyond {horizon_name}={horizon}: the run ends "
        "before the switch, so λ is never switched off",
        stacklevel=3,
    )
    return True


def is_decoupled(optimizer: torch.optim.Optimizer, group: dict) -> bool:
    """True when the optimizer applies weight decay as ``w ← (1 − ηλ)w`` (AdamW style)."""
    if group.get("decoupled_weight_decay", False):
        return True
    return isinstance(optimizer, torch.optim.AdamW)


def decay_param_groups(
    model: torch.nn.Module,
    weight_decay: float = 0.0,
    decay: Sequence[str] = ("*",),
    no_decay: Sequence[str] = ("*bias", "*norm*", "*LayerNorm*", "*ln_*"),
    trainable_only: bool = True,
) -> list[dict]:
    """Split a model's parameters into a ``"decay"`` and a ``"no_decay"`` param group by name pattern.

    A parameter gets decay if its name matches a pattern in ``decay`` and none in ``no_decay``
    (``fnmatch`` patterns, e.g. ``"*lora_*"``). Groups carry a ``"name"`` key that
    :class:`WeightDecayScheduler` accepts in ``groups=``.
    """
    dec, nodec = [], []
    for name, p in model.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        wants = any(fnmatch.fnmatch(name, pat) for pat in decay)
        excluded = any(fnmatch.fnmatch(name, pat) for pat in no_decay)
        (dec if wants and not excluded else nodec).append(p)
    groups = []
    if dec:
        groups.append({"params": dec, "weight_decay": weight_decay, "name": "decay"})
    if nodec:
        groups.append({"params": nodec, "weight_decay": 0.0, "name": "no_decay"})
    return groups


class WeightDecayScheduler(LRScheduler):
    """Set ``weight_decay`` of param groups from a schedule each step; track ``a_t``.

    A ``torch.optim.lr_scheduler.LRScheduler`` whose values go to ``weight_decay`` (module docstring):
    ``SequentialLR(opt, [WeightDecayScheduler(opt, constant(0.5)), WeightDecayScheduler(opt, constant(0.0))],
    milestones=[100])`` switches λ off after 100 steps.

    Args:
        optimizer: any ``torch.optim.Optimizer`` whose groups have a ``weight_decay`` entry.
        schedule: one schedule for all selected groups, or one per selected group. A schedule is a
            :class:`~mirrorflow.schedules.Schedule` or any ``step -> float`` callable.
        groups: which param groups to drive: indices or group ``"name"`` values; default all groups
            whose initial ``weight_decay`` is non-zero, or all groups if none is.
        scale_by_initial: if True, λ_t = (group's initial weight_decay) × schedule(t) (like ``LambdaLR``);
            otherwise λ_t = schedule(t).
        last_epoch: as in ``lr_scheduler``: -1 starts fresh.
        horizon: number of training steps; fixes schedules given as fractions of training
            (``turn_off(0.1, at=0.4)``). A schedule built with ``value=None`` (``turn_off(at=0.4)``) takes λ
            from the group's initial ``weight_decay``.
            A switch step beyond it (``turn_off(0.1, at=500)`` with ``horizon=100``) is warned about.
        horizon_name: what the horizon is called in that warning (the callbacks pass ``"max_steps"``).

    >>> import torch
    >>> from mirrorflow.schedules import turn_off
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = torch.optim.SGD([w], lr=0.1, weight_decay=0.5)
    >>> sched = WeightDecayScheduler(opt, turn_off(0.5, at=2))
    >>> for _ in range(3):
    ...     opt.step(); sched.step()
    >>> round(sched.a, 6), sched.get_last_wd()
    (-0.1, [0.0])
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: ScheduleLike | Sequence[ScheduleLike],
        groups: Iterable[int | str] | None = None,
        scale_by_initial: bool = False,
        last_epoch: int = -1,
        horizon: int | None = None,
        horizon_name: str = "horizon",
    ):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        last_epoch = as_count("last_epoch", last_epoch, minimum=-1)
        horizon = None if horizon is None else as_count("horizon", horizon)
        self.optimizer = optimizer
        pg = optimizer.param_groups
        for i, g in enumerate(pg):
            if "weight_decay" not in g:
                raise ValueError(f"param group {i} of {type(optimizer).__name__} has no 'weight_decay'")
        self.group_indices = self._select(groups)
        if not (callable(schedule) or (isinstance(schedule, (list, tuple)) and all(map(callable, schedule)))):
            raise TypeError(
                "schedule must be a callable step → λ (e.g. mirrorflow.schedules.constant(0.1)) "
                f"or a list of them, got {type(schedule).__name__} {schedule!r}"
            )
        if callable(schedule) and not isinstance(schedule, (list, tuple)):
            self.schedules = [schedule] * len(self.group_indices)
        else:
            self.schedules = list(schedule)
            if len(self.schedules) != len(self.group_indices):
                raise ValueError(
                    f"schedule: got {len(self.schedules)} schedules for {len(self.group_indices)} param groups"
                )
        for i in self.group_indices:
            pg[i].setdefault("initial_weight_decay", pg[i]["weight_decay"])
        self.horizon = horizon
        self.schedules = [self._resolve(s, k) for k, s in enumerate(self.schedules)]
        for sched in {id(x): x for x in self.schedules}.values():
            warn_if_beyond(sched, horizon, horizon_name)
        self.scale_by_initial = bool(scale_by_initial)
        self.a = 0.0  # a_t = -Σ η_s λ_s over the first selected group (see a_per_group)
        self.a_per_group = [0.0] * len(self.group_indices)
        self.log_shrink_per_group = [0.0] * len(self.group_indices)
        self.optimizer_steps = 0
        self.last_used_wd = 0.0  # λ of the last optimizer step (first group)
        self._last_wd: list[float] = []
        self._hook = optimizer.register_step_pre_hook(self._before_optimizer_step)
        for g in pg:  # LRScheduler requires it when resuming (last_epoch ≥ 0); SequentialLR reads it
            g.setdefault("initial_lr", g["lr"])
        # LRScheduler.__init__: base_lrs, the optimizer.step() order check, then the first step() (λ_0)
        super().__init__(optimizer, last_epoch=last_epoch)

    def _resolve(self, schedule, k: int):
        """Fix a schedule's open horizon / λ (see :meth:`~mirrorflow.schedules.Schedule.resolve`)."""
        if isinstance(schedule, TriggeredSchedule):  # AutoTurnOff: resolves its base schedule in place
            schedule.resolve_horizon(self.horizon, self._initial(k))
            return schedule
        if not (isinstance(schedule, Schedule) and schedule.unresolved):
            return schedule
        if schedule.value_open and self._initial(k) == 0:
            warnings.warn(
                f"{schedule!r} takes λ from the optimizer, but param group {self.group_indices[k]} has weight_decay 0",
                stacklevel=3,
            )
        out = schedule.resolve(self.horizon, self._initial(k))
        if out.unresolved:
            out(0)  # raises the error naming what is still missing
        return out

    def _initial(self, k: int) -> float:
        return float(self.optimizer.param_groups[self.group_indices[k]]["initial_weight_decay"])

    def planned_a(self, horizon: int | None = None, lr: Callable[[int], float] | None = None) -> float:
        """The accumulated regularization the schedule plans for: a_∞ = −Σ_{t<T} η_t λ_t (first group).

        ``lr(t)`` gives η_t (default: the group's current learning rate); T = ``horizon`` or the scheduler's.
        """
        T = horizon if horizon is not None else self.horizon
        if T is None:
            raise ValueError("planned_a needs a horizon (the number of training steps)")
        eta = lr if lr is not None else (lambda t, g=self.optimizer.param_groups[self.group_indices[0]]: float(g["lr"]))
        return -sum(eta(t) * self._value(0, t) for t in range(int(T)))

    # -- selection -------------------------------------------------------------------------------
    def _select(self, groups: Iterable[int | str] | None) -> list[int]:
        pg = self.optimizer.param_groups
        if groups is None:
            nonzero = [i for i, g in enumerate(pg) if g["weight_decay"] != 0]
            return nonzero or list(range(len(pg)))
        if isinstance(groups, (str, numbers.Integral)):
            groups = [groups]
        groups = list(groups)
        if not groups:
            raise ValueError(
                "groups: an empty list drives no param group; give indices or names, or leave "
                "groups=None for the groups with non-zero weight_decay"
            )
        out = []
        for sel in groups:
            if isinstance(sel, str):
                hits = [i for i, g in enumerate(pg) if g.get("name") == sel]
                if not hits:
                    names = [g.get("name") for g in pg]
                    raise ValueError(f"groups: no param group named {sel!r} (names: {names})")
                out.extend(hits)
            else:
                if not isinstance(sel, (int, numbers.Integral)) or isinstance(sel, bool):
                    raise TypeError(f"groups: expected param group indices (int) or names (str), got {sel!r}")
                if not 0 <= int(sel) < len(pg):
                    raise ValueError(f"groups: index {sel} out of range for {len(pg)} param groups")
                out.append(int(sel))
        return sorted(set(out))

    # -- the lr_scheduler contract ---------------------------------------------------------------
    def _value(self, k: int, step: int) -> float:
        v = float(self.schedules[k](step))
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"schedule returned an invalid weight decay {v!r} at step {step}")
        if self.scale_by_initial:
            v *= self.optimizer.param_groups[self.group_indices[k]]["initial_weight_decay"]
        return v

    def get_wd(self) -> list[float]:
        return [self._value(k, self.last_epoch) for k in range(len(self.group_indices))]

    def get_lr(self) -> list[float]:
        """The learning rates, unchanged: this scheduler leaves ``lr`` to the LR schedulers."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The learning rates now in the param groups (as set by the LR schedulers, not by this one)."""
        return self.get_lr()

    def step(self, epoch: int | None = None) -> None:
        """Advance one step and set λ_t in the selected groups (``epoch``: jump to that step)."""
        self._step_count = getattr(self, "_step_count", 0) + 1
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        """Set λ of step ``last_epoch + 1`` (or of step ``epoch``) in ``weight_decay``; the name is
        ``LRScheduler``'s, which ``SequentialLR`` calls with ``epoch=0`` at a milestone."""
        self.last_epoch = self.last_epoch + 1 if epoch is None else as_count("epoch", epoch, minimum=0)
        values = self.get_wd()
        for i, v in zip(self.group_indices, values):
            self.optimizer.param_groups[i]["weight_decay"] = v
        self._last_wd = values
        self._last_lr = self.get_lr()

    def wd_metrics(self) -> dict[str, float]:
        """``{"wd/lambda": λ of the last optimizer step, "wd/a": a_t}`` (first driven group)."""
        return {"wd/lambda": self.last_used_wd, "wd/a": float(self.a)}

    def get_last_wd(self) -> list[float]:
        """λ currently set in each selected group (like ``get_last_lr``)."""
        return list(self._last_wd)

    def _before_optimizer_step(self, optimizer, args, kwargs) -> None:
        pg = optimizer.param_groups
        for k, i in enumerate(self.group_indices):
            lr = float(pg[i]["lr"])
            lam = float(pg[i]["weight_decay"])
            if k == 0:
                self.last_used_wd = lam
            self.a_per_group[k] -= lr * lam
            if is_decoupled(optimizer, pg[i]):
                self.log_shrink_per_group[k] += math.log(max(1.0 - lr * lam, 1e-300))
            else:
                self.log_shrink_per_group[k] -= lr * lam
        self.a = self.a_per_group[0] if self.a_per_group else 0.0
        self.optimizer_steps += 1

    @property
    def log_shrink(self) -> float:
        """Σ log(1 − η_s λ_s) for decoupled groups (exact shrink of w from decay alone), −Σηλ for coupled."""
        return self.log_shrink_per_group[0] if self.log_shrink_per_group else 0.0

    def state_dict(self) -> dict:
        """Everything but the optimizer and the schedule objects (as ``lr_scheduler`` does)."""
        return {
            "last_epoch": self.last_epoch,
            "a_per_group": list(self.a_per_group),
            "log_shrink_per_group": list(self.log_shrink_per_group),
            "optimizer_steps": self.optimizer_steps,
            "last_used_wd": self.last_used_wd,
            "group_indices": list(self.group_indices),
            "scale_by_initial": self.scale_by_initial,
            "_last_wd": list(self._last_wd),
            "schedule_state": [s.state_dict() if isinstance(s, TriggeredSchedule) else None for s in self.schedules],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output; a state of the wrong shape or with invalid values raises
        (``TypeError``/``ValueError`` naming the entry) before anything is changed."""
        _check_state(state, len(self.group_indices))
        if list(state["group_indices"]) != self.group_indices:
            raise ValueError(
                f"state_dict drives param groups {state['group_indices']}, this scheduler drives {self.group_indices}"
            )
        self.last_epoch = int(state["last_epoch"])
        self.a_per_group = list(state["a_per_group"])
        self.log_shrink_per_group = list(state["log_shrink_per_group"])
        self.a = self.a_per_group[0] if self.a_per_group else 0.0
        self.optimizer_steps = int(state["optimizer_steps"])
        self.last_used_wd = float(state.get("last_used_wd", 0.0))
        self.scale_by_initial = bool(state["scale_by_initial"])
        for s, st in zip(self.schedules, state.get("schedule_state", [])):
            if st is not None and isinstance(s, TriggeredSchedule):
                s.load_state_dict(st)
        self._last_wd = list(state["_last_wd"])
        for i, v in zip(self.group_indices, self._last_wd):
            self.optimizer.param_groups[i]["weight_decay"] = v

    def close(self) -> None:
        """Remove the optimizer hook (the scheduler stops tracking ``a_t``)."""
        self._hook.remove()

    def __repr__(self) -> str:
        return f"WeightDecayScheduler(step={self.last_epoch}, wd={self._last_wd}, a={self.a:.6g})"


_STATE_LISTS = ("a_per_group", "log_shrink_per_group", "_last_wd")


def _check_state(state: object, n_groups: int) -> None:
    """Validate a :meth:`WeightDecayScheduler.state_dict`: its keys, types, lengths and signs
    (a ≤ 0 and Σ log-shrink ≤ 0 accumulate −ηλ ≤ 0; weight decays are finite and ≥ 0)."""
    if not isinstance(state, Mapping):
        raise TypeError(
            f"state_dict must be a mapping from WeightDecayScheduler.state_dict(), got {type(state).__name__}"
        )
    missing = [
        k
        for k in ("last_epoch", "optimizer_steps", "group_indices", "scale_by_initial", *_STATE_LISTS)
        if k not in state
    ]
    if missing:
        raise ValueError(f"state_dict is not a WeightDecayScheduler state: missing {', '.join(missing)}")
    for k in ("last_epoch", "optimizer_steps"):
        if not isinstance(state[k], numbers.Integral) or isinstance(state[k], bool):
            raise TypeError(f"state_dict[{k!r}] must be an integer, got {state[k]!r}")
    if not isinstance(state["group_indices"], (list, tuple)):
        raise TypeError(f"state_dict['group_indices'] must be a list, got {state['group_indices']!r}")
    for k in _STATE_LISTS:
        v = state[k]
        if not isinstance(v, (list, tuple)) or not all(
            isinstance(x, numbers.Real) and not isinstance(x, bool) for x in v
        ):
            raise TypeError(f"state_dict[{k!r}] must be a list of numbers, got {v!r}")
        if len(v) != n_groups and not (k == "_last_wd" and len(v) == 0):
            raise ValueError(f"state_dict[{k!r}] has {len(v)} entries for {n_groups} param groups")
        if not all(math.isfinite(x) for x in v):
            raise ValueError(f"state_dict[{k!r}] must be finite, got {v!r}")
    if any(x > 0 for x in state["a_per_group"]):
        raise ValueError(f"state_dict['a_per_group'] must be ≤ 0 (a = −Σηλ), got {state['a_per_group']!r}")
    if any(x < 0 for x in state["_last_wd"]):
        raise ValueError(f"state_dict['_last_wd'] must be non-negative weight decays, got {state['_last_wd']!r}")

"""Hugging Face ``Trainer`` support: any mirrorflow weight-decay schedule, a_t and ρ in the Trainer's logs.

:class:`WeightDecayCallback` wraps the Trainer's optimizer in a
:class:`~mirrorflow.training.scheduler.WeightDecayScheduler` when training begins, advances it after
every optimizer step, and adds to each Trainer log (so they reach ``state.log_history``, the console and
every ``report_to`` integration: the callback moves itself to the front of the Trainer's callback list,
ahead of the integrations, which otherwise receive the log before any user callback):

* ``wd/lambda``  λ_t of the last optimizer step (first driven param group),
* ``wd/a``       a_t = −Σ_{s<t} η_s λ_s (MATH.md §1.2), read from the λ and η actually used,
* ``wd/auto_off`` 1 once an :class:`~mirrorflow.training.auto_off.AutoTurnOff` has fired, else 0, and
  ``wd/triggered_at`` the step at which it fired (a warning at the end of training if it never did),
* the aggregates of an optional :class:`~mirrorflow.training.monitor.SpectralMonitor`
  (``spectral/rho``, ``spectral/rho_mean``, ...; per-pair keys with ``log_pairs=True``).

Timing (step t = ``state.global_step − 1``, the optimizer step just taken): in ``on_step_end`` the
monitor measures when ``global_step % every == 0``, an ``AutoTurnOff`` schedule observes those metrics,
then the scheduler sets λ_{t+1}. A ``loss`` signal arrives in ``on_log``; if it fires there, λ_{t+1} is
set again. Schedules given as fractions of training (``turn_off(0.1, at=0.4)``) use ``max_steps`` as
their horizon; ``value=None`` (``turn_off(at=0.4)``) takes λ from the optimizer (``TrainingArguments.
weight_decay``). A planned a_∞ too small to matter is warned about when training starts. The callback's state (a_t, the step, the auto-off trigger) is saved as
``mirrorflow_wd.json`` in each checkpoint folder and restored when training resumes from it.

Only this module imports ``transformers``.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Callable, Iterable, Sequence

import sys

import torch

try:
    from transformers import TrainerCallback
except ModuleNotFoundError as err:  # the hf extra is not installed
    raise ModuleNotFoundError(
        f"WeightDecayCallback needs transformers ({err.name} is missing): pip install 'mirrorflow[hf]'"
    ) from err

from ..store import write_json
from .lora_check import _unwrap, check_lora_decay
from .monitor import SpectralMonitor
from .scheduler import WeightDecayScheduler, warn_if_small

__all__ = ["WeightDecayCallback", "STATE_FILE"]

STATE_FILE = "mirrorflow_wd.json"


def _default_groups(optimizer: torch.optim.Optimizer) -> list[int]:
    """Groups to drive: those with non-zero weight decay; if none, those holding any ≥2-D tensor.

    The Trainer builds a decay group (weights) and a no-decay group (biases, LayerNorm: 1-D tensors).
    With ``TrainingArguments.weight_decay = 0`` both have λ = 0; the matrices' group is then chosen.
    """
    pg = optimizer.param_groups
    nonzero = [i for i, g in enumerate(pg) if g.get("weight_decay", 0.0) != 0]
    if nonzero:
        return nonzero
    mats = [i for i, g in enumerate(pg) if any(p.dim() >= 2 for p in g["params"])]
    return mats or list(range(len(pg)))


def _lr_at(lr_scheduler, optimizer: torch.optim.Optimizer, group: int):
    """η_t of a param group as a function of the step, read from a ``LambdaLR`` (the Trainer's linear,
    cosine and constant schedules); the current learning rate for other schedulers."""
    lambdas = getattr(lr_scheduler, "lr_lambdas", None)
    base = getattr(lr_scheduler, "base_lrs", None)
    if lambdas is not None and base is not None and group < len(lambdas):
        f, b = lambdas[group], float(base[group])
        return lambda t: b * float(f(t))
    lr = float(optimizer.param_groups[group]["lr"])
    return lambda t: lr


def _put_first(callback) -> None:
    """Move ``callback`` to the front of the Trainer's ``CallbackHandler`` list, found as the caller of
    the event, so its additions to a log reach the reporting integrations (which the Trainer puts before
    user callbacks). The list is replaced, not mutated: an ``on_*`` loop in progress is not disturbed."""
    frame = sys._getframe(2)  # _put_first ← on_* ← CallbackHandler.call_event
    handler = frame.f_locals.get("self")
    cbs = getattr(handler, "callbacks", None)
    if isinstance(cbs, list) and any(c is callback for c in cbs) and cbs[0] is not callback:
        handler.callbacks = [callback] + [c for c in cbs if c is not callback]


class WeightDecayCallback(TrainerCallback):
    """Apply a weight-decay schedule to a ``transformers.Trainer`` and log λ_t, a_t and ρ.

    Args:
        schedule: a :class:`~mirrorflow.schedules.Schedule` (``turn_off``, ``linear_decay``, ``cosine_decay``,
            ``with_budget``, ...), an :class:`~mirrorflow.training.auto_off.AutoTurnOff`, or any
            ``step -> λ`` callable; one per driven group also works.
        groups: param groups to drive (indices or ``"name"``); default: see :func:`_default_groups`.
        scale_by_initial: λ_t = group's initial weight_decay × schedule(t).
        monitor: a :class:`SpectralMonitor`, or ``None``. With ``monitor_every`` set and no monitor,
            one is built on the Trainer's model when training begins (``per_head``, ``include``).
        log_pairs: also put the per-pair spectral keys into the Trainer's logs (they are always in the
            monitor's CSV/TensorBoard output).
        force_log: make the Trainer log on every measuring step (else the latest measurement rides along
            with the Trainer's own ``logging_steps``).
        check_lora: run :func:`~mirrorflow.training.lora_check.check_lora_decay` when training begins.
    """

    def __init__(
        self,
        schedule: Callable[[int], float] | Sequence[Callable[[int], float]],
        groups: Iterable[int | str] | None = None,
        scale_by_initial: bool = False,
        monitor: SpectralMonitor | None = None,
        monitor_every: int | None = None,
        per_head: bool = False,
        include: str | Iterable[str] = "auto",
        log_pairs: bool = False,
        force_log: bool = False,
        check_lora: bool = True,
    ):
        self.schedule = schedule
        self.groups = groups
        self.scale_by_initial = scale_by_initial
        self.monitor = monitor
        if monitor_every is not None and (isinstance(monitor_every, bool) or int(monitor_every) < 1):
            raise ValueError(f"monitor_every must be a positive integer, got {monitor_every!r}")
        self.monitor_every = monitor_every
        self.per_head = per_head
        self.include = include
        self.log_pairs = log_pairs
        self.force_log = force_log
        self.check_lora = check_lora
        self.scheduler: WeightDecayScheduler | None = None
        self.lora_report = None
        self._last_lambda: float | None = None

    # -- helpers -------------------------------------------------------------------------------------
    def _schedules(self) -> list:
        if self.scheduler is None:
            return []
        return list(self.scheduler.schedules)

    def _auto_offs(self) -> list:
        """The automatic turn-off schedules among the driven ones."""
        return [s for s in {id(s): s for s in self._schedules()}.values() if hasattr(s, "observe")]

    def _observe(self, step: int, metrics: dict) -> bool:
        """Feed metrics to every schedule with ``observe``; True if one fired now."""
        fired = False
        for s in {id(s): s for s in self._schedules()}.values():
            if hasattr(s, "observe"):
                before = getattr(s, "triggered_at", None)
                s.observe(step, metrics)
                fired |= before is None and getattr(s, "triggered_at", None) is not None
        return fired

    def _reapply(self) -> None:
        """Set λ for the current scheduler step again (after a trigger changed the schedule)."""
        self.scheduler.last_epoch -= 1
        self.scheduler.step()

    def _state_path(self, args, step: int) -> str:
        return os.path.join(args.output_dir, f"checkpoint-{step}", STATE_FILE)

    # -- Trainer events --------------------------------------------------------------------------------
    def on_init_end(self, args, state, control, **kwargs):
        _put_first(self)
        return control

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        _put_first(self)  # also when added with trainer.add_callback after __init__
        if optimizer is None:
            raise RuntimeError("WeightDecayCallback: the Trainer passed no optimizer to on_train_begin")
        opt = _unwrap(optimizer)
        if self.scheduler is not None:
            self.scheduler.close()
        groups = self.groups if self.groups is not None else _default_groups(opt)
        horizon = state.max_steps if state.max_steps and state.max_steps > 0 else None
        self.scheduler = WeightDecayScheduler(
            opt, self.schedule, groups=groups, scale_by_initial=self.scale_by_initial, horizon=horizon
        )
        if state.global_step == 0 and horizon is not None:
            k = self.scheduler.group_indices[0]
            warn_if_small(self.scheduler.planned_a(horizon, _lr_at(lr_scheduler, opt, k)), f"{self.schedule!r} over max_steps={horizon}")
        if state.global_step > 0:  # resumed from a checkpoint
            path = self._state_path(args, state.global_step)
            if os.path.isfile(path):
                with open(path) as fh:
                    self.scheduler.load_state_dict(json.load(fh)["scheduler"])
            else:
                warnings.warn(
                    f"resuming at step {state.global_step} without {path}: the weight-decay schedule restarts "
                    "its step count there, but a_t starts again from 0",
                    stacklevel=2,
                )
                self.scheduler.last_epoch = state.global_step - 1
                self.scheduler.step()
        self._last_lambda = None
        if self.monitor is None and self.monitor_every is not None and model is not None:
            self.monitor = SpectralMonitor(model, every=int(self.monitor_every), per_head=self.per_head, include=self.include)
        if self.check_lora and model is not None:
            self.lora_report = check_lora_decay(model, opt, scheduler=self.scheduler)
        if self.monitor is not None and state.global_step % self.monitor.every == 0:
            self._observe(state.global_step - 1, self.monitor.compute(state.global_step))
            self._reapply()
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.scheduler is None:
            return control
        wd = self.scheduler.get_last_wd()
        self._last_lambda = wd[0] if wd else 0.0
        t = state.global_step - 1  # the optimizer step just taken
        if self.monitor is not None:
            metrics = self.monitor.step(state.global_step)
            if metrics:
                self._observe(t, metrics)
                if self.force_log:
                    control.should_log = True
        self.scheduler.step()  # λ_{t+1}
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or self.scheduler is None:
            return control
        if any(k.startswith(("eval_", "test_")) or k == "train_runtime" for k in logs):
            return control  # evaluation logs and the end-of-training summary
        if "loss" in logs and self._observe(state.global_step - 1, {"loss": logs["loss"], "train/loss": logs["loss"]}):
            self._reapply()  # the trigger came after λ_{t+1} was set: set it again
        extra = self.log_metrics()
        logs.update(extra)
        # Trainer.log stored a copy of logs in log_history before calling us: add ours there too
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.scheduler is not None and state.is_world_process_zero:
            path = self._state_path(args, state.global_step)
            if os.path.isdir(os.path.dirname(path)):
                write_json(path, {"scheduler": self.scheduler.state_dict(), "global_step": state.global_step})
        return control

    def on_train_end(self, args, state, control, **kwargs):
        for s in self._auto_offs():
            if s.triggered_at is None:
                warnings.warn(
                    f"{s!r} never fired in {state.global_step} steps: λ was never switched off by the signal",
                    stacklevel=2,
                )
        if self.scheduler is not None:
            self.scheduler.close()  # stop tracking a_t; the values stay readable
        return control

    # -- what is logged --------------------------------------------------------------------------------
    def log_metrics(self) -> dict[str, float]:
        """The keys added to a Trainer log now."""
        if self.scheduler is None:
            return {}
        lam = self._last_lambda if self._last_lambda is not None else (self.scheduler.get_last_wd() or [0.0])[0]
        out: dict[str, float] = {"wd/lambda": float(lam), "wd/a": float(self.scheduler.a)}
        autos = self._auto_offs()
        if autos:
            fired = [s.triggered_at for s in autos if s.triggered_at is not None]
            out["wd/auto_off"] = 1.0 if fired else 0.0
            if fired:
                out["wd/triggered_at"] = float(min(fired))
        if self.monitor is not None and self.monitor.last:
            for k, v in self.monitor.last.items():
                if self.log_pairs or k.count("/") == 1 or (k.count("/") == 2 and k.split("/")[1] in ("attention", "attention_head", "lora", "user")):
                    out[k] = float(v) if math.isfinite(v) else float("nan")
        return out

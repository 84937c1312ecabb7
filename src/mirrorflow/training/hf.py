"""Hugging Face ``Trainer`` support: any mirrorflow weight-decay schedule, a_t and ρ in the Trainer's logs.

:class:`WeightDecayCallback` wraps the Trainer's optimizer in a
:class:`~mirrorflow.training.scheduler.WeightDecayScheduler` when training begins, advances it after
every optimizer step, and adds to each Trainer log (so they reach ``state.log_history``, the console and
every ``report_to`` integration: the callback moves itself to the front of the Trainer's callback list,
ahead of the integrations, which otherwise receive the log before any user callback):

* ``wd/lambda``  λ_t of the last optimizer step (first driven param group),
* ``wd/a``       a_t = −Σ_{s<t} η_s λ_s (docs/theory.md#notation), read from the λ and η actually used,
* ``wd/auto_off`` 1 once an :class:`~mirrorflow.training.auto_off.AutoTurnOff` has fired, else 0, and
  ``wd/triggered_at`` the step at which it fired (a warning at the end of training if it never did),
* the aggregates of an optional :class:`~mirrorflow.training.monitor.SpectralMonitor`
  (``spectral/rho``, ``spectral/rho_mean``, ...; per-pair keys with ``log_pairs=True``).

Timing (step t = ``state.global_step − 1``, the optimizer step just taken): in ``on_step_end`` the
monitor measures when ``global_step % every == 0``, an ``AutoTurnOff`` schedule observes those metrics,
then the scheduler sets λ_{t+1}. A ``loss`` signal arrives in ``on_log``; if it fires there, λ_{t+1} is
set again. Schedules given as fractions of training (``turn_off(0.1, at=0.4)``) use ``max_steps`` as
their horizon; ``value=None`` (``turn_off(at=0.4)``) takes λ from the optimizer (``TrainingArguments.
weight_decay``). A planned a_∞ too small to matter is warned about when training starts. The callback's
state (a_t, the step, the auto-off trigger) is saved as ``mirrorflow_wd.json`` in each checkpoint folder
and restored when training resumes from it. The shared logic is :class:`~mirrorflow.training.driver.ScheduleDriver`.

Only this module imports ``transformers``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

try:
    from transformers import TrainerCallback
except ModuleNotFoundError as err:  # the hf extra is not installed
    raise ModuleNotFoundError(
        f"WeightDecayCallback needs transformers ({err.name} is missing): pip install 'mirrorflow[hf]'"
    ) from err

from ..store import write_json
from .driver import ScheduleDriver
from .lora_check import _unwrap

__all__ = ["WeightDecayCallback", "STATE_FILE"]

STATE_FILE = "mirrorflow_wd.json"


def _put_first(callback) -> None:
    """Move ``callback`` to the front of the Trainer's ``CallbackHandler`` list, found as the caller of
    the event, so its additions to a log reach the reporting integrations (which the Trainer puts before
    user callbacks). The list is replaced, not mutated: an ``on_*`` loop in progress is not disturbed."""
    frame = sys._getframe(2)  # _put_first ← on_* ← CallbackHandler.call_event
    handler = frame.f_locals.get("self")
    cbs = getattr(handler, "callbacks", None)
    if isinstance(cbs, list) and any(c is callback for c in cbs) and cbs[0] is not callback:
        handler.callbacks = [callback] + [c for c in cbs if c is not callback]


class WeightDecayCallback(ScheduleDriver, TrainerCallback):
    """Apply a weight-decay schedule to a ``transformers.Trainer`` and log λ_t, a_t and ρ.

    Args:
        schedule: a :class:`~mirrorflow.schedules.Schedule` (``turn_off``, ``linear_decay``, ``cosine_decay``,
            ``with_budget``, ...), an :class:`~mirrorflow.training.auto_off.AutoTurnOff`, or any
            ``step -> λ`` callable; one per driven group also works. Fractions of training are fractions
            of ``max_steps``; ``value=None`` takes λ from ``TrainingArguments.weight_decay``.
        groups: param groups to drive (indices or ``"name"``); default: those with non-zero weight decay,
            else those holding matrices.
        scale_by_initial: λ_t = group's initial weight_decay × schedule(t).
        monitor: a :class:`SpectralMonitor`, or ``None``. With ``monitor_every`` set and no monitor,
            one is built on the Trainer's model when training begins (``per_head``, ``include``).
        log_pairs: also put the per-pair spectral keys into the Trainer's logs (they are always in the
            monitor's CSV/TensorBoard output).
        force_log: make the Trainer log on every measuring step (else the latest measurement rides along
            with the Trainer's own ``logging_steps``).
        check_lora: run :func:`~mirrorflow.training.lora_check.check_lora_decay` when training begins.
    """

    def __init__(self, schedule, *, force_log: bool = False, **kwargs):
        super().__init__(schedule, **kwargs)
        self.force_log = force_log

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
        saved = None
        if state.global_step > 0:  # resumed from a checkpoint
            path = self._state_path(args, state.global_step)
            if os.path.isfile(path):
                with open(path) as fh:
                    saved = json.load(fh)["scheduler"]
            else:
                warnings.warn(
                    f"resuming at step {state.global_step} without {path}: the weight-decay schedule restarts "
                    "its step count there, but a_t starts again from 0",
                    stacklevel=2,
                )
        horizon = state.max_steps if state.max_steps and state.max_steps > 0 else None
        self.start(_unwrap(optimizer), model, horizon, state.global_step, lr_scheduler, saved, where="max_steps")
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.after_step(state.global_step) and self.force_log:
            control.should_log = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or self.scheduler is None:
            return control
        if any(k.startswith(("eval_", "test_")) or k == "train_runtime" for k in logs):
            return control  # evaluation logs and the end-of-training summary
        if "loss" in logs and self.observe(state.global_step - 1, {"loss": logs["loss"], "train/loss": logs["loss"]}):
            self.reapply()  # the trigger came after λ_{t+1} was set: set it again
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
        self.finish(state.global_step)
        return control

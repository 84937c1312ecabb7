"""Lightning support: ``WeightDecayMonitor``, a weight-decay schedule with λ, a_t and ρ in Lightning's loggers.

Lightning's ``LearningRateMonitor(log_weight_decay=True)`` logs λ; this callback also drives λ with any
mirrorflow schedule and logs the paper's accumulated regularization a_t = −Σ_{s<t} η_s λ_s and the
spectral ratio ρ of the attention / LoRA products (docs/training-tools.md#lightning). Without a schedule it
leaves λ as the optimizer has it and only logs.

Each optimizer step t = ``trainer.global_step − 1`` (gradient accumulation: once per step, not per batch)
is followed, in ``on_train_batch_end``, by :meth:`~mirrorflow.training.driver.ScheduleDriver.after_step`
and ``pl_module.log_dict`` of ``wd/lambda``, ``wd/a``, ``wd/auto_off`` / ``wd/triggered_at`` and the latest
``spectral/*`` aggregates, so they reach every logger of the Trainer at its ``log_every_n_steps``.
Fractions of training are fractions of ``max_steps`` (or ``estimated_stepping_batches``). The scheduler's
state is saved in Lightning checkpoints and restored on resume.

Only this module imports ``lightning``.
"""

from __future__ import annotations

import math

try:
    from lightning.pytorch.callbacks import Callback
except ModuleNotFoundError as err:  # lightning is not installed
    raise ModuleNotFoundError(
        f"WeightDecayMonitor needs Lightning ({err.name} is missing): pip install 'mirrorflow[lightning]'"
    ) from err

from .driver import ScheduleDriver

__all__ = ["WeightDecayMonitor"]


def _keep(step: int) -> float:
    return 1.0


class WeightDecayMonitor(ScheduleDriver, Callback):
    """Drive and log weight decay in a ``lightning.Trainer`` (module docstring).

    Args:
        schedule: as for :class:`~mirrorflow.training.hf.WeightDecayCallback`; ``None`` keeps the optimizer's λ
            (log only). ``value=None`` schedules (``turn_off(at=0.5)``) take λ from the optimizer.
        optimizer_index: which of ``trainer.optimizers`` to drive.
        prog_bar: also show the logged values in the progress bar.
        **kwargs: ``groups``, ``scale_by_initial``, ``monitor``, ``monitor_every``, ``per_head``, ``include``,
            ``log_pairs``, ``check_lora`` of :class:`~mirrorflow.training.driver.ScheduleDriver`.

    >>> WeightDecayMonitor(monitor_every=10).monitor_every
    10
    """

    def __init__(self, schedule=None, *, optimizer_index: int = 0, prog_bar: bool = False, **kwargs):
        if schedule is None:
            schedule = _keep
            kwargs["scale_by_initial"] = True
        super().__init__(schedule, **kwargs)
        self.optimizer_index = optimizer_index
        self.prog_bar = prog_bar
        self._saved: dict | None = None
        self._seen_step = -1

    def on_train_start(self, trainer, pl_module) -> None:
        if len(trainer.optimizers) <= self.optimizer_index:
            raise ValueError(
                f"WeightDecayMonitor: optimizer_index={self.optimizer_index}, "
                f"but the Trainer has {len(trainer.optimizers)} optimizer(s)"
            )
        opt = trainer.optimizers[self.optimizer_index]
        horizon = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if horizon is None:
            est = trainer.estimated_stepping_batches
            horizon = int(est) if math.isfinite(est) else None
        configs = trainer.lr_scheduler_configs
        lr_scheduler = next((c.scheduler for c in configs if c.scheduler.optimizer is opt), None)
        self.start(opt, pl_module, horizon, trainer.global_step, lr_scheduler, self._saved, where="max_steps")
        self._seen_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._seen_step:  # no optimizer step (gradient accumulation)
            return
        self._seen_step = trainer.global_step
        self.after_step(trainer.global_step)
        pl_module.log_dict(self.log_metrics(), on_step=True, on_epoch=False, prog_bar=self.prog_bar)

    def on_train_end(self, trainer, pl_module) -> None:
        self.finish(trainer.global_step)

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict()} if self.scheduler is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._saved = state_dict.get("scheduler")

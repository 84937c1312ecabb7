"""``ScheduleDriver``: what the Trainer and Lightning callbacks share, without importing either framework.

A training framework calls three things, in its own events:

* :meth:`ScheduleDriver.start` when training begins: wraps the optimizer in a
  :class:`~mirrorflow.training.scheduler.WeightDecayScheduler` (horizon = the run's number of optimizer
  steps, so ``turn_off(0.1, at=0.4)`` means 40 % of the run and ``turn_off(at=0.4)`` takes λ from the
  optimizer), restores a saved state on resume, warns when the planned a_∞ = −Σ η_t λ_t is too small to
  matter (:func:`~mirrorflow.training.scheduler.warn_if_small`), builds the spectral monitor, and
  measures once;
* :meth:`ScheduleDriver.after_step` after each optimizer step t = ``global_step − 1``: measures when
  ``global_step % every == 0``, lets an :class:`~mirrorflow.training.auto_off.AutoTurnOff` observe the
  measurement, then sets λ_{t+1};
* :meth:`ScheduleDriver.finish` when training ends (warns if an automatic turn-off never fired).

:meth:`ScheduleDriver.log_metrics` gives the keys the framework logs: ``wd/lambda`` (λ of the last step),
``wd/a`` (a_t), ``wd/auto_off`` / ``wd/triggered_at``, the monitor's aggregates (``spectral/rho``, ...) with
``spectral/step``, the global step at which they were measured (the latest measurement rides along with each
log, so with ``logging_steps`` ≠ ``monitor_every`` it can be older than the log), and a tracker's record
(``legendre/*`` with ``legendre/step``, :meth:`~mirrorflow.training.tracker.LegendreTracker.metrics`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch

from ..schedules import TriggeredSchedule, as_count
from .lora_check import check_lora_decay
from .monitor import SpectralMonitor
from .scheduler import WeightDecayScheduler, warn_if_small

__all__ = ["ScheduleDriver", "default_groups", "lr_of"]


def default_groups(optimizer: torch.optim.Optimizer) -> list[int]:
    """Groups to drive: those with non-zero weight decay; if none, those holding any ≥2-D tensor.

    The Trainer builds a decay group (weights) and a no-decay group (biases, LayerNorm: 1-D tensors).
    With ``weight_decay = 0`` both have λ = 0; the matrices' group is then chosen.
    """
    pg = optimizer.param_groups
    nonzero = [i for i, g in enumerate(pg) if g.get("weight_decay", 0.0) != 0]
    if nonzero:
        return nonzero
    mats = [i for i, g in enumerate(pg) if any(p.dim() >= 2 for p in g["params"])]
    return mats or list(range(len(pg)))


def lr_of(lr_scheduler, optimizer: torch.optim.Optimizer, group: int) -> Callable[[int], float]:
    """η_t of a param group as a function of the step, read from a ``LambdaLR`` (the Trainer's linear,
    cosine and constant schedules); the current learning rate for other schedulers."""
    lambdas = getattr(lr_scheduler, "lr_lambdas", None)
    base = getattr(lr_scheduler, "base_lrs", None)
    if lambdas is not None and base is not None and group < len(lambdas):
        f, b = lambdas[group], float(base[group])
        return lambda t: b * float(f(t))
    lr = float(optimizer.param_groups[group]["lr"])
    return lambda t: lr


class ScheduleDriver:
    """Drive a weight-decay schedule from a framework's training events (module docstring).

    Args:
        schedule: a :class:`~mirrorflow.schedules.Schedule`, an :class:`~mirrorflow.training.auto_off.AutoTurnOff`
            or any ``step -> λ`` callable (one per driven group also works).
        groups: param groups to drive (indices or ``"name"``); default :func:`default_groups`.
        scale_by_initial: λ_t = group's initial weight_decay × schedule(t).
        monitor: a :class:`SpectralMonitor`; with ``monitor_every`` and no monitor, one is built on the
            model when training begins (``per_head``, ``include``).
        log_pairs: also log the per-pair spectral keys.
        check_lora: run :func:`~mirrorflow.training.lora_check.check_lora_decay` when training begins.
        tracker: a :class:`~mirrorflow.training.tracker.LegendreTracker` attached to the optimizer when
            training begins; its latest record is logged as ``legendre/residual``, ``legendre/a`` (and
            ``legendre/x_pred_dist`` with data). The model's forward must pass x = g(w) through
            ``tracker.watch``.
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
        check_lora: bool = True,
        tracker=None,
    ):
        monitor_every = None if monitor_every is None else as_count("monitor_every", monitor_every)
        self.schedule = schedule
        self.groups = groups
        self.scale_by_initial = scale_by_initial
        self.monitor = monitor
        self.monitor_every = monitor_every
        self.per_head = per_head
        self.include = include
        self.log_pairs = log_pairs
        self.check_lora = check_lora
        self.tracker = tracker
        self.scheduler: WeightDecayScheduler | None = None
        self.lora_report = None
        self._last_lambda: float | None = None

    # -- schedules with a trigger --------------------------------------------------------------------
    def _schedules(self) -> list:
        return [] if self.scheduler is None else list({id(s): s for s in self.scheduler.schedules}.values())

    def auto_offs(self) -> list:
        """The automatic turn-off schedules among the driven ones."""
        return [s for s in self._schedules() if isinstance(s, TriggeredSchedule)]

    def observe(self, step: int, metrics: dict) -> bool:
        """Feed metrics to every schedule with ``observe``; True if one fired now."""
        fired = False
        for s in self.auto_offs():
            before = s.triggered_at
            s.observe(step, metrics)
            fired |= before is None and s.triggered_at is not None
        return fired

    def reapply(self) -> None:
        """Set λ for the current scheduler step again (after a trigger changed the schedule)."""
        self.scheduler.last_epoch -= 1
        self.scheduler.step()

    # -- events ----------------------------------------------------------------------------------------
    def start(
        self,
        optimizer,
        model,
        horizon: int | None,
        global_step: int,
        lr_scheduler=None,
        state: dict | None = None,
        where: str = "the run",
    ) -> None:
        """Training begins (or resumes at ``global_step`` with the scheduler ``state``)."""
        if self.scheduler is not None:
            self.scheduler.close()
        groups = self.groups if self.groups is not None else default_groups(optimizer)
        self.scheduler = WeightDecayScheduler(
            optimizer,
            self.schedule,
            groups=groups,
            scale_by_initial=self.scale_by_initial,
            horizon=horizon,
            horizon_name=where,
        )
        if state is not None:
            self.scheduler.load_state_dict(state)
        elif global_step > 0:  # resumed without a saved state: keep the step count, a_t restarts at 0
            self.scheduler.last_epoch = global_step - 1
            self.scheduler.step()
        elif horizon is not None:
            k = self.scheduler.group_indices[0]
            warn_if_small(
                self.scheduler.planned_a(horizon, lr_of(lr_scheduler, optimizer, k)),
                f"{self.schedule!r} over {where}={horizon}",
            )
        self._last_lambda = None
        if self.monitor is None and self.monitor_every is not None and model is not None:
            self.monitor = SpectralMonitor(
                model, every=int(self.monitor_every), per_head=self.per_head, include=self.include
            )
        if self.check_lora and model is not None:
            self.lora_report = check_lora_decay(model, optimizer, scheduler=self.scheduler)
        if self.tracker is not None:
            self.tracker.attach(optimizer)
        if self.monitor is not None and global_step % self.monitor.every == 0:
            self.observe(global_step - 1, self.monitor.compute(global_step))
            self.reapply()

    def after_step(self, global_step: int) -> dict[str, float]:
        """After optimizer step t = ``global_step − 1``: measure (if due), observe, set λ_{t+1}.
        Returns the measurement ({} when none was due)."""
        if self.scheduler is None:
            return {}
        wd = self.scheduler.get_last_wd()
        self._last_lambda = wd[0] if wd else 0.0
        metrics = self.monitor.step(global_step) if self.monitor is not None else {}
        if metrics:
            self.observe(global_step - 1, metrics)
        self.scheduler.step()  # λ_{t+1}
        return metrics

    def finish(self, global_step: int) -> None:
        """Training ends: warn about a turn-off that never fired; stop tracking a_t (values stay readable)."""
        for s in self.auto_offs():
            if s.triggered_at is None:
                warnings.warn(
                    f"{s!r} never fired in {global_step} steps: λ was never switched off by the signal", stacklevel=3
                )
        if self.scheduler is not None:
            self.scheduler.close()
        if self.tracker is not None:
            self.tracker.close()

    # -- what is logged --------------------------------------------------------------------------------
    def log_metrics(self) -> dict[str, float]:
        """The keys to log now: λ of the last step, a_t, the turn-off state, the latest spectral aggregates."""
        if self.scheduler is None:
            return {}
        lam = self._last_lambda if self._last_lambda is not None else (self.scheduler.get_last_wd() or [0.0])[0]
        out: dict[str, float] = {"wd/lambda": float(lam), "wd/a": float(self.scheduler.a)}
        autos = self.auto_offs()
        if autos:
            fired = [s.triggered_at for s in autos if s.triggered_at is not None]
            out["wd/auto_off"] = 1.0 if fired else 0.0
            if fired:
                out["wd/triggered_at"] = float(min(fired))
        if self.monitor is not None and self.monitor.last:
            pair_names = set(self.monitor.pair_names)
            for k, v in self.monitor.last.items():
                if k.startswith("wd/"):
                    continue
                per_pair = k.count("/") >= 2 and k[len("spectral/") : k.rindex("/")] in pair_names
                if self.log_pairs or not per_pair:  # aggregates: spectral/<metric>, spectral/<kind>/<metric>
                    out[k] = float(v) if math.isfinite(v) else float("nan")
            if self.monitor.last_step is not None:  # the global step of the measurement (≤ the logging step)
                out["spectral/step"] = float(self.monitor.last_step)
        if self.tracker is not None:
            out.update(self.tracker.metrics())
        return out

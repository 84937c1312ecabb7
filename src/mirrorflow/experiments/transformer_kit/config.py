"""What the transformer experiments' configs share (typed sub-configs, :func:`mirrorflow.config.sub_config`):
when weight decay switches off (a step or a fraction of the run, :func:`mirrorflow.schedules.switch_off_step`),
the automatic switch-off, the speaker task's text, and where and how a run executes."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import require
from ...errors import ConfigError
from ...runtime import PRECISIONS, check_device, precision_for
from ...schedules import switch_off_step


def off_step(key: str, at: int | float, steps: int, unit: str = "steps", strict: bool = True) -> int | float:
    """The step (or epoch) of ``at`` — a step ``1..steps-1`` or a fraction of the run — as
    :func:`~mirrorflow.schedules.switch_off_step` resolves it, raising :class:`ConfigError` naming ``key``.

    ``strict=False`` (a config's ``__post_init__``, which normalises ``0.4`` to its step so that both spellings
    are one config) returns an invalid ``at`` unchanged: ``validate`` reports it."""
    try:
        return switch_off_step(key, at, steps, unit)
    except ValueError as e:
        if strict:
            raise ConfigError(str(e)) from None
        return at


@dataclass(frozen=True)
class AutoOff:
    """The automatic switch-off (``auto_off``, ``auto_tol``, ``auto_window``): an arm whose weight decay
    :class:`~mirrorflow.training.auto_off.AutoTurnOff` switches off when ρ (``spectral/rho``) reaches a
    plateau — a relative change below ``tol`` over ``window`` evaluations."""

    off: bool = False
    tol: float = 0.05
    window: int = 2

    def validate(self) -> None:
        require(self.window > 0, f"auto_window must be positive, got {self.window}")
        require(self.tol >= 0, f"auto_tol must be non-negative, got {self.tol}")

    def kwargs(self) -> dict | None:
        """``AutoTurnOff``'s keyword arguments, or None when the automatic arm is off."""
        if not self.off:
            return None
        return {"signal": "spectral/rho", "mode": "plateau", "tol": self.tol, "window": self.window}


@dataclass(frozen=True)
class SpeakerData:
    """The speaker task on tiny_shakespeare (:class:`.tasks.SpeakerTask`): ``speakers`` classes, lines cut
    to ``max_length`` tokens, ``val_size`` validation lines (0: the task's default split)."""

    speakers: int = 4
    max_length: int = 24
    val_size: int = 0

    def validate(self) -> None:
        require(self.speakers >= 2, f"speakers must be at least 2, got {self.speakers}")


@dataclass(frozen=True)
class Runtime:
    """Where and how a run executes; none of it changes the numbers except ``precision``
    (:mod:`mirrorflow.runtime`; ``workers`` processes compute the groups, ``threads`` torch threads each)."""

    device: str = "auto"
    precision: str = "f32"
    threads: int = 1
    workers: int = 1

    def validate(self) -> None:
        check_device(self.device)
        require(
            self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        )
        require(self.threads >= 0, f"threads must be non-negative, got {self.threads}")
        require(self.workers >= 1, f"workers must be at least 1, got {self.workers}")

    @property
    def resolved_precision(self) -> str:
        """``f32`` or ``bf16`` (``auto`` resolved on this machine's device; :mod:`mirrorflow.runtime`)."""
        return precision_for(self.precision, self.device)

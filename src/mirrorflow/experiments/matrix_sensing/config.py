"""The configuration of one matrix-sensing run (Sec. 5, App. C; docs/matrix-sensing.md): the problem's sizes,
the parameterization, and the weight-decay schedule λ_t with the accumulated regularization
a_t = −η Σ_{s<t} λ_s that enters R_a of Eq. (17).

When weight decay switches off (``schedule=turn_off``), or where a decaying schedule (``linear``/``cosine``)
reaches 0, is ``off_at``: a step or a fraction of the run, checked by
:func:`mirrorflow.schedules.switch_off_step` like every experiment's switch-off (``off`` is its old name).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ...config import check_rate, require, user_words
from ...errors import ConfigError
from ...runtime import resolve_device, resolve_dtype
from ...schedules import SCHEDULE_KINDS, Schedule, from_spec, switch_off_step

PARAMS = ("uu", "linear")
DECAYS = ("exact", "gradient")
PENALTIES = ("half", "full")  # ½λ‖U‖_F² or λ‖U‖_F² (the quadratic parameterization only)
SWITCHED = ("turn_off", "linear", "cosine")  # the schedules that use off_at


@dataclass(frozen=True)
class Config:
    """One matrix-sensing run. ``m=0`` means m = 3·n·r (Wu & Rebeschini's informative default).

    ``off_at``: for ``turn_off`` the step where λ switches off, for ``linear``/``cosine`` the step where the
    decay reaches 0; a step ``1..steps-1`` or a fraction of ``steps`` (:func:`~mirrorflow.schedules.switch_off_step`).
    A fraction keeps its exact point: when ``off_at·steps`` is not a whole step, the last step carries the
    fractional part of λ, so schedules of equal budget Σλ stay equal (Table 2's arms).
    """

    ALIASES: ClassVar[dict[str, str]] = {"off": "off_at"}  # old key → new key (config.build)

    n: int = 50
    r: int = 5
    m: int = 0
    seed: int = 0
    param: str = "uu"  # "uu": W = UUᵀ with weight decay on U; "linear": W with a nuclear-norm prox
    init_scale: float = 0.1  # W_0 = init_scale · I
    lr: float = 0.25
    steps: int = 4000
    schedule: str = "constant"  # none | constant | turn_off | linear | cosine
    wd: float = 0.01  # λ (peak for linear/cosine)
    off_at: int | float = 0.5  # switch-off (turn_off) or zero-point (linear/cosine): a step, or a fraction of steps
    decay: str = "exact"
    penalty: str = "half"  # half: ½λ‖U‖_F² (factor e^{−ηλ}); full: λ‖U‖_F² (factor e^{−2ηλ})
    loss_threshold: float = 1e-6
    log_every: int = 20
    dtype: str = "float64"
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda

    @property
    def measurements(self) -> int:
        return self.m or 3 * self.n * self.r

    def validate(self) -> None:
        require(self.n > 0, f"n must be positive, got {self.n}")
        require(0 < self.r <= self.n, f"r must be in 1..n={self.n}, got {self.r}")
        require(self.m >= 0, f"m must be non-negative (0 = 3nr), got {self.m}")
        require(self.param in PARAMS, f"param must be one of {', '.join(PARAMS)}, got {self.param!r}")
        require(
            math.isfinite(self.init_scale) and self.init_scale > 0,
            f"init_scale must be positive, got {self.init_scale}",
        )
        require(math.isfinite(self.lr) and self.lr > 0, f"lr must be positive, got {self.lr}")
        require(self.steps > 0, f"steps must be positive, got {self.steps}")
        require(
            self.schedule in SCHEDULE_KINDS,
            f"schedule must be one of {', '.join(SCHEDULE_KINDS)}, got {self.schedule!r}",
        )
        check_rate("wd", self.wd, horizon=self.lr * self.steps)  # a = -lr·Σλ stays finite
        if self.schedule in SWITCHED:
            try:
                switch_off_step("off_at", self.off_at, self.steps, end_ok=self.schedule != "turn_off")
            except ValueError as e:
                raise ConfigError(str(e)) from None
        require(self.decay in DECAYS, f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        require(self.penalty in PENALTIES, f"penalty must be one of {', '.join(PENALTIES)}, got {self.penalty!r}")
        require(self.loss_threshold > 0, f"loss_threshold must be positive, got {self.loss_threshold}")
        require(self.log_every > 0, f"log_every must be positive, got {self.log_every}")
        resolve_dtype(self.dtype)  # ConfigError naming 'dtype'
        resolve_device(self.device)  # ConfigError naming 'device' (unknown name, or cuda without CUDA)
        self.lam_schedule()

    def lam_schedule(self) -> Schedule:
        """The weight-decay schedule λ_t of this run (``off_at`` a fraction of ``steps`` when it is a float in
        [0, 1], else a step: the reading of :func:`~mirrorflow.schedules.switch_off_step`)."""
        at = self.off_at
        if at > 1 and float(at).is_integer():
            at = int(round(at))
        try:
            return from_spec(self.schedule, self.wd, at, self.steps)
        except ValueError as e:
            raise ConfigError(
                user_words(str(e), {"at": "off_at", "until": "off_at", "value": "wd", "horizon": "steps"})
            ) from None

    def ignored_fields(self) -> tuple[str, ...]:
        """Fields this config does not use (normalised to their defaults before hashing, see
        :func:`mirrorflow.config.build`): ``schedule=none`` uses neither ``wd`` nor ``off_at``, ``constant`` no
        ``off_at``."""
        return {"none": ("wd", "off_at"), "constant": ("off_at",)}.get(self.schedule, ())

    def data_key(self) -> tuple:
        """Configurations with equal keys share the sensing data (and the logging grid) and run in one batch."""
        return (
            self.n,
            self.r,
            self.measurements,
            self.seed,
            self.dtype,
            self.param,
            self.decay,
            self.log_every,
            self.loss_threshold,
            self.device,
            self.penalty,
        )

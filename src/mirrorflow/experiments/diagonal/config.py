"""The configuration of one diagonal-network run (App. D; docs/diagonal-and-sparse-coding.md): the regression
problem's sizes, the parameterization x = g(θ) and a sweep of weight decays λ, each switched off at the same
step (Remark 3.9: λ_t = λ for t < t_off, then 0).

When weight decay switches off is ``off_at``, a step or a fraction of ``steps``, checked by
:func:`mirrorflow.schedules.switch_off_step` like every experiment's switch-off. The old keys ``steps_on``
(steps with weight decay) and ``steps_off`` (steps after it) are still accepted and converted:
``steps = steps_on + steps_off``, ``off_at = steps_on`` (:meth:`Config.upgrade_keys`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

from ...config import check_count, check_rate, require
from ...errors import ConfigError
from ...runtime import resolve_device, resolve_dtype
from ...schedules import Schedule, switch_off_step, turn_off

MODELS = ("linear", "mw", "mwv", "power")
POWER_PENALTIES = ("l2", "matched")
DEFAULT_LR = {"linear": 0.05, "mw": 0.05, "mwv": 0.05, "power": 0.005}  # power: curvature ∝ (2k u^{2k-1})²
OLD_STEPS = {"steps_on": 4000, "steps_off": 16000}  # the old keys and their old defaults (upgrade_keys)


@dataclass(frozen=True)
class Config:
    """One parameterization with a sweep of weight decays λ (all run as one batch): ``steps`` steps, weight
    decay switched off at ``off_at`` (default 0.2 of the run: 4000 of 20000 steps)."""

    model: str = "mw"
    n_samples: int = 40  # N
    dim: int = 100  # d
    sparsity: int = 5  # non-zeros of x*
    seed: int = 0
    init_scale: float = 1.0  # s
    lr: float = 0.0  # η; 0 = the model's default (DEFAULT_LR)
    weight_decays: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 0.5, 1.0)
    steps: int = 20000  # the whole run
    off_at: float = 0.2  # weight decay switches off here: a step 1..steps-1 or a fraction of steps
    k: int = 2  # power model: x = u^{2k} - v^{2k}
    power_penalty: str = "l2"
    log_every: int = 50
    converged_loss: float = 1e-8  # a run counts as converged when its final train loss is below this
    dtype: str = "float64"
    threads: int = 1  # torch intra-op threads while running (tiny tensors: more threads only add overhead)
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda
    track: bool = False  # log ‖∇R_{a_t}(x_t) − μ_t‖/‖μ_t‖ (identity_residual; m⊙w, or power with a matched penalty)

    @classmethod
    def upgrade_keys(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The old keys ``steps_on=K steps_off=M`` → ``steps=K+M off_at=K`` (a missing one takes its old
        default, 4000 or 16000), with a one-line note on stderr (called by :func:`mirrorflow.config.build`)."""
        old = [k for k in OLD_STEPS if k in values]
        if not old:
            return values
        new = [k for k in ("steps", "off_at") if k in values]
        if new:
            raise ConfigError(
                f"{old[0]} and {new[0]}: steps_on/steps_off are the old way to give steps and off_at; give only "
                "steps and off_at"
            )
        on, off = (check_count(k, values.pop(k, default), low=0) for k, default in OLD_STEPS.items())
        print(
            f"note: steps_on/steps_off are now steps and off_at: steps_on={on} steps_off={off} is "
            f"steps={on + off} off_at={on}",
            file=sys.stderr,
        )
        return {**values, "steps": on + off, "off_at": on}

    @property
    def off_step(self) -> int:
        """The step at which weight decay switches off (``off_at`` as a step, :func:`switch_off_step`);
        ``off_at = steps`` (or 1.0) keeps weight decay on for the whole run (the old ``steps_off=0``)."""
        return switch_off_step("off_at", self.off_at, self.steps, end_ok=True)

    @property
    def step_size(self) -> float:
        """η: ``lr`` if given, else 0.05 (linear, m⊙w, m⊙w⊙v) or 0.005 (u^{2k} − v^{2k}, whose curvature
        grows like (2k u^{2k−1})²; at 0.05 it diverges from u_0 = 1)."""
        return self.lr or DEFAULT_LR[self.model]

    def validate(self) -> None:
        require(self.model in MODELS, f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        require(self.n_samples > 0, f"n_samples must be positive, got {self.n_samples}")
        require(
            self.dim > self.n_samples,
            f"dim must exceed n_samples (underdetermined), got dim={self.dim}, n_samples={self.n_samples}",
        )
        require(0 < self.sparsity <= self.dim, f"sparsity must be in 1..dim={self.dim}, got {self.sparsity}")
        require(
            math.isfinite(self.init_scale) and self.init_scale > 0,
            f"init_scale must be positive, got {self.init_scale}",
        )
        require(
            math.isfinite(self.lr) and self.lr >= 0,
            f"lr must be positive (or 0 for the model's default), got {self.lr}",
        )
        require(self.steps > 0, f"steps must be positive, got {self.steps}")
        try:
            on = self.off_step
        except ValueError as e:
            raise ConfigError(str(e)) from None
        require(len(self.weight_decays) > 0, "weight_decays must list at least one value")
        for v in self.weight_decays:
            check_rate("weight_decays", v, horizon=self.step_size * on)  # a = -lr·Σλ finite
        require(self.k >= 1, f"k must be at least 1, got {self.k}")
        require(
            self.power_penalty in POWER_PENALTIES,
            f"power_penalty must be one of {', '.join(POWER_PENALTIES)}, got {self.power_penalty!r}",
        )
        require(self.log_every > 0, f"log_every must be positive, got {self.log_every}")
        require(self.converged_loss > 0, f"converged_loss must be positive, got {self.converged_loss}")
        resolve_dtype(self.dtype)  # ConfigError naming 'dtype'
        require(self.threads >= 0, f"threads must be non-negative (0 = torch's default), got {self.threads}")
        resolve_device(self.device)  # ConfigError naming 'device' (unknown name, or cuda without CUDA)
        require(
            not self.track
            or self.model == "mw"
            or (self.model == "power" and (self.power_penalty == "matched" or self.k == 1)),
            f"track=true needs a commuting reparameterization with a Legendre function (model=mw, or "
            f"model=power with power_penalty=matched); model={self.model} has none (Cor. D.1, Thm D.2)",
        )

    def schedules(self) -> list[Schedule]:
        """λ_t = λ for t < off_step, then 0 (one turn-off schedule per weight decay)."""
        return [turn_off(lam, at=self.off_step) for lam in self.weight_decays]

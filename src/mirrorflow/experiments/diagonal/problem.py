"""The diagonal-network problem: sparse regression data and one batched reparameterized regression per model.

See :mod:`mirrorflow.experiments.diagonal` for the setting; every model is a family of
:mod:`mirrorflow.geometry` trained by :class:`~mirrorflow.engine.reparam_regression.ReparamRegression`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...engine.reparam_regression import ReparamRegression
from ...geometry import MW, DeepProduct, Identity, PowerDiff, Reparameterization


# --------------------------------------------------------------------------------------------- data
@dataclass
class RegressionData:
    Z: torch.Tensor  # (N, d)
    y: torch.Tensor  # (N,)
    x_star: torch.Tensor  # (d,)

    @property
    def ratio_star(self) -> float:
        """‖x*‖₁/‖x*‖₂ of the ground truth (the dotted line of Fig. 9)."""
        return float(self.x_star.abs().sum() / self.x_star.norm())


def make_data(n_samples: int, dim: int, sparsity: int, seed: int, dtype: torch.dtype = torch.float64) -> RegressionData:
    """Z i.i.d. N(0,1); x* has ``sparsity`` non-zeros on the first coordinates, x*_i = ±(0.5 + |g_i|),
    g_i ~ N(0,1) (bounded away from 0 so every true coordinate is visible), sorted by decreasing
    magnitude so that x_1, the coordinate the paper reports (App. D), is the largest; y = Z x*."""
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n_samples, dim, generator=g, dtype=torch.float64)
    vals = torch.randn(sparsity, generator=g, dtype=torch.float64)
    x_star = torch.zeros(dim, dtype=torch.float64)
    mags = 0.5 + vals.abs()
    order = torch.argsort(mags, descending=True)
    x_star[:sparsity] = (torch.sign(vals) * mags)[order]
    y = Z @ x_star
    return RegressionData(Z.to(dtype), y.to(dtype), x_star.to(dtype))


# ------------------------------------------------------------------------------------------ problem
def reparameterization(model: str, dim: int, k: int = 2, power_penalty: str = "l2") -> Reparameterization:
    """The ``geometry`` family of ``model``: linear → Identity, mw → MW, mwv → DeepProduct(3),
    power → PowerDiff(k, penalty = ``power_penalty``)."""
    if model == "linear":
        return Identity(dim)
    if model == "mw":
        return MW(dim)
    if model == "mwv":
        return DeepProduct(dim, 3)
    return PowerDiff(dim, k, penalty=power_penalty)


def initial_params(rep: Reparameterization, model: str, init_scale: float) -> torch.Tensor:
    """x_0 = 0 with parameter scale s (App. D): linear θ_0 = 0; m_0 = s, w_0 = 0; m_0 = w_0 = s, v_0 = 0;
    u_0 = v_0 = s. Flat parameter vector (d,)."""
    s = float(init_scale)
    parts = {name: torch.full(shape, s, dtype=torch.float64) for name, shape in rep.parts.items()}
    if model != "power":
        last = list(parts)[-1]
        parts[last] = torch.zeros_like(parts[last])
    return rep.pack(**parts)


class DiagonalNetwork(ReparamRegression):
    """``BatchedProblem``: C weight decays of one parameterization on shared data (``init_scale``: one scale
    for all, or one per configuration).

    The step is ``engine.reparam_regression``'s exact-decay step (a GD step on f, then the family's decay
    flow for ηλ_t); state ``w`` (C, d) is the family's flat parameter vector (``rep.unpack`` gives the
    factors). This class adds only the App. D metrics.
    """

    def __init__(
        self,
        data: RegressionData,
        model: str,
        n_configs: int,
        init_scale: float | Sequence[float],
        k: int = 2,
        power_penalty: str = "l2",
        device: str | torch.device = "cpu",
        track: bool = False,
    ):
        self.data = data
        self.model = model
        rep = reparameterization(model, data.Z.shape[1], k, power_penalty)
        if isinstance(init_scale, (int, float)):
            self.init_scale = float(init_scale)
            w0 = initial_params(rep, model, init_scale)
        else:  # one scale per configuration (a phase diagram over init_scale)
            self.init_scale = [float(s) for s in init_scale]
            w0 = torch.stack([initial_params(rep, model, s) for s in self.init_scale])
        super().__init__(
            rep,
            data.Z,
            data.y,
            w0,
            n_configs,
            decay="exact",
            dtype=data.Z.dtype,
            device=device,
            track=track,
            dual=track,
        )
        self.x_star = data.x_star.to(self.device)

    def metrics(self, state) -> dict[str, torch.Tensor]:
        x = self.x_of(state)
        r = self.residual(x)
        l2 = x.norm(dim=1)
        l1 = x.abs().sum(dim=1)
        tiny = torch.finfo(x.dtype).tiny
        return {
            "train_loss": 0.5 * (r * r).mean(dim=1),
            "dist": (x - self.x_star).norm(dim=1),
            "l1_l2": torch.where(l2 > 0, l1 / l2.clamp_min(tiny), torch.zeros_like(l1)),
            "l1": l1,
            "x1": x[:, 0],
            **self.tracked(state, x),
        }

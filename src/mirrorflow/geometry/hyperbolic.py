"""Hyperbolic entropy (Eq. 9) and entropy (Eq. 10): R_a for x = m⊙w and x = u² − v² with weight decay.

**Eq. (9)** (m⊙w, h = ½(‖m‖² + ‖w‖²), general init |m_0| ≠ |w_0|; docs/theory.md#legendre-mw). Per coordinate

    x_0 = m_0 w_0,   γ_0 = ½|m_0² − w_0²|,   γ_a = e^{2a} γ_0,   s_0 = asinh(x_0/γ_0),
    R_a(x) = ½ Σ_i [x_i asinh(x_i/γ_{a,i}) − sqrt(x_i² + γ_{a,i}²) − x_i s_{0,i}],
    ∇R_a(x) = ½ [asinh(x/γ_a) − s_0],   x(μ) = γ_a sinh(2μ + s_0),   Q_a(μ) = ½ γ_a cosh(2μ + s_0),
    minimiser x*_a = e^{2a} x_0,  conserved m_t² − w_t² = e^{2a_t}(m_0² − w_0²).

The class is written with a general rate β (x(μ) = γ sinh(βμ + s_0), R = (1/β)[...]): β = 2 for m⊙w and
β = 4, γ_a = 2e^{4a}|u_0 v_0|, s_0 = log|u_0/v_0| for x = u² − v² with h = ‖u‖² + ‖v‖² (the k = 1 limit of
Eq. 11, docs/theory.md#legendre-u2v2).

**Eq. (10)** (m⊙w with coupled init m_0 = ±w_0, so sign(x) = sign(x_0); docs/theory.md#legendre-mw-coupled) and,
with β = 4, the eigenvalue form of **Eq. (17)** (W = UUᵀ):

    R_a(x) = (1/β) Σ_i [|x_i| log(|x_i| / (|x_{0,i}| e^{c a})) − |x_i|],   x(μ) = x_0 e^{c a + β σ μ},

with σ = sign(x_0) and c = 2. For β = 2 this is ½ Σ [x log x − x − x log x_0 − 2a x] (Eq. 10).
"""

from __future__ import annotations

import torch

from ._num import F64, LOG2, as64, asinh_ratio, cosh_scaled, sinh_scaled
from .legendre import LegendreFunction


class HyperbolicEntropy(LegendreFunction):
    """Time-dependent hyperbolic entropy, Eq. (9). Construct with :meth:`from_mw` or :meth:`from_u2v2`."""

    name = "hyperbolic entropy R_a (Eq. 9)"

    def __init__(self, s0: torch.Tensor, log_gamma: torch.Tensor, beta: float, a: float):
        super().__init__(a)
        self.s0 = torch.as_tensor(s0, dtype=F64)
        self.log_gamma = torch.as_tensor(log_gamma, dtype=F64).expand_as(self.s0).clone()
        self.beta = float(beta)
        self.shape = tuple(self.s0.shape)
        if not bool(torch.isfinite(self.log_gamma).all()):
            raise ValueError(
                "hyperbolic entropy needs γ_0 > 0 in every coordinate (|m_0| ≠ |w_0|); "
                "use the coupled entropy (Eq. 10) for m_0 = ±w_0"
            )

    @classmethod
    def from_mw(cls, m0, w0, a: float) -> HyperbolicEntropy:
        """Eq. (9) from the initialization (m_0, w_0) and accumulated regularization a."""
        m0, _ = as64(m0)
        w0, _ = as64(w0)
        log_g0 = torch.log((m0 - w0).abs()) + torch.log((m0 + w0).abs()) - LOG2
        s0 = asinh_ratio(m0 * w0, log_g0)
        return cls(s0, 2.0 * float(a) + log_g0, 2.0, a)

    @classmethod
    def from_u2v2(cls, u0, v0, a: float) -> HyperbolicEntropy:
        """x = u² − v², h = ‖u‖² + ‖v‖²: γ_a = 2e^{4a}|u_0 v_0|, s_0 = log|u_0/v_0|, β = 4."""
        u0, _ = as64(u0)
        v0, _ = as64(v0)
        lu, lv = torch.log(u0.abs()), torch.log(v0.abs())
        return cls(lu - lv, LOG2 + 4.0 * float(a) + lu + lv, 4.0, a)

    @property
    def gamma(self) -> torch.Tensor:
        """γ_a per coordinate."""
        return torch.exp(self.log_gamma)

    def _value(self, x):
        g = torch.exp(self.log_gamma)
        t = x * asinh_ratio(x, self.log_gamma) - torch.hypot(x, g) - x * self.s0
        return t.sum(-1) / self.beta

    def _grad(self, x):
        return (asinh_ratio(x, self.log_gamma) - self.s0) / self.beta

    def _hess(self, x):
        return 1.0 / (self.beta * torch.hypot(x, torch.exp(self.log_gamma)))

    def _grad_inverse(self, mu):
        return sinh_scaled(self.beta * mu + self.s0, self.log_gamma)

    def _conjugate(self, mu):
        return cosh_scaled(self.beta * mu + self.s0, self.log_gamma).sum(-1) / self.beta

    def _dual_hess(self, mu):
        return self.beta * cosh_scaled(self.beta * mu + self.s0, self.log_gamma)


class CoupledEntropy(LegendreFunction):
    """Entropy of Eq. (10) (β = 2) / eigenvalue entropy of Eq. (17) (β = 4); domain sign(x) = sign(x_0)."""

    name = "entropy R_a (Eq. 10)"
    domain_text = "x_i ≠ 0 with the sign of x_0,i"

    def __init__(self, x0, a: float, beta: float = 2.0, rate: float = 2.0):
        super().__init__(a)
        x0, _ = as64(x0)
        if not bool((x0 != 0).all()) or not bool(torch.isfinite(x0).all()):
            raise ValueError("the entropy (Eq. 10) needs x_0 ≠ 0 in every coordinate (m_0 = ±w_0 ≠ 0)")
        self.sigma = torch.sign(x0)
        self.log_scale = torch.log(x0.abs()) + rate * self.a  # log |x*_a|
        self.beta = float(beta)
        self.rate = float(rate)
        self.shape = tuple(x0.shape)

    def _in_domain(self, x):
        return (torch.isfinite(x) & (x * self.sigma > 0)).all(-1)

    def _value(self, x):
        ax = x.abs()
        return (ax * (torch.log(ax) - self.log_scale) - ax).sum(-1) / self.beta

    def _grad(self, x):
        return self.sigma * (torch.log(x.abs()) - self.log_scale) / self.beta

    def _hess(self, x):
        return 1.0 / (self.beta * x.abs())

    def _grad_inverse(self, mu):
        return self.sigma * torch.exp(self.log_scale + self.beta * self.sigma * mu)

    def _conjugate(self, mu):
        return torch.exp(self.log_scale + self.beta * self.sigma * mu).sum(-1) / self.beta

    def _dual_hess(self, mu):
        return self.beta * torch.exp(self.log_scale + self.beta * self.sigma * mu)


def l1_coefficient(x0, a: float, beta: float = 2.0) -> torch.Tensor:
    """Coefficient of ‖x‖₁ in Eq. (10) on x ≥ 0: −(log x_0 + 2a)/β ("modulates between maximizing and
    minimizing the L1 norm", docs/theory.md#legendre-mw-coupled); positive = L1 is penalised."""
    x0, _ = as64(x0)
    return -(torch.log(x0.abs()) + 2.0 * float(a)) / beta


__all__ = ["HyperbolicEntropy", "CoupledEntropy", "l1_coefficient"]

"""R_a for the deep diagonal parameterization x = u^{2k} − v^{2k}, k > 1, h = Σ u^{2k} + v^{2k} (Eq. 11).

docs/theory.md#legendre-power (Woodworth et al. 2020 reparameterization; Example 3.14). With κ = 4k(k−1),
c_u = u_0^{2−2k}, c_v = v_0^{2−2k}, the flow integrates to u_t^{2−2k} = c_u − κ(μ_t + a_t),
v_t^{2−2k} = c_v + κ(μ_t − a_t), so

    x(μ) = (c_u − κ(μ + a))^{−k/(k−1)} − (c_v + κ(μ − a))^{−k/(k−1)},                         (11)
    μ ∈ dom Q_a = (a − c_v/κ, c_u/κ − a),
    Q_a(μ) = (u² + v²)/(4k)   with u² = (c_u − κ(μ + a))^{−1/(k−1)}, v² = (c_v + κ(μ − a))^{−1/(k−1)}.

There is no closed form for R_a ("no analytical formula available", paper): ``grad`` inverts (11) per
coordinate by monotone root finding and ``value`` is the Legendre transform R_a(x) = μ(x) x − Q_a(μ(x))
(``value_by_quadrature`` gives the same number as R_a(x*) + ∫ μ). The root finder works with p = u²,
q = v², which satisfy p^{1−k} + q^{1−k} = S := c_u + c_v − 2κa for every μ and x = p^k − q^k; for x ≥ 0 it
bisects log q in the bracket [−log S, −log(S/2)]/(k−1) (log-space, logaddexp: no overflow for tiny
initial scales), and symmetrically for x < 0.

Sign convention (docs/theory.md#legendre-power): with μ = −∫∇f and a = −∫α ≤ 0, the dual interval *widens* as
a decreases (width S/κ); the paper's "range shrinking" refers to x barely moving until μ reaches ~|a|.
"""

from __future__ import annotations

import torch

from ._num import LOG2, as64
from .legendre import LegendreFunction


class PowerLegendre(LegendreFunction):
    """R_a of Eq. (11) for x = u^{2k} − v^{2k} with h = Σ u^{2k} + v^{2k}, k > 1."""

    name = "R_a of u^(2k) - v^(2k) (Eq. 11)"

    def __init__(self, u0, v0, k: float, a: float, bisection_steps: int = 64):
        super().__init__(a)
        k = float(k)
        if not k > 1:
            raise ValueError(f"Eq. (11) needs k > 1, got k={k:g} (k = 1 is the hyperbolic entropy)")
        u0, _ = as64(u0)
        v0, _ = as64(v0)
        if not bool(((u0 != 0) & (v0 != 0)).all()):
            raise ValueError("u^(2k) - v^(2k) needs u_0 ≠ 0 and v_0 ≠ 0 in every coordinate")
        self.k = k
        self.kappa = 4.0 * k * (k - 1.0)
        self.log_cu = (2.0 - 2.0 * k) * torch.log(u0.abs())
        self.log_cv = (2.0 - 2.0 * k) * torch.log(v0.abs())
        self.cu, self.cv = torch.exp(self.log_cu), torch.exp(self.log_cv)
        self.S = self.cu + self.cv - 2.0 * self.kappa * self.a
        if not bool((self.S > 0).all()):
            raise ValueError(f"a={self.a:g} leaves no dual domain for Eq. (11) (need c_u + c_v − 2κa > 0)")
        self.shape = tuple(u0.shape)
        self.steps = int(bisection_steps)

    def _dual_bounds(self):
        return self.a - self.cv / self.kappa, self.cu / self.kappa - self.a

    def _pq(self, mu):
        """log u² and log v² at dual point μ."""
        e = 1.0 / (self.k - 1.0)
        P = self.cu - self.kappa * (mu + self.a)
        Qv = self.cv + self.kappa * (mu - self.a)
        return -e * torch.log(P), -e * torch.log(Qv)

    def _grad_inverse(self, mu):
        lp, lq = self._pq(mu)
        return torch.exp(self.k * lp) - torch.exp(self.k * lq)

    def _conjugate(self, mu):
        lp, lq = self._pq(mu)
        return (torch.exp(lp) + torch.exp(lq)).sum(-1) / (4.0 * self.k)

    def _dual_hess(self, mu):
        lp, lq = self._pq(mu)
        return self._dxdmu(lp, lq)

    def _dxdmu(self, lp, lq):
        k = self.k
        return 4.0 * k * k * (torch.exp((2 * k - 1) * lp) + torch.exp((2 * k - 1) * lq))

    def _solve_pq(self, x):
        """(log p, log q) with p^k − q^k = x and p^{1−k} + q^{1−k} = S (monotone bisection in log space)."""
        k = self.k
        e = 1.0 / (k - 1.0)
        logS = torch.log(self.S).expand_as(x)
        lx = torch.log(x.abs())
        lo = -logS * e
        hi = lo + LOG2 * e
        for _ in range(self.steps):
            mid = 0.5 * (lo + hi)
            lL = torch.logaddexp(lx, k * mid) / k
            G = torch.logaddexp((1 - k) * lL, (1 - k) * mid) - logS
            pos = G > 0
            lo = torch.where(pos, mid, lo)
            hi = torch.where(pos, hi, mid)
        s = 0.5 * (lo + hi)
        lL = torch.logaddexp(lx, k * s) / k
        positive = x >= 0
        return torch.where(positive, lL, s), torch.where(positive, s, lL)

    def _mu_of(self, lp, lq):
        k = self.k
        P = torch.exp((1 - k) * lp)
        Qv = torch.exp((1 - k) * lq)
        return 0.5 * ((self.a + (Qv - self.cv) / self.kappa) + ((self.cu - P) / self.kappa - self.a))

    def _grad(self, x):
        lp, lq = self._solve_pq(x)
        return self._mu_of(lp, lq)

    def _hess(self, x):
        lp, lq = self._solve_pq(x)
        return 1.0 / self._dxdmu(lp, lq)

    def _value(self, x):
        lp, lq = self._solve_pq(x)
        mu = self._mu_of(lp, lq)
        return (mu * x - (torch.exp(lp) + torch.exp(lq)) / (4.0 * self.k)).sum(-1)


def balanced_init(x0, scale: float, k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """u_0, v_0 > 0 with u_0^{2k} − v_0^{2k} = x_0 and u_0^{2k} v_0^{2k} = scale^{4k} (the sparse-coding
    code's init, docs/theory.md#exp-sparse-coding, has scale^{4k} = 1/4)."""
    x0, _ = as64(x0)
    c = 2.0 * float(scale) ** (2 * k)
    r = torch.sqrt(x0 * x0 + c * c)
    up = 0.5 * (x0 + r)
    vp = c * c / (4.0 * up)  # = (−x0 + r)/2 without cancellation
    return up ** (1.0 / (2 * k)), vp ** (1.0 / (2 * k))


__all__ = ["PowerLegendre", "balanced_init"]

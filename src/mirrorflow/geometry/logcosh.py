"""R_a for x = log u − log v with h = Σ log u + log v (App. E; docs/theory.md#legendre-log, log-cosh form).

The flow gives u_t² = u_0² + 2μ_t + 2a_t and v_t² = v_0² − 2μ_t + 2a_t, hence

    x(μ) = ½ log((u_0² + 2a + 2μ) / (v_0² + 2a − 2μ)),   μ ∈ (−(u_0² + 2a)/2, (v_0² + 2a)/2),
    R_a(x) = Σ_i [A_i log cosh x_i + B_i x_i],   A = (u_0² + v_0² + 4a)/4,   B = (v_0² − u_0²)/4,
    ∇R_a(x) = A tanh x + B,   minimiser tanh x*_a = (u_0² − v_0²)/(u_0² + v_0² + 4a).

The dual interval (B − A, B + A) has width (u_0² + v_0²)/2 + 2a: it shrinks as a decreases, and R_a
stops being defined at a = −(u_0² + v_0²)/4 (A = 0). For −(u_0²+v_0²)/4 < a ≤ −min(u_0², v_0²)/2 the
interval no longer contains 0 and R_a has no minimiser (the flow without gradient would hit u = 0 or
v = 0). With a balanced init u_0 = v_0 the function is the "log-cosh with vertical rescaling" of the paper
(Fig. 12): R_a = ((u_0² + 2a)/2) Σ log cosh x.
"""

from __future__ import annotations

import torch

from ._num import as64, logcosh, sech2
from .legendre import LegendreFunction


class LogCoshLegendre(LegendreFunction):
    """R_a(x) = Σ A log cosh x + B x for the log parameterization (App. E)."""

    name = "log-cosh R_a (App. E)"

    def __init__(self, u0, v0, a: float):
        super().__init__(a)
        u0, _ = as64(u0)
        v0, _ = as64(v0)
        self.A = (u0 * u0 + v0 * v0 + 4.0 * self.a) / 4.0
        self.B = (v0 * v0 - u0 * u0) / 4.0
        if not bool((self.A > 0).all()):
            raise ValueError(
                f"a={self.a:g} is below −(u_0² + v_0²)/4 = {float((-(u0 * u0 + v0 * v0) / 4).max()):.4g}: "
                "the log parameterization's flow has left its domain (u or v reached 0)"
            )
        self.shape = tuple(u0.shape)

    def _dual_bounds(self):
        return self.B - self.A, self.B + self.A

    def _value(self, x):
        return (self.A * logcosh(x) + self.B * x).sum(-1)

    def _grad(self, x):
        return self.A * torch.tanh(x) + self.B

    def _hess(self, x):
        return self.A * sech2(x)

    def _grad_inverse(self, mu):
        lo, hi = self._dual_bounds()
        return 0.5 * (torch.log(mu - lo) - torch.log(hi - mu))

    def _dual_hess(self, mu):
        lo, hi = self._dual_bounds()
        return 0.5 * (1.0 / (mu - lo) + 1.0 / (hi - mu))

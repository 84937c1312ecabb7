"""R_a for PSD matrices W = UUᵀ with h = ½‖U‖_F² (Corollary C.3, Eq. 17; docs/theory.md#legendre-uut,
docs/theory.md#factorized-products).

For W_0 = U_0U_0ᵀ ≻ 0 and sensing matrices that commute with each other and with W_0,

    R_a(W) = ¼ tr[W log W − W − W log W_0 − 2a W]
           = ¼ Σ_i [λ_i log λ_i − λ_i − λ_i log λ_{0,i} − 2a λ_i]        (17, common eigenbasis)
    ∇R_a(W) = ¼ (log W − log W_0 − 2a I),   W(M) = exp(log W_0 + 2a I + 4M),   Q_a(M) = ¼ tr W(M),

so along the flow λ_i(W_t) = λ_{0,i} e^{2a_t} e^{4μ_{t,i}} with M_t = −∫∇f(W_s) ds. For W_0 = α_0 I,
R_a(W) = ¼ Σ(λ log λ − λ) − ¼(log α_0 + 2a)‖W‖_* : weight decay (a < 0) adds a positive multiple of
the nuclear norm. The matrix formula is the natural extension to W that do not commute with W_0; the
paper's statement (and the identity ∇R_{a_t}(W_t) = M_t) is for the commuting case.

Points are symmetric (n, n) matrices (``event_dims = 2``); the Hessian is the (n, n, n, n) Fréchet
derivative of ¼ log (Daleckii–Krein divided differences).
"""

from __future__ import annotations

import torch

from ._num import F64, as64, divided_difference, frechet_tensor, sym_eigh, sym_fun
from .legendre import LegendreFunction


class SpectralEntropy(LegendreFunction):
    """Time-dependent spectral entropy of Eq. (17) on symmetric positive definite matrices."""

    name = "spectral entropy R_a (Eq. 17)"
    event_dims = 2
    separable = False
    domain_text = "W symmetric positive definite"

    def __init__(self, W0, a: float):
        super().__init__(a)
        W0, _ = as64(W0)
        if W0.dim() != 2 or W0.shape[0] != W0.shape[1]:
            raise ValueError(f"W_0 must be a square matrix, got shape {tuple(W0.shape)}")
        lam0, V0 = sym_eigh(W0)
        if not bool((lam0 > 0).all()):
            raise ValueError("Eq. (17) needs W_0 = U_0U_0ᵀ positive definite (U_0 of full rank)")
        self.W0 = 0.5 * (W0 + W0.T)
        self.lam0 = lam0
        self.logW0 = (V0 * torch.log(lam0)) @ V0.T
        n = W0.shape[0]
        self.n = n
        self.shape = (n, n)
        self._I = torch.eye(n, dtype=F64)

    def _in_domain(self, W):
        sym = (W - W.transpose(-1, -2)).flatten(-2).norm(dim=-1) <= 1e-9 * (W.flatten(-2).norm(dim=-1) + 1e-300)
        finite = torch.isfinite(W).flatten(-2).all(-1)
        Ws = torch.where((sym & finite)[..., None, None], W, self._I.expand_as(W))
        return sym & finite & (torch.linalg.eigvalsh(0.5 * (Ws + Ws.transpose(-1, -2))) > 0).all(-1)

    def _value(self, W):
        lam, V = sym_eigh(W)
        ent = (lam * torch.log(lam) - lam).sum(-1)
        cross = (W * self.logW0).flatten(-2).sum(-1)
        return 0.25 * (ent - cross - 2.0 * self.a * torch.diagonal(W, dim1=-2, dim2=-1).sum(-1))

    def _grad(self, W):
        return 0.25 * (sym_fun(W, torch.log) - self.logW0 - 2.0 * self.a * self._I)

    def _hess(self, W):
        lam, V = sym_eigh(W)
        F = divided_difference(lam, torch.log, lambda t: 1.0 / t)
        return 0.25 * frechet_tensor(lam, V, F)

    def _exponent(self, M):
        return self.logW0 + 2.0 * self.a * self._I + 4.0 * 0.5 * (M + M.transpose(-1, -2))

    def _grad_inverse(self, M):
        return sym_fun(self._exponent(M), torch.exp)

    def _conjugate(self, M):
        lam = torch.linalg.eigvalsh(self._exponent(M))
        return 0.25 * torch.exp(lam).sum(-1)

    def _dual_hess(self, M):
        lam, V = sym_eigh(self._exponent(M))
        F = divided_difference(lam, torch.exp, torch.exp)
        return 4.0 * frechet_tensor(lam, V, F)

    def eigenvalue_legendre(self):
        """Eq. (17) restricted to the eigenvalues of W_0's eigenbasis: the entropy of Eq. (10) with β = 4."""
        from .hyperbolic import CoupledEntropy

        return CoupledEntropy(self.lam0, self.a, beta=4.0, rate=2.0)

    def nuclear_coefficient(self) -> float:
        """For W_0 = α_0 I: the coefficient −¼(log α_0 + 2a) of ‖W‖_* in R_a (positive = minimizes ‖W‖_*)."""
        return float(-0.25 * (torch.log(self.lam0).mean() + 2.0 * self.a))

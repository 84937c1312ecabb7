"""Commuting quadratic parameterizations g_i = ½ wᵀA_i w, h = ½ wᵀBw (Theorem 3.15; docs/theory.md#legendre-quadratic).

With symmetric, pairwise commuting A_1..A_n, B and {A_i w_0} linearly independent,

    Q_a(μ) = ¼ ‖exp(aB + Σ_i μ_i A_i) w_0‖²,          R_a = Q_a*  (convex conjugate at fixed a),
    ∇Q_a(μ)_i = ½ w_0ᵀ e^{aB} A_i exp(2Σ_j μ_j A_j) e^{aB} w_0,   w_t = exp(a_t B + Σ μ_{t,i} A_i) w_0.

In the common eigenbasis P (A_i = P diag(α_i) Pᵀ, B = P diag(β) Pᵀ, c = Pᵀw_0) everything is a sum of
exponentials, Q_a(μ) = ¼ Σ_k c_k² exp(2aβ_k + 2(αᵀμ)_k), so ∇Q_a and ∇²Q_a are closed forms and
μ(x) = ∇R_a(x) is found by damped Newton on the convex function Q_a(μ) − ⟨μ, x⟩. dom R_a is the open cone
spanned by the columns α_{·k} with c_k ≠ 0; a point where Newton does not converge is outside it.
If B ⪰ 0 then R_a is contracting (∂_a R_a ≤ 0, Remark 3.16). B = I is weight decay.
"""

from __future__ import annotations

import torch

from ._num import F64, as64
from .legendre import DualSolvedLegendre, NonCommutingError


def _rel(x: torch.Tensor, *refs: torch.Tensor) -> float:
    scale = sum(float(r.norm()) for r in refs) + 1e-300
    return float(x.norm()) / scale


def check_commuting_matrices(
    A: torch.Tensor, B: torch.Tensor | None, tol: float = 1e-9, names: tuple[str, str] = ("g", "h")
) -> None:
    """Raise ``NonCommutingError`` naming the first non-zero bracket [∇g_i, ∇g_j] = (A_jA_i − A_iA_j)w
    or [∇g_i, ∇h] = (BA_i − A_iB)w (Def. 3.3)."""
    g, h = names
    n = A.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            c = A[i] @ A[j] - A[j] @ A[i]
            r = _rel(c, A[i] @ A[j], A[j] @ A[i])
            if r > tol:
                raise NonCommutingError(
                    f"[∇{g}_{i}, ∇{g}_{j}] ≠ 0: A_{i}A_{j} ≠ A_{j}A_{i} (relative commutator {r:.3g}); "
                    "Theorem 3.15 needs commuting A_i"
                )
        if B is not None:
            c = A[i] @ B - B @ A[i]
            r = _rel(c, A[i] @ B, B @ A[i])
            if r > tol:
                raise NonCommutingError(
                    f"[∇{g}_{i}, ∇{h}] ≠ 0: A_{i}B ≠ BA_{i} (relative commutator {r:.3g}); "
                    "Theorem 3.15 needs B to commute with every A_i"
                )


def simultaneous_eigenbasis(mats: torch.Tensor, tol: float = 1e-8, seed: int = 0) -> torch.Tensor:
    """Orthogonal P diagonalizing every symmetric matrix in ``mats`` (m, d, d), which must commute.

    Eigenvectors of a random combination Σ r_i M_i; verified, retried with new weights, else ValueError.
    """
    gen = torch.Generator().manual_seed(seed)
    scale = mats.flatten(1).norm(dim=1).clamp_min(1e-300)
    for _ in range(4):
        r = torch.randn(mats.shape[0], generator=gen, dtype=F64) / scale
        _, P = torch.linalg.eigh(torch.einsum("m,mij->ij", r, mats))
        D = P.T @ mats @ P
        off = D - torch.diag_embed(torch.diagonal(D, dim1=-2, dim2=-1))
        if float((off.flatten(1).norm(dim=1) / scale).max()) <= tol:
            return P
    raise ValueError("could not diagonalize the matrices simultaneously (do they commute?)")


class QuadraticLegendre(DualSolvedLegendre):
    """R_a = Q_a* of Theorem 3.15 (numerical conjugate by Newton)."""

    name = "quadratic R_a = Q_a* (Theorem 3.15)"
    separable = False
    domain_text = "x in the open cone spanned by the eigen-directions of the A_i (range of ∇Q_a)"

    def __init__(self, A, B, w0, a: float, tol: float = 1e-11, max_iter: int = 200):
        super().__init__(a)
        A, _ = as64(A)
        w0, _ = as64(w0)
        d = w0.shape[-1]
        B = torch.eye(d, dtype=F64) if B is None else as64(B)[0]
        if not torch.allclose(A, A.transpose(-1, -2)) or not torch.allclose(B, B.T):
            raise ValueError("Theorem 3.15 needs symmetric A_i and B")
        check_commuting_matrices(A, B)
        n = A.shape[0]
        if int(torch.linalg.matrix_rank(torch.einsum("nij,j->ni", A, w0))) < n:
            raise ValueError("Theorem 3.15 needs {A_i w_init} linearly independent (g is not regular at w_init)")
        P = simultaneous_eigenbasis(torch.cat([A, B[None]], 0))
        alpha = torch.diagonal(P.T @ A @ P, dim1=-2, dim2=-1)  # (n, d)
        beta = torch.diagonal(P.T @ B @ P)
        c = P.T @ w0
        keep = c.abs() > 0
        self.alpha = alpha[:, keep]
        self.ell = 2.0 * torch.log(c[keep].abs()) + 2.0 * self.a * beta[keep]
        self.shape = (n,)
        self.tol, self.max_iter = float(tol), int(max_iter)
        self._memo: tuple | None = None

    # Q_a and its derivatives (closed forms in the eigenbasis)
    def _E(self, mu):
        return torch.exp(self.ell + 2.0 * mu @ self.alpha)

    def _conjugate(self, mu):
        return 0.25 * self._E(mu).sum(-1)

    def _grad_inverse(self, mu):
        return 0.5 * self._E(mu) @ self.alpha.T

    def _dual_hess(self, mu):
        return torch.einsum("...k,ik,jk->...ij", self._E(mu), self.alpha, self.alpha)

    # R_a = Q_a* by damped Newton
    def _solve(self, x):
        if self._memo is not None and self._memo[0].shape == x.shape and torch.equal(self._memo[0], x):
            return self._memo[1], self._memo[2]
        mu = torch.zeros_like(x)
        xn = x.norm(dim=-1)
        done = torch.zeros(x.shape[:-1], dtype=torch.bool)
        finite = torch.isfinite(x).all(-1)
        x_safe = torch.where(finite.unsqueeze(-1), x, torch.zeros_like(x))
        for _ in range(self.max_iter):
            E = self._E(mu)
            g = 0.5 * E @ self.alpha.T - x_safe
            done = g.norm(dim=-1) <= self.tol * xn + 1e-300
            if bool((done | ~finite).all()):
                break
            H = torch.einsum("...k,ik,jk->...ij", E, self.alpha, self.alpha)
            d = -torch.linalg.solve(H, g.unsqueeze(-1)).squeeze(-1)
            step = (2.0 * d @ self.alpha).abs().amax(-1)  # largest change of an exponent
            t = torch.clamp(4.0 / step.clamp_min(1e-300), max=1.0)
            F0 = 0.25 * E.sum(-1) - (mu * x_safe).sum(-1)
            slope = (g * d).sum(-1)
            gn = g.norm(dim=-1)
            for _ in range(60):
                cand = mu + t.unsqueeze(-1) * d
                F1 = self._conjugate(cand) - (cand * x_safe).sum(-1)
                g1 = (0.5 * self._E(cand) @ self.alpha.T - x_safe).norm(dim=-1)
                # Armijo on F, or (near the optimum, where F is flat to rounding) a smaller gradient
                ok = (F0 + 1e-4 * t * slope >= F1) | (g1 <= (1 - 1e-4 * t) * gn) | done
                if bool(ok.all()):
                    break
                t = torch.where(ok, t, 0.5 * t)
            active = ~done & finite
            mu = torch.where(active.unsqueeze(-1), mu + t.unsqueeze(-1) * d, mu)
        ok = done & finite & torch.isfinite(mu).all(-1)
        self._memo = (x.clone(), mu, ok)
        return mu, ok

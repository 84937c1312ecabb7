"""R_a for any commuting (g, h) by integrating the commuting flows (Theorem 3.6 / B.1; Li et al. Thm 4.9).

If the fields ∇g_1, …, ∇g_n, ∇h commute, gradient flow with any loss and any schedule stays on

    w(μ, a) = exp(Σ_i μ_i ∇g_i + a ∇h)(w_0)     (the time-1 flow of the combined field),

with μ = −∫∇f and a = −∫α. Hence x(μ) = g(w(μ, a)) = ∇Q_a(μ), ∇²Q_a(μ) = ∂g ∂gᵀ at w(μ, a) (positive
definite iff g is regular), and R_a = Q_a*. This module computes w(μ, a) with fixed-step RK4, μ(x) with
damped Newton, and Q_a(μ) = ∫_0^1 ⟨μ, x(tμ)⟩ dt by Gauss–Legendre quadrature — normalised so that
Q_a(0) = 0, i.e. R_a(x*_a) = 0 (the argmin of Theorem 3.11 does not depend on this constant).

It is the "generic path": it first checks the brackets numerically (``checks.check_commuting``) and
raises ``NonCommutingError`` naming the first non-zero bracket — e.g. [∇g_0, ∇h] for g = id or
g = m⊙w⊙v with weight decay (Cor. D.1, Theorem D.2). With a = 0 only the g-brackets are needed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ._num import F64, as64
from .checks import check_commuting, jacobian_rank, sample_points
from .legendre import DualSolvedLegendre, NonCommutingError


class FlowLegendre(DualSolvedLegendre):
    """R_a for user-supplied commuting (g, h), computed from the flows (slow but general)."""

    name = "R_a from commuting flows (Theorem B.1)"
    separable = False
    domain_text = "x in the range of ∇Q_a (reachable by the flow)"

    def __init__(
        self,
        g: Callable,
        h: Callable | None,
        w0,
        a: float,
        steps: int = 64,
        check: bool = True,
        points=None,
        tol: float = 1e-10,
        max_iter: int = 60,
        quad_nodes: int = 24,
        field: Callable | None = None,
        jac: Callable | None = None,
    ):
        """``g``: w (d,) → (n,); ``h``: w (d,) → scalar (torch callables; batched input is used when they
        accept it). Optional closed forms: ``field(w, mu)`` = ∂g(w)ᵀμ + a∇h(w) and ``jac(w)`` = ∂g(w),
        both on batches (B, d)."""
        super().__init__(a)
        w0, _ = as64(w0)
        if self.a != 0.0 and h is None:
            raise ValueError("a ≠ 0 needs the regularizer h")
        self.g, self.h, self.w0 = g, (h if self.a != 0.0 else None), w0.reshape(-1)
        if check:
            rep = check_commuting(g, self.h, points=points if points is not None else sample_points(self.w0))
            if not rep.commuting:
                raise NonCommutingError(rep.message)
        n = int(g(self.w0).numel())
        if jacobian_rank(g, self.w0) < n:
            raise ValueError("g is not regular at w_init (∂g has rank < n, Def. 3.1)")
        self.shape = (n,)
        self.steps, self.tol, self.max_iter, self.quad_nodes = int(steps), float(tol), int(max_iter), int(quad_nodes)
        self._g = self._batched(g, n)
        self._hb = self._batched(self.h, 0) if self.h is not None else None
        self._field = field if field is not None else self._auto_field
        self._jac = jac if jac is not None else self._auto_jac
        self._memo: tuple | None = None

    def _batched(self, fn: Callable, n: int) -> Callable:
        """fn on a batch (B, d): fn itself if it broadcasts over rows, else ``torch.func.vmap(fn)``."""
        two = torch.stack([self.w0, 1.5 * self.w0 + 0.1])
        try:
            out = fn(two)
            ok = (
                out.shape[0] == 2
                and torch.allclose(out[0].reshape(-1), fn(self.w0).reshape(-1))
                and torch.allclose(out[1].reshape(-1), fn(two[1]).reshape(-1))
            )
        except Exception:  # noqa: BLE001 - any failure means "not batched"
            ok = False
        return fn if ok else torch.func.vmap(fn)

    def _auto_field(self, w, mu):
        with torch.enable_grad():
            w_ = w.detach().requires_grad_(True)
            p = (self._g(w_).reshape(mu.shape) * mu).sum()
            if self._hb is not None:
                p = p + self.a * self._hb(w_).sum()
            (gr,) = torch.autograd.grad(p, w_, allow_unused=True)
        return torch.zeros_like(w) if gr is None else gr

    def _auto_jac(self, w):
        with torch.enable_grad():
            w_ = w.detach().requires_grad_(True)
            out = self._g(w_).reshape(w.shape[0], -1)
            rows = []
            for i in range(out.shape[1]):
                (gr,) = torch.autograd.grad(out[:, i].sum(), w_, retain_graph=True, allow_unused=True)
                rows.append(torch.zeros_like(w) if gr is None else gr)
        return torch.stack(rows, 1)

    def flow(self, mu) -> torch.Tensor:
        """w(μ, a), shape (..., d): RK4 on dw/ds = ∂g(w)ᵀμ + a∇h(w), s ∈ [0, 1]."""
        mu, _ = as64(mu)
        batch = mu.shape[:-1]
        m = mu.reshape(-1, mu.shape[-1])
        w = self.w0.expand(m.shape[0], -1).clone()
        dt = 1.0 / self.steps
        for _ in range(self.steps):
            k1 = self._field(w, m)
            k2 = self._field(w + 0.5 * dt * k1, m)
            k3 = self._field(w + 0.5 * dt * k2, m)
            k4 = self._field(w + dt * k3, m)
            w = w + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        return w.reshape(*batch, -1)

    def _grad_inverse(self, mu):
        w = self.flow(mu)
        return self._g(w.reshape(-1, w.shape[-1])).reshape(*mu.shape)

    def _dual_hess(self, mu):
        w = self.flow(mu)
        J = self._jac(w.reshape(-1, w.shape[-1]))
        return (J @ J.transpose(-1, -2)).reshape(*mu.shape, mu.shape[-1])

    def _conjugate(self, mu):
        t, wq = np.polynomial.legendre.leggauss(self.quad_nodes)
        t = torch.as_tensor((t + 1) / 2, dtype=F64)
        wq = torch.as_tensor(wq / 2, dtype=F64)
        pts = t.reshape(-1, *([1] * mu.dim())) * mu
        xs = self._grad_inverse(pts)
        return (wq.reshape(-1, *([1] * (mu.dim() - 1))) * (xs * mu).sum(-1)).sum(0)

    def _solve(self, x):
        if self._memo is not None and self._memo[0].shape == x.shape and torch.equal(self._memo[0], x):
            return self._memo[1], self._memo[2]
        finite = torch.isfinite(x).all(-1)
        xs = torch.where(finite.unsqueeze(-1), x, torch.zeros_like(x))
        mu = torch.zeros_like(xs)
        r = self._grad_inverse(mu) - xs
        scale = xs.norm(dim=-1) + self._grad_inverse(torch.zeros(self.shape, dtype=F64)).norm()
        done = r.norm(dim=-1) <= self.tol * scale
        for _ in range(self.max_iter):
            if bool((done | ~finite).all()):
                break
            H = self._dual_hess(mu)
            d = -torch.linalg.solve(H, r.unsqueeze(-1)).squeeze(-1)
            t = torch.ones(mu.shape[:-1], dtype=F64)
            for _ in range(30):
                cand = mu + t.unsqueeze(-1) * d
                rc = self._grad_inverse(cand) - xs
                ok = (rc.norm(dim=-1) <= (1 - 1e-4 * t) * r.norm(dim=-1)) | done
                ok &= torch.isfinite(rc).all(-1)
                if bool(ok.all()):
                    break
                t = torch.where(ok, t, 0.5 * t)
            act = (~done & finite).unsqueeze(-1)
            mu = torch.where(act, mu + t.unsqueeze(-1) * d, mu)
            r = torch.where(act, self._grad_inverse(mu) - xs, r)
            done = r.norm(dim=-1) <= self.tol * scale
        ok = done & finite
        self._memo = (x.clone(), mu, ok)
        return mu, ok

"""The time-dependent Legendre function R_a (Def. 3.4, 3.5; Theorem 3.6) as an object.

A :class:`LegendreFunction` is R_a for one initialization and one accumulated regularization
a = −∫_0^t α_s ds (docs/theory.md#notation). Its methods:

* ``value(x)``        R_a(x); ``+inf`` outside dom R_a;
* ``grad(x)``         the mirror map ∇R_a(x) (= the dual variable μ along the flow, Eq. (5) integrated:
                      ∇R_{a_t}(x_t) = μ_t = −∫_0^t ∇f(x_s) ds); raises ``OutsideDomainError`` outside;
* ``hess(x)``         ∇²R_a(x) (the Riemannian metric of Eq. (7));
* ``grad_inverse(mu)`` x(μ) = ∇Q_a(μ), Q_a = R_a* (Theorem 3.15);
* ``minimizer()``     the global minimiser x*_a = x(0) (positional bias);
* ``dual_domain()``   (lo, hi): the open set of dual variables μ, per coordinate (range);
* ``bregman(x, y)``   D_{R_a}(x, y) = R_a(x) − R_a(y) − ⟨∇R_a(y), x − y⟩ (Def. 3.7);
* ``conjugate(mu)``   Q_a(μ) = ⟨μ, x(μ)⟩ − R_a(x(μ)), ``+inf`` outside the dual domain;
* ``dual_hess(mu)``   ∇²Q_a(μ) = (∇²R_a(x(μ)))⁻¹: the diagonal for separable families, else a matrix.

Shapes: a point x has shape ``(..., n)`` (``event_dims = 1``) or ``(..., n, n)`` for the spectral family
(``event_dims = 2``); ``value`` sums over the event dims. Inputs of any float dtype are evaluated in
float64 and returned in the input dtype.
"""

from __future__ import annotations

import numpy as np
import torch

from ._num import F64, accumulated, as64, back


class OutsideDomainError(ValueError):
    """A point outside dom R_a (or a dual variable outside dom Q_a) was passed to ``grad``-like methods."""


class NonCommutingError(ValueError):
    """(g, h) is not a commuting parameterization (Def. 3.3), so Theorem 3.6 gives no R_a."""


class LegendreFunction:
    """Base class; subclasses implement the ``_``-methods on float64 tensors."""

    name = "R_a"
    event_dims = 1
    separable = True
    domain_text = "all of ℝⁿ"

    def __init__(self, a: float):
        self.a = accumulated(a)

    # ---- to implement -------------------------------------------------------------------------------
    def _value(self, x: torch.Tensor) -> torch.Tensor:  # summed over event dims
        raise NotImplementedError

    def _grad(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _hess(self, x: torch.Tensor) -> torch.Tensor:  # diagonal (separable) or full
        raise NotImplementedError

    def _grad_inverse(self, mu: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _in_domain(self, x: torch.Tensor) -> torch.Tensor:  # bool, batch shape
        return torch.isfinite(x).flatten(-self.event_dims).all(-1)

    def _dual_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        inf = torch.tensor(float("inf"), dtype=F64)
        return -inf, inf

    def _dual_hess(self, mu: torch.Tensor) -> torch.Tensor:
        h = self._hess(self._grad_inverse(mu))
        return 1.0 / h if self.separable else torch.linalg.inv(h)

    def _conjugate(self, mu: torch.Tensor) -> torch.Tensor:
        x = self._grad_inverse(mu)
        dims = tuple(range(-self.event_dims, 0))
        return (mu * x).sum(dims) - self._value(x)

    # ---- public API ---------------------------------------------------------------------------------
    shape: tuple[int, ...] = ()

    def _event_shape(self) -> tuple[int, ...]:
        return tuple(self.shape)

    def _safe_dual(self) -> torch.Tensor:
        """A dual point inside dom Q_a: 0, or the middle of the box where 0 is outside it."""
        lo, hi = self._dual_bounds()
        zero = self._zero_dual()
        lo, hi = lo.expand_as(zero), hi.expand_as(zero)
        mid = torch.where(torch.isfinite(lo) & torch.isfinite(hi), 0.5 * (lo + hi), zero)
        return torch.where((lo < 0) & (hi > 0), zero, mid)

    def _check_x(self, x: torch.Tensor, what: str = "x") -> None:
        ok = self._in_domain(x)
        if not bool(ok.all()):
            bad = x.reshape(-1, *x.shape[x.dim() - self.event_dims :])[~ok.reshape(-1)][0]
            shown = np.array2string(bad.cpu().numpy(), precision=4, threshold=6)
            raise OutsideDomainError(
                f"{what} is outside the domain of {self.name} (a={self.a:g}): need {self.domain_text}; got {shown}"
            )

    def in_domain(self, x) -> torch.Tensor:
        """Boolean mask (batch shape) of points inside dom R_a."""
        x64, _ = as64(x)
        return self._in_domain(x64)

    def value(self, x) -> torch.Tensor:
        """R_a(x); ``+inf`` where x is outside the domain."""
        x64, dt = as64(x)
        ok = self._in_domain(x64)
        if bool(ok.all()):
            return back(self._value(x64), dt)
        ref = self._grad_inverse(self._safe_dual())
        mask = ok.reshape(*ok.shape, *([1] * self.event_dims))
        safe = torch.where(mask, x64, ref.expand_as(x64))
        v = self._value(safe)
        return back(torch.where(ok, v, torch.full_like(v, float("inf"))), dt)

    def grad(self, x) -> torch.Tensor:
        """The mirror map ∇R_a(x) (raises ``OutsideDomainError`` outside the domain)."""
        x64, dt = as64(x)
        self._check_x(x64)
        return back(self._grad(x64), dt)

    def hess(self, x) -> torch.Tensor:
        """∇²R_a(x): ``(..., n, n)`` (``(..., n, n, n, n)`` for matrices)."""
        x64, dt = as64(x)
        self._check_x(x64)
        h = self._hess(x64)
        return back((torch.diag_embed(h) if self.separable else h), dt)

    def hess_diag(self, x) -> torch.Tensor:
        """Diagonal of ∇²R_a(x) (separable families only)."""
        if not self.separable:
            raise TypeError(f"{self.name} is not separable; use hess()")
        x64, dt = as64(x)
        self._check_x(x64)
        return back(self._hess(x64), dt)

    def _check_mu(self, mu: torch.Tensor) -> None:
        ok = self.in_dual_domain(mu)
        if not bool(ok.all()):
            lo, hi = self.dual_domain()
            raise OutsideDomainError(
                f"dual variable outside dom Q_a of {self.name} (a={self.a:g}): need lo < μ < hi with "
                f"lo={np.array2string(lo.numpy(), precision=4, threshold=6)}, "
                f"hi={np.array2string(hi.numpy(), precision=4, threshold=6)}"
            )

    def in_dual_domain(self, mu) -> torch.Tensor:
        mu64, _ = as64(mu)
        lo, hi = self._dual_bounds()
        ok = (mu64 > lo) & (mu64 < hi) & torch.isfinite(mu64)
        return ok.flatten(-self.event_dims).all(-1) if mu64.dim() >= self.event_dims else ok

    def grad_inverse(self, mu) -> torch.Tensor:
        """x(μ) = ∇Q_a(μ), the inverse mirror map."""
        mu64, dt = as64(mu)
        self._check_mu(mu64)
        return back(self._grad_inverse(mu64), dt)

    def conjugate(self, mu) -> torch.Tensor:
        """Q_a(μ) = R_a*(μ); ``+inf`` outside the dual domain."""
        mu64, dt = as64(mu)
        ok = self.in_dual_domain(mu64)
        if bool(ok.all()):
            return back(self._conjugate(mu64), dt)
        mask = ok.reshape(*ok.shape, *([1] * self.event_dims))
        v = self._conjugate(torch.where(mask, mu64, self._safe_dual().expand_as(mu64)))
        return back(torch.where(ok, v, torch.full_like(v, float("inf"))), dt)

    def dual_hess(self, mu) -> torch.Tensor:
        """∇²Q_a(μ) = dx/dμ: diagonal ``(..., n)`` if ``separable`` else ``(..., n, n)``."""
        mu64, dt = as64(mu)
        self._check_mu(mu64)
        return back(self._dual_hess(mu64), dt)

    def minimizer(self) -> torch.Tensor:
        """x*_a = argmin R_a = x(0) (positional bias, Sec. 4)."""
        lo, hi = self._dual_bounds()
        if bool((lo >= 0).any()) or bool((hi <= 0).any()):
            raise OutsideDomainError(f"{self.name} (a={self.a:g}) has no minimiser: 0 is outside its dual domain")
        return self._grad_inverse(self._zero_dual())

    def _zero_dual(self) -> torch.Tensor:
        return torch.zeros(self._event_shape(), dtype=F64)

    def dual_domain(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi): μ ranges over the open box lo < μ < hi (±inf where unbounded)."""
        lo, hi = self._dual_bounds()
        shape = self._zero_dual().shape
        return lo.expand(shape).clone(), hi.expand(shape).clone()

    def bregman(self, x, y) -> torch.Tensor:
        """D_{R_a}(x, y) = R_a(x) − R_a(y) − ⟨∇R_a(y), x − y⟩ (Def. 3.7); y must be inside the domain."""
        x64, dt = as64(x)
        y64, _ = as64(y)
        self._check_x(y64, "y")
        dims = tuple(range(-self.event_dims, 0))
        d = self.value(x64) - self._value(y64) - (self._grad(y64) * (x64 - y64)).sum(dims)
        return back(d, dt)

    def value_by_quadrature(self, x, nodes: int = 64) -> torch.Tensor:
        """R_a(x*) + ∫_0^1 ⟨∇R_a(x* + t(x − x*)), x − x*⟩ dt by Gauss–Legendre quadrature.

        An independent evaluation of R_a from the mirror map alone (docs/theory.md#legendre-power: R_a by root finding
        and quadrature); it agrees with ``value`` up to the quadrature error.
        """
        x64, dt = as64(x)
        xs = self.minimizer()
        t, wq = np.polynomial.legendre.leggauss(nodes)
        t = torch.as_tensor((t + 1) / 2, dtype=F64)
        wq = torch.as_tensor(wq / 2, dtype=F64)
        dims = tuple(range(-self.event_dims, 0))
        diff = x64 - xs
        shape = (nodes,) + (1,) * x64.dim()
        pts = xs + t.reshape(shape) * diff
        integrand = (self.grad(pts) * diff).sum(dims)
        integral = (wq.reshape((nodes,) + (1,) * (integrand.dim() - 1)) * integrand).sum(0)
        return back((self._value(xs) + integral), dt)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(a={self.a:g})"


class DualSolvedLegendre(LegendreFunction):
    """R_a = Q_a^* evaluated through the dual point μ(x) solving ∇Q_a(μ) = x (Thm 3.15, Thm B.1).

    Subclasses provide ``_solve(x) -> (μ, ok)``, ``_conjugate(μ)`` = Q_a(μ) and ``_dual_hess(μ)`` = ∇²Q_a(μ);
    then R_a(x) = ⟨μ, x⟩ − Q_a(μ), ∇R_a(x) = μ(x), ∇²R_a(x) = (∇²Q_a(μ(x)))^{-1}.
    """

    def _in_domain(self, x):
        return self._solve(x)[1]

    def _grad(self, x):
        return self._solve(x)[0]

    def _value(self, x):
        mu = self._solve(x)[0]
        return (mu * x).sum(-1) - self._conjugate(mu)

    def _hess(self, x):
        return torch.linalg.inv(self._dual_hess(self._solve(x)[0]))

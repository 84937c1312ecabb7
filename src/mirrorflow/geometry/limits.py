"""Where training ends: Theorem 3.11 (and Corollary C.3 for matrix sensing).

If weight decay is switched off after some T (α_t = 0 for t ≥ T) and the flow interpolates, then

    x_∞ = argmin_{x : Zx = y} R_{a_∞}(x),        a_∞ = −∫_0^T α_s ds  (discrete: −η Σ_s λ_s).   (16)

:func:`constrained_argmin` solves (16) for any Legendre function by Newton's method on the dual
(Lemma C.1: the optimum has ∇R(x) = Zᵀν):

    φ(ν) = Q_a(Zᵀν) − ⟨ν, y⟩,   ∇φ = Z x(Zᵀν) − y,   ∇²φ = Z ∇²Q_a(Zᵀν) Zᵀ,

with Armijo backtracking on φ and a cap on the dual step (‖Zᵀ d‖_∞ ≤ 4, so exponentials grow by at most
e^8 per step). No external solver. :func:`predict_limit` builds R_{a_∞} from a reparameterization, an
initialization and a schedule; for ``uut`` (matrix sensing with symmetric sensing matrices A_i that
commute with each other and with W_0) it diagonalizes everything in the common eigenbasis and solves the
eigenvalue problem of Eq. (17), i.e. the nuclear-norm-regularized entropy problem of Cor. C.3.

Usage:

    x = predict_limit("mw", {"m": m0, "w": w0}, schedule, Z, y, lr=eta)   # tensor, shape (n,)
    res = predict_limit(..., full=True)   # LimitResult(x, nu, mu, a, iterations, residual, converged)

``schedule`` is a number (a_∞ itself) or an object with ``integral(t) = Σ_{s<t} λ_s`` (mirrorflow.schedules);
then a_∞ = −lr · integral(horizon), and with ``horizon=None`` the schedule must switch off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._num import F64
from .families import PSD, get
from .hyperbolic import CoupledEntropy
from .legendre import LegendreFunction, NonCommutingError
from .quadratic import simultaneous_eigenbasis
from .reparam import Reparameterization


class LimitNotConverged(ArithmeticError):
    """The dual Newton solve of (16) stopped before ‖Zx − y‖_∞ ≤ tol·(1 + ‖y‖_∞); ``result`` holds the
    unconverged answer and its ``residual`` (pass ``allow_unconverged=True`` to get it back instead)."""

    def __init__(self, message: str, result: LimitResult):
        super().__init__(message)
        self.result = result
        self.residual = result.residual


@dataclass
class LimitResult:
    """Solution of (16): x (shape of g(w); (n, n) for matrix input), dual ν (N,), μ = Zᵀν = ∇R_a(x)."""

    x: torch.Tensor
    nu: torch.Tensor
    mu: torch.Tensor
    a: float
    iterations: int
    residual: float
    converged: bool


def accumulated_regularization(schedule, lr: float = 1.0, horizon: int | None = None) -> float:
    """a_∞ = −lr · Σ_{s<T} λ_s (docs/theory.md#notation); a number is taken as a_∞ itself."""
    if isinstance(schedule, (int, float, np.floating, np.integer)) or (
        isinstance(schedule, torch.Tensor) and schedule.numel() == 1
    ):
        return float(schedule)
    integral = getattr(schedule, "integral", None)
    if integral is None:
        raise TypeError(f"schedule must be a number (a_∞) or have .integral(t), got {type(schedule).__name__}")
    if horizon is None:
        T = 2**40
        i1, i2 = float(integral(T)), float(integral(2 * T))
        if not math.isclose(i1, i2, rel_tol=1e-12, abs_tol=1e-300):
            raise ValueError(
                "the schedule never switches off, so Theorem 3.11 does not apply "
                "(it needs α_t = 0 after some T); pass horizon= to use Σ_{s<horizon} λ_s"
            )
    else:
        i1 = float(integral(int(horizon)))
    return -float(lr) * i1


def constrained_argmin(
    leg: LegendreFunction, Z, y, tol: float = 1e-10, max_iter: int = 300, max_dual_step: float = 4.0, nu0=None
) -> LimitResult:
    """argmin R_a(x) subject to Zx = y (Eq. 16) by damped Newton on the dual, from ν = ``nu0`` (default 0).

    The result says whether it converged (``converged``, ``residual``); it does not raise.
    """
    Z = torch.as_tensor(np.asarray(Z) if not isinstance(Z, torch.Tensor) else Z).to(F64)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).to(F64).reshape(-1)
    shape = tuple(leg._event_shape())
    Zf = Z.reshape(Z.shape[0], -1)
    if Zf.shape[1] != math.prod(shape):
        raise ValueError(f"Z has {Zf.shape[1]} columns but x has {math.prod(shape)} entries")
    N = Zf.shape[0]
    if not bool(leg.in_dual_domain(torch.zeros(shape, dtype=F64))):
        raise ValueError(
            f"{leg.name} (a={leg.a:g}) has no minimiser (0 is outside its dual domain); "
            "the flow cannot reach an interpolating point from this initialization"
        )
    nu = torch.zeros(N, dtype=F64) if nu0 is None else torch.as_tensor(nu0, dtype=F64).clone()
    ynorm = float(y.abs().max()) if N else 0.0

    def state(nu):
        mu = (Zf.T @ nu).reshape(shape)
        return mu, leg._grad_inverse(mu).reshape(-1)

    lo, hi = leg._dual_bounds()

    def phi(nu):  # φ(ν) = Q_a(Zᵀν) − ⟨ν, y⟩, +inf outside the dual domain
        mu = (Zf.T @ nu).reshape(shape)
        if not bool(((mu > lo) & (mu < hi)).all()):
            return math.inf
        return float(leg._conjugate(mu)) - float(nu @ y)

    mu, x = state(nu)
    r = Zf @ x - y
    it, converged = 0, False
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        if float(r.abs().max()) <= tol * (1.0 + ynorm):
            converged = True
            break
        Hq = leg._dual_hess(mu)
        if leg.separable:
            H = (Zf * Hq.reshape(-1)) @ Zf.T
        else:
            m = math.prod(shape)
            H = Zf @ Hq.reshape(m, m) @ Zf.T
        try:
            d = -torch.linalg.solve(H, r)
        except RuntimeError:
            d = -torch.linalg.lstsq(H, r.unsqueeze(-1)).solution.squeeze(-1)
        big = float((Zf.T @ d).abs().max())
        t = min(1.0, max_dual_step / big) if big > 0 else 1.0
        f0, slope, rn = phi(nu), float(r @ d), float(r.norm())
        for _ in range(80):
            f1 = phi(nu + t * d)
            if math.isfinite(f1):
                if f1 <= f0 + 1e-4 * t * slope:
                    break
                # near the optimum φ is flat to rounding: accept a step that shrinks the residual
                _, xc = state(nu + t * d)
                if float((Zf @ xc - y).norm()) <= (1 - 1e-4 * t) * rn:
                    break
            t *= 0.5
        nu = nu + t * d
        mu, x = state(nu)
        r = Zf @ x - y
    else:
        converged = float(r.abs().max()) <= tol * (1.0 + ynorm)
    return LimitResult(x.reshape(shape), nu, mu, leg.a, it, float(r.abs().max()), converged)


def matrix_sensing_limit(
    W0, a: float, A, y, tol: float = 1e-10, max_iter: int = 300, commute_tol: float = 1e-8
) -> LimitResult:
    """Corollary C.3: argmin R_a(W) (Eq. 17) subject to ⟨A_i, W⟩ = y_i for commuting symmetric A_i.

    In the common eigenbasis P of the A_i and W_0: W = P diag(λ) Pᵀ, ⟨A_i, W⟩ = Σ_k α_ik λ_k, and R_a is
    the entropy ¼Σ[λ log(λ/(λ_0 e^{2a})) − λ] (Eq. 10 with β = 4).
    """
    W0 = torch.as_tensor(W0, dtype=F64)
    A = torch.as_tensor(A, dtype=F64)
    n = W0.shape[0]
    A = A.reshape(-1, n, n)
    mats = torch.cat([A, W0[None]], 0)
    for i in range(mats.shape[0]):
        for j in range(i + 1, mats.shape[0]):
            c = mats[i] @ mats[j] - mats[j] @ mats[i]
            rel = float(c.norm()) / (float(mats[i].norm() * mats[j].norm()) + 1e-300)
            if rel > commute_tol:
                what = f"A_{i} and A_{j}" if j < A.shape[0] else f"A_{i} and W_0"
                raise NonCommutingError(
                    f"{what} do not commute (relative commutator {rel:.3g}); Corollary C.3 "
                    "needs sensing matrices that commute with each other and with W_0"
                )
    P = simultaneous_eigenbasis(mats)
    D = torch.diagonal(P.T @ A @ P, dim1=-2, dim2=-1)
    lam0 = torch.diagonal(P.T @ W0 @ P)
    res = constrained_argmin(CoupledEntropy(lam0, a, beta=4.0, rate=2.0), D, y, tol, max_iter)
    W = (P * res.x) @ P.T
    M = (P * res.mu) @ P.T
    return LimitResult(W, res.nu, M, a, res.iterations, res.residual, res.converged)


def _solve(leg_at, a: float, Z, y, tol: float, max_iter: int) -> LimitResult:
    """(16) for R_a = ``leg_at(a)``: damped Newton; if that stalls, Newton without the dual-step cap (small
    initializations, where the cap makes progress e^8 per step too slow); if that fails too, a continuation
    in a (a/2^k, ..., a/2, a, each solve warm-started from the previous dual ν), for strongly regularized
    R_a whose Hessian spans many decades (e.g. m⊙w with a_∞ ≪ −100)."""
    best = constrained_argmin(leg_at(a), Z, y, tol, max_iter)
    if best.converged:
        return best
    for attempt in (
        lambda: constrained_argmin(leg_at(a), Z, y, tol, max_iter, max_dual_step=math.inf),
        lambda: _continuation(leg_at, a, Z, y, tol, max_iter),
    ):
        try:
            res = attempt()
        except (ValueError, RuntimeError):
            continue
        if res.converged:
            return res
        if math.isfinite(res.residual) and not res.residual >= best.residual:
            best = res
    return best


def _continuation(leg_at, a: float, Z, y, tol: float, max_iter: int, stages: int = 12) -> LimitResult:
    nu, res = None, None
    for k in range(stages, -1, -1):
        res = constrained_argmin(leg_at(a / 2**k), Z, y, tol, max_iter, nu0=nu)
        if not math.isfinite(res.residual):
            return res
        nu = res.nu
    return res


def _check_inputs(a: float, Z: torch.Tensor, y) -> None:
    if not math.isfinite(a) or a > 0:
        raise ValueError(f"a must be finite and ≤ 0 (a = −∫λ, λ ≥ 0), got {a:g}")
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y, dtype=F64)
    if not bool(torch.isfinite(yt).all()):
        raise ValueError("y must be finite (got nan or inf)")
    if not bool(torch.isfinite(Z).all()):
        raise ValueError("Z must be finite (got nan or inf)")


def predict_limit(
    reparam,
    init,
    schedule,
    Z,
    y,
    *,
    lr: float = 1.0,
    horizon: int | None = None,
    tol: float = 1e-10,
    max_iter: int = 300,
    full: bool = False,
    allow_unconverged: bool = False,
):
    """Theorem 3.11: the point x_∞ = argmin_{Zx=y} R_{a_∞}(x) where training with ``schedule`` ends.

    ``reparam``: a name (``mw``, ``power``, ...; n is taken from Z) or a Reparameterization; ``init``:
    w_init (flat, dict of parts, or tuple); ``schedule``: a_∞ or a schedule (a_∞ = −lr·Σλ); Z: (N, n)
    — for ``uut`` (m, n, n) sensing matrices or their (m, n²) flattening. Returns x (or a LimitResult
    with ``full=True``); for ``uut`` x is the matrix W if Z was given as matrices, else vec(W).

    An answer that does not satisfy Zx = y to ``tol`` is never returned as if it had converged: it raises
    :class:`LimitNotConverged` (with the residual) unless ``allow_unconverged=True`` (then check
    ``full=True``'s ``converged``). ``a > 0`` (not reachable with λ ≥ 0) or non-finite y raise ``ValueError``.
    """
    Zt = torch.as_tensor(np.asarray(Z) if not isinstance(Z, torch.Tensor) else Z).to(F64)
    if isinstance(reparam, Reparameterization):
        rep = reparam
    else:
        key = str(reparam).strip().lower()
        if key == "uut":
            size = Zt.shape[-1] if Zt.dim() == 3 else math.isqrt(Zt.shape[1])
            rep = get(key, size)
        else:
            rep = get(key, Zt.shape[-1])
    a = accumulated_regularization(schedule, lr, horizon)
    _check_inputs(a, Zt, y)
    if isinstance(rep, PSD):
        U0 = rep.unpack(rep.as_params(init))["U"]
        res = matrix_sensing_limit(U0 @ U0.T, a, Zt, y, tol, max_iter)
        if Zt.dim() != 3:
            res.x, res.mu = res.x.reshape(-1), res.mu.reshape(-1)
    else:
        res = _solve(lambda at: rep.legendre(init, at), a, Zt, y, tol, max_iter)
    if not res.converged and not allow_unconverged:
        raise LimitNotConverged(
            f"predict_limit: the solve of Zx = y did not converge (residual {res.residual:.3g} "
            f"after {res.iterations} iterations, a = {a:g}); pass allow_unconverged=True to "
            "get the unconverged answer",
            res,
        )
    return res if full else res.x

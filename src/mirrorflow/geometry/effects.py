"""The three effects of weight decay on the geometry (Sec. 1.4, Sec. 4; Fig. 1), as numbers.

For R_a at accumulated regularization a:

* **positional bias** — the global minimiser x*_a = x(μ = 0) (Eq. 9: x*_a = e^{2a} x_0 slides to 0);
* **type of bias** — the curvature ratio at the data scale s, moving outwards from the minimiser along
  e = sign(x*_a) (normalised; +1 where x*_a = 0; the identity for matrices),

      τ(a) = eᵀ∇²R_a(x*_a + s e)e / eᵀ∇²R_a(x*_a)e .

  τ = 1 for a quadratic (L2-like) R_a; τ → 0 when the curvature concentrates at the minimiser, as for
  |x| log|x| or |x| (L1-like); τ > 1 means the walls steepen away from the minimiser. For Eq. (9) with
  x_0 = 0, τ = γ_a / sqrt(s² + γ_a²): weight decay (γ_a = e^{2a}γ_0 → 0) moves L2 → L1. (Moving outwards
  keeps the probe inside one-sided domains such as x > 0 of Eq. (10).)
* **range** — the width hi − lo of the dual domain per coordinate (``inf`` when unbounded): the set of
  dual variables μ = −∫∇f the geometry can still absorb. It shrinks with a for the log parameterization
  (App. E); for u^{2k} − v^{2k} it widens in our sign convention (see ``power``).

The choice of τ (outward curvature ratio at distance s) is ours: the paper describes the type change in words only.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ._num import F64
from .legendre import LegendreFunction


def positional_bias(leg: LegendreFunction) -> torch.Tensor:
    """x*_a = argmin R_a."""
    return leg.minimizer()


def dual_range(leg: LegendreFunction) -> torch.Tensor:
    """hi − lo of the dual domain, per coordinate (inf where unbounded)."""
    lo, hi = leg.dual_domain()
    return hi - lo


def _curvature(leg: LegendreFunction, x: torch.Tensor, e: torch.Tensor) -> float:
    if leg.separable:
        return float((leg.hess_diag(x) * e * e).sum())
    H = leg.hess(x)
    if leg.event_dims == 2:
        return float(torch.einsum("ij,ijkl,kl->", e, H, e))
    return float(e @ H @ e)


def type_of_bias(leg: LegendreFunction, scale: float = 1.0, direction=None) -> float:
    """Curvature ratio τ(a) at distance ``scale`` outwards from the minimiser (1 = L2-like, → 0 = L1-like)."""
    xs = leg.minimizer()
    if direction is None:
        e = torch.eye(xs.shape[-1], dtype=F64) if leg.event_dims == 2 else torch.where(xs < 0, -1.0, 1.0).to(F64)
    else:
        e = torch.as_tensor(direction, dtype=F64)
    e = e / e.norm()
    probe = xs + scale * e
    if not bool(leg.in_domain(probe)):
        raise ValueError(f"x* + {scale:g}·e is outside the domain of {leg.name}; use a smaller scale")
    return _curvature(leg, probe, e) / _curvature(leg, xs, e)


def three_effects(reparam, init, a_values: Iterable[float], scale: float = 1.0, direction=None) -> list[dict]:
    """One row per a: ``{"a", "minimizer" (tensor), "type" (τ), "dual_width" (tensor)}``."""
    rows = []
    for a in a_values:
        leg = reparam.legendre(init, float(a))
        rows.append(
            {
                "a": float(a),
                "minimizer": positional_bias(leg),
                "type": type_of_bias(leg, scale, direction),
                "dual_width": dual_range(leg),
            }
        )
    return rows


#: families whose initialization is fixed by the scale alone (their x_0 is not free).
SCALE_ONLY_INIT = ("mw-coupled", "uut")


def one_dimensional(name: str, scale: float = 1.0, x0: float = 0.0, k: int = 2):
    """(reparameterization, w_init) of the one-dimensional family ``name`` for drawing R_a: initialization
    scale ``scale`` and x_0 = g(w_0) = ``x0`` (ignored by the families in :data:`SCALE_ONLY_INIT`);
    ``k`` is the depth exponent of ``power`` (x = u^{2k} − v^{2k}). Raises ``KeyError`` for an unknown name
    and ``ValueError`` for a scale that is not a positive finite number."""
    import math

    from .families import get

    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"the initial scale must be a positive number, got {scale!r}")
    rep = get(name, 1, k=k)
    init = rep.init(scale=scale, x0=None if rep.name in SCALE_ONLY_INIT else x0)
    return rep, init

"""Overflow-free elementary functions for the closed forms (docs/theory.md#numerics).

Every Legendre function keeps its constants in float64 and evaluates in float64; results are cast back
to the dtype of the input (float32 in, float32 out). Scales such as γ_a = e^{2a}γ_0 are stored as
logarithms so that a ∈ [−50, 0] and initial scales down to 1e-12 never underflow to 0.
"""

from __future__ import annotations

import math

import torch

F64 = torch.float64
LOG2 = math.log(2.0)


def as64(x) -> tuple[torch.Tensor, torch.dtype]:
    """``x`` as a float64 tensor, and the floating dtype the caller should get back."""
    if isinstance(x, torch.Tensor):
        out = x.dtype if x.is_floating_point() else F64
        return x.detach().to(F64), out
    t = torch.as_tensor(x, dtype=F64)
    return t, F64


class PrecisionOverflow(OverflowError):
    """A value computed in float64 does not fit the caller's lower-precision dtype."""


def back(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` (computed in float64) in the caller's ``dtype``; raises :class:`PrecisionOverflow` when finite
    float64 values become ±inf there (e.g. a float32 input whose R_a exceeds 3.4e38), instead of returning
    inf silently. Values that are ±inf in float64 (outside the domain) stay inf."""
    out = t.to(dtype)
    if dtype != t.dtype and t.is_floating_point():
        lost = torch.isfinite(t) & ~torch.isfinite(out)
        if bool(lost.any()):
            worst = float(t[lost].abs().max())
            raise PrecisionOverflow(f"a result ({worst:.3g}) overflows {dtype}; pass float64 inputs to get it")
    return out


def scalar(a) -> float:
    """A finite Python float (accumulated regularization a, scales)."""
    v = float(a.item() if isinstance(a, torch.Tensor) else a)
    if not math.isfinite(v):
        raise ValueError(f"a must be finite, got {a!r}")
    return v


def accumulated(a) -> float:
    """The accumulated regularization a = −∫λ_t dt (docs/theory.md; the argument of R_a, Eq. (9)): a finite
    float ≤ 0, since λ_t ≥ 0. A positive a would be negative weight decay: a ValueError naming ``a``."""
    v = scalar(a)
    if v > 0:
        raise ValueError(f"a must be finite and ≤ 0 (a = −∫λ, λ ≥ 0), got {v:g}")
    return v


def asinh_ratio(x: torch.Tensor, log_gamma: torch.Tensor) -> torch.Tensor:
    """asinh(x/γ) with γ = exp(log_gamma), without forming x/γ (no overflow for γ → 0).

    For |x| ≥ γ: sign(x)·[log|x| − log γ + log(1 + sqrt(1 + (γ/x)²))]; otherwise asinh(x/γ) directly.
    """
    r = torch.log(x.abs()) - log_gamma  # log|x/γ|
    big = r > 0
    rb = torch.where(big, r, torch.zeros_like(r))
    rs = torch.where(big, torch.zeros_like(r), r)
    large = rb + torch.log1p(torch.sqrt(1.0 + torch.exp(-2.0 * rb)))
    small = torch.asinh(torch.exp(rs))
    return torch.sign(x) * torch.where(big, large, small)


def sinh_scaled(z: torch.Tensor, log_gamma: torch.Tensor) -> torch.Tensor:
    """γ·sinh(z) = sign(z)·exp(|z| + log γ − log 2)·(1 − e^{−2|z|})."""
    az = z.abs()
    return torch.sign(z) * torch.exp(az + log_gamma - LOG2) * (-torch.expm1(-2.0 * az))


def cosh_scaled(z: torch.Tensor, log_gamma: torch.Tensor) -> torch.Tensor:
    """γ·cosh(z) = exp(|z| + log γ − log 2)·(1 + e^{−2|z|})."""
    az = z.abs()
    return torch.exp(az + log_gamma - LOG2) * (1.0 + torch.exp(-2.0 * az))


def logcosh(x: torch.Tensor) -> torch.Tensor:
    """log cosh x = |x| + log1p(e^{−2|x|}) − log 2 (finite for |x| up to the float range)."""
    ax = x.abs()
    return ax + torch.log1p(torch.exp(-2.0 * ax)) - LOG2


def sech2(x: torch.Tensor) -> torch.Tensor:
    """sech² x = 4e^{−2|x|}/(1 + e^{−2|x|})²."""
    e = torch.exp(-2.0 * x.abs())
    return 4.0 * e / (1.0 + e) ** 2


def sym_eigh(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of the symmetric part of ``W`` (batched over leading dims)."""
    return torch.linalg.eigh(0.5 * (W + W.transpose(-1, -2)))


def sym_fun(W: torch.Tensor, fn) -> torch.Tensor:
    """Matrix function V diag(fn(λ)) Vᵀ of a symmetric matrix."""
    lam, V = sym_eigh(W)
    return (V * fn(lam).unsqueeze(-2)) @ V.transpose(-1, -2)


def divided_difference(lam: torch.Tensor, f, df) -> torch.Tensor:
    """Daleckii–Krein matrix F_ab = (f(λ_a) − f(λ_b))/(λ_a − λ_b), F_aa = f'(λ_a)."""
    la, lb = lam.unsqueeze(-1), lam.unsqueeze(-2)
    diff = la - lb
    close = diff.abs() <= 1e-12 * (la.abs() + lb.abs() + 1e-300)
    safe = torch.where(close, torch.ones_like(diff), diff)
    F = (f(la) - f(lb)) / safe
    mid = 0.5 * (la + lb)
    return torch.where(close, df(mid).expand_as(F), F)


def frechet_tensor(lam: torch.Tensor, V: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """Fourth-order tensor T_ijkl of the Fréchet derivative X ↦ V (F ∘ VᵀXV) Vᵀ: dY_ij = Σ_kl T_ijkl dX_kl."""
    return torch.einsum("...ia,...jb,...ab,...ka,...lb->...ijkl", V, V, F, V, V)

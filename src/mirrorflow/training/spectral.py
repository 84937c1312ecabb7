"""Singular values of a factorized product ``W = L R`` from its factors, and the spectral metrics of W.

The paper tracks the ratio ρ = ‖W‖_* / ‖W‖_F of the products W = W_Q W_Kᵀ (attention) and W = B A (LoRA)
(docs/theory.md#rho, Table 1; Figs. 4, 14, 15). Both are products of two thin factors: L ∈ ℝ^{m×r},
R ∈ ℝ^{r×n} with r ≪ m, n (LoRA rank r; one attention head: r = head_dim). Their singular values are
obtained without the m×n product:

    L = Q_L T_L          (reduced QR, Q_L ∈ ℝ^{m×k_L} orthonormal columns, k_L = min(m, r))
    Rᵀ = Q_R T_R         (reduced QR, Q_R ∈ ℝ^{n×k_R}, k_R = min(n, r))
    W = L R = Q_L (T_L T_Rᵀ) Q_Rᵀ    ⇒    σ(W) = σ(C),  C = T_L T_Rᵀ ∈ ℝ^{k_L×k_R}

since multiplying by matrices with orthonormal columns keeps singular values. Cost O((m+n) r² + r³)
instead of O(m n r + m n min(m, n)) for an SVD of the explicit product. When r ≥ min(m, n) there is
nothing to gain and the explicit product is used. Both ways are backward stable: the singular values
agree with ``torch.linalg.svdvals(L @ R)`` to a few ulps of σ_max.
"""

from __future__ import annotations

import math

import torch

__all__ = ["product_singular_values", "spectral_metrics", "METRICS"]

#: metric names returned by :func:`spectral_metrics`, in order.
METRICS = ("nuclear", "frobenius", "rho", "spectral", "effective_rank", "stable_rank")


def _working_dtype(*ts: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    d = torch.promote_types(ts[0].dtype, ts[1].dtype)
    # half precision has no QR/SVD kernels on CPU and too little precision for the small σ's
    return d if d in (torch.float32, torch.float64) else torch.float32


@torch.no_grad()
def product_singular_values(
    left: torch.Tensor, right: torch.Tensor, scale: float = 1.0, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Singular values (descending) of ``scale * left @ right``, batched over leading dimensions.

    Args:
        left: ``(..., m, r)``.
        right: ``(..., r, n)``; leading dimensions broadcast with ``left``'s.
        scale: a scalar factor of the product (e.g. LoRA's ``lora_alpha / r``); σ scales by ``|scale|``.
        dtype: working precision; default the promoted dtype of the factors, at least float32.

    Returns:
        ``(..., min(m, n, r))`` singular values in descending order (the product has rank ≤ min(m, n, r);
        all others are exactly 0). Computed from the QR factors and the SVD of the small core
        ``C = T_L T_Rᵀ`` (module docstring), or from the explicit product when r ≥ min(m, n).

    >>> L = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    >>> R = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    >>> [round(v, 12) for v in product_singular_values(L, R).tolist()]
    [3.0, 2.0]
    """
    if left.dim() < 2 or right.dim() < 2:
        raise ValueError(
            f"left and right must be (..., m, r) and (..., r, n); got {tuple(left.shape)}, {tuple(right.shape)}"
        )
    m, r = left.shape[-2:]
    r2, n = right.shape[-2:]
    if r != r2:
        raise ValueError(f"inner dimensions differ: left is (..., {m}, {r}), right is (..., {r2}, {n})")
    wd = _working_dtype(left, right, dtype=dtype)
    L = left.detach().to(wd)
    R = right.detach().to(wd)
    if r >= min(m, n):
        s = torch.linalg.svdvals(L @ R)
    else:
        T_L = torch.linalg.qr(L, mode="r")[1]  # (..., r, r) since r < m
        T_R = torch.linalg.qr(R.transpose(-1, -2), mode="r")[1]  # (..., r, r) since r < n
        s = torch.linalg.svdvals(T_L @ T_R.transpose(-1, -2))
    if scale != 1.0:
        s = s * abs(float(scale))
    return s


@torch.no_grad()
def spectral_metrics(s: torch.Tensor) -> dict[str, float]:
    """Norms and ranks of a matrix from its singular values ``s`` (1-D, any order).

    * ``nuclear``  ‖W‖_* = Σ σ_i
    * ``frobenius`` ‖W‖_F = (Σ σ_i²)^{1/2}
    * ``rho``       ρ = ‖W‖_* / ‖W‖_F ∈ [1, √rank] (docs/theory.md#rho; lower = more nuclear-norm-like, lower rank)
    * ``spectral``  ‖W‖_2 = σ_max
    * ``effective_rank`` exp(H(p)), p_i = σ_i / Σσ, H the Shannon entropy (Roy & Vetterli 2007)
    * ``stable_rank``    ‖W‖_F² / ‖W‖_2²

    For the zero matrix (e.g. a LoRA product at init, B = 0) ρ is undefined and reported as NaN;
    ``effective_rank`` and ``stable_rank`` are 0 (its rank).

    >>> m = spectral_metrics(torch.tensor([3.0, 4.0]))
    >>> m["nuclear"], m["frobenius"], m["rho"], m["stable_rank"]
    (7.0, 5.0, 1.4, 1.5625)

    A batch ``(B, k)`` of singular values (e.g. :func:`product_singular_values` of stacked factor pairs) is
    not one matrix: it raises ``ValueError`` pointing to :func:`batched_spectral_metrics` (per-matrix values).
    """
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"spectral_metrics: expected a tensor of singular values, got {type(s).__name__}")
    if s.dim() > 1 and s.shape[0] > 1 and s[0].numel() > 1:
        raise ValueError(
            f"spectral_metrics: got a batch of shape {tuple(s.shape)}, i.e. {s.shape[0]} matrices; "
            "use batched_spectral_metrics for per-matrix values"
        )
    s = s.detach().to(torch.float64).abs().reshape(-1)
    if s.numel() == 0:
        raise ValueError("spectral_metrics: no singular values given")
    nuclear = float(s.sum())
    spectral = float(s.max())
    frob2 = float((s * s).sum())
    frobenius = math.sqrt(frob2)
    if nuclear == 0.0 or not math.isfinite(nuclear):
        nan_or_zero = 0.0 if nuclear == 0.0 else math.nan
        return {
            "nuclear": nuclear,
            "frobenius": frobenius,
            "rho": math.nan,
            "spectral": spectral,
            "effective_rank": nan_or_zero,
            "stable_rank": nan_or_zero,
        }
    p = s / nuclear
    p = p[p > 0]
    entropy = float(-(p * p.log()).sum())
    return {
        "nuclear": nuclear,
        "frobenius": frobenius,
        "rho": nuclear / frobenius,
        "spectral": spectral,
        "effective_rank": math.exp(entropy),
        "stable_rank": frob2 / (spectral * spectral),
    }


@torch.no_grad()
def batched_spectral_metrics(s: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`spectral_metrics` for a batch ``s`` of shape ``(B, k)``: each metric as a ``(B,)`` float64 tensor."""
    if not isinstance(s, torch.Tensor) or s.dim() < 1 or s.shape[-1] == 0:
        raise ValueError("batched_spectral_metrics: expected a (B, k) tensor of singular values, k ≥ 1")
    s = s.detach().to(torch.float64).abs()
    nuclear = s.sum(-1)
    spectral = s.amax(-1)
    frob2 = (s * s).sum(-1)
    frobenius = frob2.sqrt()
    zero = nuclear == 0
    safe_nuc = torch.where(zero, torch.ones_like(nuclear), nuclear)
    p = s / safe_nuc.unsqueeze(-1)
    plogp = torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))
    eff = torch.exp(-plogp.sum(-1))
    safe_spec = torch.where(zero, torch.ones_like(spectral), spectral)
    return {
        "nuclear": nuclear,
        "frobenius": frobenius,
        "rho": torch.where(
            zero, torch.full_like(nuclear, math.nan), nuclear / torch.where(zero, torch.ones_like(frobenius), frobenius)
        ),
        "spectral": spectral,
        "effective_rank": torch.where(zero, torch.zeros_like(eff), eff),
        "stable_rank": torch.where(zero, torch.zeros_like(frob2), frob2 / (safe_spec * safe_spec)),
    }

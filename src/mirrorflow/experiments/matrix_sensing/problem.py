"""The matrix-sensing problem: data (Wu & Rebeschini's setting) and batched gradient descent on W = UUᵀ.

See :mod:`mirrorflow.experiments.matrix_sensing` for the setting and the step; docs/theory.md#exp-matrix-sensing
for the conventions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...runtime import resolve_device


# --------------------------------------------------------------------------------------------- data
@dataclass
class SensingData:
    A: torch.Tensor  # (m, n*n) flattened symmetric sensing matrices
    y: torch.Tensor  # (m,)
    W_star: torch.Tensor  # (n, n)

    @property
    def n(self) -> int:
        return self.W_star.shape[0]


def make_data(n: int, r: int, m: int, seed: int, dtype: torch.dtype = torch.float64) -> SensingData:
    """PSD rank-r ground truth with unit nuclear norm and m symmetric Gaussian sensing matrices."""
    g = torch.Generator().manual_seed(seed)
    U_star = torch.randn(n, r, generator=g, dtype=torch.float64)
    W_star = U_star @ U_star.T
    W_star = W_star / torch.linalg.matrix_norm(W_star, ord="nuc")
    G = torch.randn(m, n, n, generator=g, dtype=torch.float64)
    A = 0.5 * (G + G.transpose(1, 2))
    y = torch.einsum("kij,ij->k", A, W_star)
    return SensingData(A.reshape(m, n * n).to(dtype), y.to(dtype), W_star.to(dtype))


# ------------------------------------------------------------------------------------------ problem
def effective_rank(eigs: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of p = |σ|/Σ|σ| along the last axis (Roy & Vetterli 2007)."""
    s = eigs.abs()
    p = s / s.sum(-1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
    ent = -(p * torch.log(p.clamp_min(torch.finfo(s.dtype).tiny))).sum(-1)
    return torch.exp(ent)


class MatrixSensing:
    """Batched gradient descent for C configurations sharing one :class:`SensingData` (``BatchedProblem``).

    The A_i and W are symmetric, so ⟨A_i, W⟩ = Σ_j A_jj W_jj + 2 Σ_{j<k} A_jk W_jk: the two big GEMMs of a step
    run in the packed basis of the p = n(n+1)/2 upper-triangular entries, with the off-diagonal weight 2 put
    on the packed W,

        r = (w ⊙ P(W)) Âᵀ − y,      P(∇f(W)) = rÂ / m,     Â ∈ ℝ^{m×p} (rows: packed A_i),

    half the work of the (m, n²) form. ∇f(W) is unpacked to (C, n, n) for the step on U. The state is U
    (or W for ``param="linear"``) of shape (C, n, n) and ``hit``, the first step whose loss fell below
    ``loss_threshold``. ``device``: where the data and the state live (``auto`` = CUDA when available).
    """

    def __init__(
        self,
        data: SensingData,
        init_scales: Sequence[float],
        param: str = "uu",
        decay: str = "exact",
        loss_threshold: float = 1e-6,
        device: str | torch.device = "cpu",
        penalty: str = "half",
    ):
        self.device = resolve_device(device)
        self.rate = 2.0 if penalty == "full" else 1.0  # dU = −rate·λU dt: h = ½‖U‖² (half) or ‖U‖² (full)
        self.param = param
        self.decay = decay
        self.loss_threshold = loss_threshold
        dtype, n = data.A.dtype, data.n
        m = data.y.shape[0]
        self.data, self.n, self.dtype = data, n, dtype  # only the packed Â, y and W* go to the device
        self.W_star = data.W_star.to(self.device)
        self.init_scales = torch.as_tensor(list(init_scales), dtype=dtype, device=self.device)
        self.n_configs = len(self.init_scales)
        iu = torch.triu_indices(n, n, device=self.device)
        self.upper = iu[0] * n + iu[1]  # (p,) flat (j, k), j ≤ k
        full = torch.zeros(n, n, dtype=torch.long, device=self.device)
        full[iu[0], iu[1]] = torch.arange(iu.shape[1], device=self.device)
        self.unpack = (full + full.T - torch.diag(full.diagonal())).reshape(-1)  # (n²,) flat → packed index
        self.weight = torch.where(iu[0] == iu[1], 1.0, 2.0).to(dtype)  # ⟨A, W⟩ weights of the packed entries
        self.A_packed = data.A.index_select(1, self.upper.to(data.A.device)).contiguous().to(self.device)  # (m, p)
        self.neg_y = -data.y.to(self.device)
        self.m = m

    def init_state(self) -> dict[str, torch.Tensor]:
        n, C = self.n, self.n_configs
        eye = torch.eye(n, dtype=self.dtype, device=self.device).expand(C, n, n)
        root = self.init_scales.sqrt() if self.param == "uu" else self.init_scales
        X = eye * root.view(C, 1, 1)
        return {"X": X.clone(), "hit": torch.full((C,), -1, dtype=torch.long, device=self.device)}

    def W(self, X: torch.Tensor) -> torch.Tensor:
        return X @ X.transpose(1, 2) if self.param == "uu" else X

    def residual(self, W: torch.Tensor) -> torch.Tensor:
        """r_i = ⟨A_i, W⟩ − y_i for symmetric W of shape (C, n, n), via the packed basis; shape (C, m)."""
        Wp = W.reshape(W.shape[0], -1).index_select(1, self.upper) * self.weight
        return torch.addmm(self.neg_y, Wp, self.A_packed.T)

    def unpacked_gradient(self, r: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """scale_c · ∇f(W_c) = scale_c/m · Σ_i r_ci A_i as (C, n, n), from one packed GEMM."""
        C, n = r.shape[0], self.n
        Gp = (r * (scale / self.m).view(C, 1)) @ self.A_packed
        return Gp.index_select(1, self.unpack).view(C, n, n)

    def step(self, state, lam, lr, t):
        X, hit = state["X"], state["hit"]
        C = X.shape[0]
        r = self.residual(self.W(X))
        loss = 0.5 * (r * r).mean(1)
        hit = torch.where((hit < 0) & (loss < self.loss_threshold), torch.full_like(hit, t), hit)
        if self.param == "uu":
            step = torch.baddbmm(X, self.unpacked_gradient(r, -2.0 * lr), X)  # U − 2η ∇f(UUᵀ) U
            # a gradient step that moves U by more than U itself overshoots: no discretization of the flow
            # (normal runs move < 0.25·‖U‖ per step); report it as diverged (NaN state, see run_batched)
            over = (step - X).flatten(1).norm(dim=1) > X.flatten(1).norm(dim=1)
            if self.decay == "exact":
                X = torch.exp(-self.rate * lr * lam).view(C, 1, 1) * step
            else:
                X = step - (self.rate * lr * lam).view(C, 1, 1) * X
            X = torch.where(over.view(C, 1, 1), torch.full_like(X, float("nan")), X)
        else:
            X = X + self.unpacked_gradient(r, -lr)  # W − η ∇f(W)
            if bool((lam > 0).any()):
                X = 0.5 * (X + X.transpose(1, 2))
                evals, evecs = torch.linalg.eigh(X)
                thr = (lr * lam).view(C, 1)
                shrunk = torch.sign(evals) * (evals.abs() - thr).clamp_min(0.0)
                X = (evecs * shrunk.unsqueeze(1)) @ evecs.transpose(1, 2)
        return {"X": X, "hit": hit}

    def metrics(self, state) -> dict[str, torch.Tensor]:
        W = self.W(state["X"])
        W = 0.5 * (W + W.transpose(1, 2))
        bad = ~torch.isfinite(W).all(dim=2).all(dim=1)  # overflowed (about to diverge): report NaN
        W = torch.where(bad.view(-1, 1, 1), torch.zeros_like(W), W)
        r = self.residual(W)
        eigs = torch.linalg.eigvalsh(W)
        out = {
            "train_loss": 0.5 * (r * r).mean(1),
            "rec_error": torch.linalg.matrix_norm(W - self.W_star),
            "nuclear_norm": eigs.abs().sum(-1),
            "effective_rank": effective_rank(eigs),
        }
        out = {k: v.masked_fill(bad, float("nan")) for k, v in out.items()}
        out["hit_step"] = state["hit"].to(W.dtype)
        return out

"""The matrix-sensing problem (Sec. 5, App. C, Table 2; docs/theory.md#exp-matrix-sensing, Cor. C.3): the data,
the batched gradient descent on W = UUᵀ (or W itself), and runs of configurations that share the data.

Setting (Wu & Rebeschini 2021, whose code fixes what the paper leaves open — docs/theory.md#exp-matrix-sensing):

* ground truth W* = U*U*ᵀ / ‖U*U*ᵀ‖_*,  U* ∈ ℝ^{n×r} i.i.d. N(0, 1)  (PSD, rank r, ‖W*‖_* = 1);
* sensing matrices A_i = (G_i + G_iᵀ)/2, G_i i.i.d. N(0, 1)^{n×n}, i = 1..m;  y_i = ⟨A_i, W*⟩;
* loss f(W) = 1/(2m) Σ_i (⟨A_i, W⟩ − y_i)²,  ∇f(W) = 1/m Σ_i r_i A_i;
* **quadratic parameterization** W = UUᵀ, U_0 = √α·I (so W_0 = α·I), weight decay h(U) = ½‖U‖_F² = ½ tr W:

      U ← e^{−ηλ_t} (U − η·2∇f(UUᵀ)U)         (decay applied exactly: docs/theory.md#stiff-decay)

  or, with ``decay=gradient``, the plain step U ← U − η(2∇f U + λ_t U) (unstable once ηλ_t > 1).
  Accumulated regularization a_t = −η Σ_{s<t} λ_s. By Cor. C.3 the eigenvalues follow
  λ_i(W_t) = λ_{0,i} e^{2a_t} e^{4μ_{t,i}} and training ends at the minimiser, among the solutions, of
  R_{a_∞}(W) = ¼ Σ_i (λ_i log λ_i − λ_i) − ¼ (log α + 2a_∞) ‖W‖_*  (Eq. 17): weight decay that is switched off
  adds a multiple of the nuclear norm to the implicit bias without biasing the fit.
* **linear parameterization** (the paper's comparison): W itself, W_0 = α·I, with a nuclear-norm penalty
  λ_t‖W‖_* applied by its proximal step (eigenvalue soft-thresholding of the symmetric iterate):
  W ← prox_{ηλ_t‖·‖_*}(W − η∇f(W)).

Conventions (docs/theory.md#factor-two): the loss carries 1/(2m) and, with ``penalty=half`` (default), the
penalty ½λ‖U‖_F², so the stationary point of constant weight decay solves min f(W) + (λ/2)‖W‖_* over PSD W.
``penalty=full`` takes λ‖U‖_F² instead (decay factor e^{−2ηλ_t}; stationary point of f(W) + λ‖W‖_*, the
same penalty as the linear arm's λ‖W‖_*). In both conventions the recorded a_t = −η Σ_{s<t} λ_s; with
``full`` the decay term is 2λ·(½‖U‖²), so Eq. (17)'s R_a is evaluated at 2a_t.

All configurations that share the data (same n, r, m, seed) run as one batched tensor program:
``U`` has shape (C, n, n); a step is two GEMMs against the sensing matrices in the packed symmetric basis
(m, n(n+1)/2) and two (C, n, n) batched products. ``device=auto|cpu|cuda`` chooses where it runs (the data
is drawn on the CPU, so every device sees the same problem).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ...engine.batched import Trace, run_batched, schedule_table
from ...runtime import resolve_device, resolve_dtype
from .config import Config


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


# ------------------------------------------------------------------------------------------ running
def run_group(cfgs: Sequence[Config], progress: Callable[[int], None] | None = None) -> Trace:
    """Run configurations that share data (equal :meth:`Config.data_key`) as one batch."""
    keys = {c.data_key() for c in cfgs}
    if len(keys) != 1:
        raise ValueError("run_group needs configurations with equal Config.data_key()")
    steps = {c.steps for c in cfgs}
    if len(steps) != 1:
        raise ValueError("run_group needs configurations with equal 'steps'")
    c0 = cfgs[0]
    dtype = resolve_dtype(c0.dtype)
    data = make_data(c0.n, c0.r, c0.measurements, c0.seed, dtype)  # drawn on the CPU: the same on every device
    problem = MatrixSensing(
        data, [c.init_scale for c in cfgs], c0.param, c0.decay, c0.loss_threshold, c0.device, c0.penalty
    )
    lam = schedule_table([c.lam_schedule() for c in cfgs], c0.steps, dtype, problem.device)
    lr = torch.tensor([c.lr for c in cfgs], dtype=dtype, device=problem.device)
    return run_batched(problem, lam, lr, log_every=c0.log_every, progress=progress)


def run_many(cfgs: Sequence[Config], progress: Callable[[int], None] | None = None) -> list[dict]:
    """Run any list of configs, grouping those that share data; returns per-config result dicts
    (``trace`` slices: steps, metrics arrays, diverged_at) in input order."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(cfgs):
        groups.setdefault(c.data_key() + (c.steps,), []).append(i)
    results: list[dict | None] = [None] * len(cfgs)
    for idx in groups.values():
        tr = run_group([cfgs[i] for i in idx], progress)
        for j, i in enumerate(idx):
            results[i] = {
                "steps": tr.steps,
                "metrics": {k: v[j] for k, v in tr.metrics.items()},
                "diverged_at": int(tr.diverged_at[j]),
            }
    return results  # type: ignore[return-value]

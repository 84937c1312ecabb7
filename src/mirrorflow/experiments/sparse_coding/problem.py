"""The sparse-coding problem (App. E; Figs. 11, 13): the Olivetti faces, and the batched reparameterized
sparse-code steps and dictionary steps for C configurations at once (a ``BatchedProblem`` of
``engine.batched``).

Online dictionary learning (Mairal et al. 2009) on the 400 Olivetti faces (not centred): dictionary
D ∈ ℝ^{K×P} (K = 50 atoms, rows of unit norm at init), code X ∈ ℝ^{400×K}, data Y ∈ ℝ^{400×P}. Per
iteration (one pass, mini-batches of 200 in a shuffled order), for each batch b:

1. **sparse-code step** — ONE gradient-descent step on the reparameterized code of the batch's rows
   (the code of each image persists across iterations), with η = ``lr_scale`` / L, L = ‖D‖₂²:

   * ``power``: X = u^{2k} − v^{2k}, h = Σ u^{2k} + v^{2k}, loss ‖X_b D − Y_b‖² (Cor. 3.12, Eq. 11):
       G = (X_b D − Y_b) Dᵀ,  u ← u − η·2k (2G + α) u^{2k−1},  v ← v − η·2k (−2G + α) v^{2k−1};
     init u_0 = ((x_0 + √(x_0²+1))/2)^{1/(2k)}, v_0 = ((−x_0 + √(x_0²+1))/2)^{1/(2k)}, x_0 ~ N(0, 1)
     (so u_0^{2k} − v_0^{2k} = x_0).
   * ``log``: X = log u − log v, h = Σ log u + log v, loss ½‖X_b D − Y_b‖²
     (R_a(x) = Σ (u_0²+v_0²+4a)/4 · log cosh x + (v_0²−u_0²)/4 · x, docs/theory.md):
       u ← max(u − η (G + α)/u, 10⁻¹⁰),  v ← max(v − η (−G + α)/v, 10⁻¹⁰);
     init (``log_init``) ``independent`` (the paper's code): u_0 = σ(z_1), v_0 = σ(−z_2) with independent
     z_1, z_2 ~ N(0, 1); ``shared``: z_2 = z_1 (then log u_0 − log v_0 = z_1).

2. **dictionary step** (``dict_update``, :mod:`.dictionary`): ``aggregated`` (Mairal: A, B summed
   over the batch, one sweep over the atoms) or ``per_sample`` (the paper's code: one A[i], B[i] per batch
   position, b sequential sweeps).

Metrics after every iteration, over all images: reconstruction MSE = mean((XD − Y)²), the code's nuclear
norm ‖X‖_*, Frobenius norm, ‖X‖₁ and sparsity (fraction of |X_ij| < ``sparsity_tol``). The accumulated
regularization of the code is a_t = −Σ_s η_s α (one step per image per iteration).

Every (seed, k, α) of a run is one configuration of ONE batched tensor program (``engine.batched``): each
has its own dictionary, code, accumulators, initial draw and batch order (configurations of one seed share
the draw and the order, so k and α are compared on paired runs). A configuration whose state stops being
finite is recorded as diverged. D lives in the span of its initial rows and the faces (K + n ≤ 450
dimensions): when that is smaller than P the run works in an orthonormal basis of it (exact up to
rounding; 4096 → 450 at the paper's size); ``SparseCoding.dictionary`` maps D back to pixels.
Paper size: ``image_size=64`` (4096 pixels), ``iterations=100``; the defaults are the paper's sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ...engine.batched import run_batched
from ...runtime import resolve_device, resolve_dtype, torch_threads
from .config import Config
from .dictionary import A0, aggregated_step, per_sample_step

LOG_CLAMP = 1e-10  # the log parameterization keeps u, v ≥ 1e-10


def _rowwise_finite(fn: Callable[[torch.Tensor], torch.Tensor], M: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to a batch (C, ...) where configurations with non-finite entries get NaN results
    instead of making LAPACK fail for the whole batch (a diverged configuration must not stop the others)."""
    ok = torch.isfinite(M).flatten(1).all(dim=1)
    if bool(ok.all()):
        return fn(M)
    out = fn(torch.where(ok.view(-1, *([1] * (M.dim() - 1))), M, torch.zeros_like(M)))
    out[~ok] = float("nan")
    return out


def spectral_norm_sq(D: torch.Tensor) -> torch.Tensor:
    """L = ‖D‖₂² per configuration: the largest eigenvalue of the small Gram matrix D Dᵀ (K×K)."""
    return _rowwise_finite(lambda G: torch.linalg.eigvalsh(G)[:, -1], D @ D.transpose(1, 2))


class SparseCoding:
    """``BatchedProblem``: one iteration (a pass over the shuffled mini-batches) per ``step``.

    ``ks`` and ``seeds`` give each configuration's k and seed; ``lam`` is α per configuration, ``lr`` the
    relative step ``lr_scale`` (η = lr / ‖D‖₂² per batch). The state's ``D`` and ``Bt`` are coordinates in
    the basis ``Q[seed]`` (P × r) of the span of the seed's initial atoms and the faces (Q = I when r = P).
    """

    def __init__(
        self,
        Y: torch.Tensor,
        param: str,
        ks: Sequence[int],
        n_atoms: int,
        batch_size: int,
        seeds: Sequence[int] | int = 0,
        sparsity_tol: float = 1e-2,
        dict_update: str = "aggregated",
        log_init: str = "independent",
        threads: int = 1,
        reduce: bool = True,
    ):
        seeds = [seeds] * len(ks) if isinstance(seeds, int) else list(seeds)
        if len(seeds) != len(ks):
            raise ValueError("SparseCoding: one seed per configuration")
        self.param, self.dict_update, self.threads = param, dict_update, threads
        self.n_configs, self.n_atoms, self.batch_size, self.sparsity_tol = len(ks), n_atoms, batch_size, sparsity_tol
        dt, dev = Y.dtype, Y.device
        n, P = Y.shape
        self.k = torch.as_tensor(list(ks), dtype=dt, device=dev).view(-1, 1, 1)
        self.seed_list = sorted(set(seeds))
        self.seed_idx = torch.as_tensor([self.seed_list.index(s) for s in seeds], device=dev)
        self.gens = [torch.Generator().manual_seed(s + 1) for s in self.seed_list]  # batch orders
        D0, Z1, Z2, Q = [], [], [], []
        Y64 = Y.to(torch.float64).cpu()
        for s in self.seed_list:
            g0 = torch.Generator().manual_seed(s)
            D = torch.randn(n_atoms, P, generator=g0, dtype=torch.float64)
            D0.append(D / (1e-5 + D.norm(dim=1, keepdim=True)))
            Z1.append(torch.randn(n, n_atoms, generator=g0, dtype=torch.float64))
            Z2.append(
                torch.randn(n, n_atoms, generator=g0, dtype=torch.float64)
                if (param, log_init) == ("log", "independent")
                else Z1[-1]
            )
            if reduce and n + n_atoms < P:  # orthonormal basis of span(rows of D_0, rows of Y)
                Q.append(torch.linalg.qr(torch.cat([D0[-1], Y64]).T).Q)
            else:
                Q.append(torch.eye(P, dtype=torch.float64))
        to = dict(dtype=dt, device=dev)
        self.Q = torch.stack(Q).to(**to)  # (S, P, r)
        self.D0 = torch.stack([d @ q for d, q in zip(D0, Q)]).to(**to)  # (S, K, r)
        self.Yr = torch.stack([Y64 @ q for q in Q]).to(**to)  # (S, n, r)
        self.z1, self.z2 = torch.stack(Z1).to(**to), torch.stack(Z2).to(**to)
        self.x0 = self.z1  # the power init's x_0 (and the log init's z_1)
        self._y_sq = (Y64 * Y64).sum().to(**to)
        self._n_values = n * P
        # per-sample: the (C, b, K, r) accumulators are updated in place from the codes and faces, so a
        # diverged configuration is detected and frozen on U, V, D (scanning the accumulators, 5·10⁷ entries
        # at the paper's size, every iteration took half of the run time)
        self.divergence_keys = ("U", "V", "D", "a") if dict_update == "per_sample" else None

    # --- code parameterization X = g(u, v)
    def code(self, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        if self.param == "power":
            return U.pow(2 * self.k) - V.pow(2 * self.k)
        return torch.log(U) - torch.log(V)

    def dictionary(self, state) -> torch.Tensor:
        """D in pixel coordinates (C, K, P)."""
        return state["D"] @ self.Q[self.seed_idx].transpose(1, 2)

    def init_state(self) -> dict[str, torch.Tensor]:
        C, K = self.n_configs, self.n_atoms
        _, n, r = self.Yr.shape
        z1, z2 = self.z1[self.seed_idx], self.z2[self.seed_idx]
        if self.param == "power":
            root = torch.sqrt(z1 * z1 + 1.0)
            U = ((z1 + root) / 2).pow(1.0 / (2 * self.k))
            V = ((-z1 + root) / 2).pow(1.0 / (2 * self.k))
        else:
            U, V = torch.sigmoid(z1), torch.sigmoid(-z2)
        to = dict(dtype=self.Yr.dtype, device=self.Yr.device)
        npos = self.batch_size if self.dict_update == "per_sample" else None  # one A[i], B[i] per position
        Ashape = (C, npos, K, K) if npos else (C, K, K)
        return {
            "U": U.clone(),
            "V": V.clone(),
            "D": self.D0[self.seed_idx].clone(),
            "A": (A0 * torch.eye(K, **to)).expand(*Ashape).clone(),
            "Bt": torch.zeros(*Ashape[:-1], r, **to),  # Bᵀ = Σ X_bᵀ Y_b (per position for per_sample)
            "a": torch.zeros(C, **to),
        }

    def _code_step(self, U, V, D, gram, Yb, alpha, eta):
        """One reparameterized GD step on the batch's code (see module docstring). ``Yb`` is (C, b, r) or
        (b, r). G = (X D − Y_b) Dᵀ = X (D Dᵀ) − Y_b Dᵀ: the (C, b, P) residual is never formed."""
        X = self.code(U, V)
        G = X @ gram - torch.matmul(Yb, D.transpose(1, 2))
        al = alpha.view(-1, 1, 1)
        et = eta.view(-1, 1, 1)
        if self.param == "power":
            k2 = 2 * self.k
            U = U - et * k2 * (2 * G + al) * U.pow(k2 - 1)
            V = V - et * k2 * (-2 * G + al) * V.pow(k2 - 1)
        else:
            U = (U - et * (G + al) / U).clamp_min(LOG_CLAMP)
            V = (V - et * (-G + al) / V).clamp_min(LOG_CLAMP)
        return U, V

    def step(self, state, lam, lr, t):
        dev = self.Yr.device
        U, V, D, A, Bt, a = (state[k] for k in ("U", "V", "D", "A", "Bt", "a"))
        lam, lr = lam.to(dev), lr.to(dev)
        U, V, D = U.clone(), V.clone(), D.clone()
        if self.dict_update == "aggregated":
            A, Bt = A.clone(), Bt.clone()
        # the per-sample accumulators (C·b·K·r values) are updated in place: a diverged configuration's
        # accumulators are not frozen (its metrics are NaN from its divergence on)
        n = self.Yr.shape[1]
        perm = torch.stack([torch.randperm(n, generator=g) for g in self.gens]).to(dev)[self.seed_idx]  # (C, n)
        rows = torch.arange(self.n_configs, device=dev).view(-1, 1)
        ys = self.seed_idx.view(-1, 1)
        etas = []
        for s in range(0, n, self.batch_size):
            idx = perm[:, s : s + self.batch_size]
            Yb = self.Yr[ys, idx]  # (C, b, r)
            gram = D @ D.transpose(1, 2)
            eta = lr / _rowwise_finite(lambda G: torch.linalg.eigvalsh(G)[:, -1], gram)  # η = lr/‖D‖₂²
            Ub, Vb = self._code_step(U[rows, idx], V[rows, idx], D, gram, Yb, lam, eta)
            U[rows, idx], V[rows, idx] = Ub, Vb
            Xb = self.code(Ub, Vb)
            if self.dict_update == "aggregated":
                D, A, Bt = aggregated_step(D, A, Bt, Xb, Yb)
            else:
                per_sample_step(D, A, Bt, Xb.contiguous(), Yb.contiguous(), threads=self.threads)
            etas.append(eta)
        a = a - lam * torch.stack(etas).mean(0)
        return {"U": U, "V": V, "D": D, "A": A, "Bt": Bt, "a": a}

    def metrics(self, state) -> dict[str, torch.Tensor]:
        X, D = self.code(state["U"], state["V"]), state["D"]
        # ‖XD − Y‖² = ⟨XᵀX, DDᵀ⟩ − 2⟨XᵀY, D⟩ + ‖Y‖²  (no (C, n, P) residual)
        XtX = X.transpose(1, 2) @ X
        XtY = X.transpose(1, 2) @ self.Yr[self.seed_idx]
        sq = (XtX * (D @ D.transpose(1, 2))).sum((1, 2)) - 2 * (XtY * D).sum((1, 2))
        sq = (sq + self._y_sq).clamp_min(0.0)
        sv = _rowwise_finite(torch.linalg.svdvals, X)
        return {
            "mse": sq / self._n_values,
            "nuclear_norm": sv.sum(-1),
            "frobenius_norm": X.flatten(1).norm(dim=1),
            "l1": X.abs().sum(dim=(1, 2)),
            "sparsity": (X.abs() < self.sparsity_tol).to(X.dtype).mean(dim=(1, 2)),
            "a_code": state["a"],
        }


# --------------------------------------------------------------------------------------------- data
def faces(image_size: int = 64, n_images: int = 400, path: str | Path | None = None) -> np.ndarray:
    """Olivetti faces (n_images, image_size²) in [0, 1]; sizes < 64 average-pool 64/size × 64/size blocks."""
    from ...data import load_olivetti

    Y = load_olivetti(path)[:n_images]
    if image_size != 64:
        f = 64 // image_size
        Y = Y.reshape(-1, image_size, f, image_size, f).mean(axis=(2, 4)).reshape(len(Y), -1)
    return Y


# ------------------------------------------------------------------------------------------ running
def run_sweep(
    cfg: Config,
    progress: Callable[[int], None] | None = None,
    Y: np.ndarray | None = None,
    return_problem: bool = False,
):
    """All (seed, k, α) of ``cfg`` as one batched run of ``cfg.iterations`` iterations on ``cfg.device``."""
    dtype, device = resolve_dtype(cfg.dtype), resolve_device(cfg.device)
    Y = faces(cfg.image_size, cfg.n_images) if Y is None else Y
    Yt = torch.as_tensor(np.asarray(Y), dtype=dtype).to(device)
    grid = cfg.grid()
    with torch_threads(cfg.threads):
        problem = SparseCoding(
            Yt,
            cfg.param,
            [k for _, k, _ in grid],
            cfg.n_atoms,
            cfg.batch_size,
            [s for s, _, _ in grid],
            cfg.sparsity_tol,
            cfg.dict_update,
            cfg.log_init,
            cfg.threads,
        )
        lam = torch.tensor([[a] for _, _, a in grid], dtype=dtype).expand(len(grid), cfg.iterations).contiguous()
        trace = run_batched(problem, lam.to(device), cfg.lr_scale, log_every=1, progress=progress)
    return (trace, problem) if return_problem else trace

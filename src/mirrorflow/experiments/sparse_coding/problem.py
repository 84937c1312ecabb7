"""The batched sparse-coding problem (App. E): reparameterized code steps and dictionary steps for C
configurations at once (a ``BatchedProblem`` of ``engine.batched``). The algorithm, its parameterizations
and inits are described in :mod:`mirrorflow.experiments.sparse_coding`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

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

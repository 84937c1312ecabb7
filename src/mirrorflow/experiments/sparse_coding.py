"""Sparse coding on Olivetti faces with a reparameterized sparse-code step (App. E; Figs. 11, 13).

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

2. **dictionary step** (``dict_update``, :mod:`.sparse_dictionary`): ``aggregated`` (Mairal: A, B summed
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

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import require
from ..engine.batched import Trace, run_batched, torch_threads
from .sparse_dictionary import A0, aggregated_step, per_sample_step

PARAMS = ("power", "log")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
IMAGE_SIZES = (64, 32, 16, 8, 4)
DICT_UPDATES = ("aggregated", "per_sample")
LOG_INITS = ("independent", "shared")
DEVICES = ("auto", "cpu", "cuda")
LOG_CLAMP = 1e-10  # the log parameterization keeps u, v ≥ 1e-10


@dataclass(frozen=True)
class Config:
    """One reparameterization with a sweep over seeds × k (power) × α; all run as one batch."""

    param: str = "power"  # "power": u^{2k} − v^{2k};  "log": log u − log v
    ks: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)  # power only
    alphas: tuple[float, ...] = (0.001,)
    seeds: tuple[int, ...] = (0,)  # each seed: its own initial dictionary, x_0 and batch order
    n_atoms: int = 50
    batch_size: int = 200
    iterations: int = 100
    lr_scale: float = 0.001  # η = lr_scale / ‖D‖₂²
    dict_update: str = "aggregated"  # "aggregated" (Mairal) or "per_sample" (the paper's code)
    log_init: str = "independent"  # "independent": u_0 = σ(z_1), v_0 = σ(−z_2) (the paper's code); "shared": z_2 = z_1
    image_size: int = 64  # 64 = paper; smaller sizes average-pool the faces
    n_images: int = 400
    sparsity_tol: float = 1e-2
    stationary_tol: float = 1e-3  # ‖X‖∗ is stationary once |Δ‖X‖∗|/‖X‖∗ < tol per iteration ...
    stationary_window: int = 5  # ... for this many consecutive iterations
    dtype: str = "float64"
    device: str = "auto"  # "auto": cuda when available, else cpu
    threads: int = 1  # torch intra-op threads and the per-sample kernel's threads (0 = torch's default)

    def validate(self) -> None:
        require(self.param in PARAMS, f"param must be one of {', '.join(PARAMS)}, got {self.param!r}")
        require(len(self.ks) > 0, "ks must list at least one k")
        for k in self.ks:
            require(1 <= k <= 50, f"ks must be integers in 1..50, got {k}")
        require(len(self.alphas) > 0, "alphas must list at least one value")
        for a in self.alphas:
            require(math.isfinite(a) and a >= 0, f"alphas must be non-negative numbers, got {a}")
        require(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds),
                f"seeds must list distinct integers, got {','.join(map(str, self.seeds))}")
        require(all(s >= 0 for s in self.seeds), f"seeds must be non-negative, got {','.join(map(str, self.seeds))}")
        require(self.n_atoms > 0, f"n_atoms must be positive, got {self.n_atoms}")
        require(1 <= self.n_images <= 400, f"n_images must be in 1..400, got {self.n_images}")
        require(0 < self.batch_size <= self.n_images, f"batch_size must be in 1..n_images={self.n_images}, got {self.batch_size}")
        require(self.iterations > 0, f"iterations must be positive, got {self.iterations}")
        require(math.isfinite(self.lr_scale) and self.lr_scale > 0, f"lr_scale must be positive, got {self.lr_scale}")
        require(self.dict_update in DICT_UPDATES, f"dict_update must be one of {', '.join(DICT_UPDATES)}, got {self.dict_update!r}")
        require(self.dict_update != "per_sample" or self.n_images % self.batch_size == 0,
                f"dict_update=per_sample needs batch_size dividing n_images={self.n_images} (one A[i], B[i] per "
                f"batch position), got batch_size={self.batch_size}")
        require(self.log_init in LOG_INITS, f"log_init must be one of {', '.join(LOG_INITS)}, got {self.log_init!r}")
        require(self.image_size in IMAGE_SIZES, f"image_size must be one of {', '.join(map(str, IMAGE_SIZES))}, got {self.image_size}")
        require(self.sparsity_tol > 0, f"sparsity_tol must be positive, got {self.sparsity_tol}")
        require(self.stationary_tol > 0, f"stationary_tol must be positive, got {self.stationary_tol}")
        require(self.stationary_window >= 1, f"stationary_window must be at least 1, got {self.stationary_window}")
        require(self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        require(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        require(self.device != "cuda" or torch.cuda.is_available(), "device=cuda: no CUDA device is available (use device=auto or cpu)")
        require(self.threads >= 0, f"threads must be non-negative (0 = torch's default), got {self.threads}")

    def points(self) -> list[tuple[int, float]]:
        """The (k, α) points of the sweep (k is 1 and unused for ``log``)."""
        ks = self.ks if self.param == "power" else (1,)
        return [(k, a) for k in ks for a in self.alphas]

    def grid(self) -> list[tuple[int, int, float]]:
        """The (seed, k, α) configurations of this run, seed-major."""
        return [(s, k, a) for s in self.seeds for k, a in self.points()]

    def point_labels(self) -> list[str]:
        if self.param == "log":
            return [f"α={a:g}" for _, a in self.points()]
        if len(self.alphas) == 1:
            return [f"k={k}" for k, _ in self.points()]
        return [f"k={k}, α={a:g}" for k, a in self.points()]

    def labels(self) -> list[str]:
        """One label per configuration (the point's label, with the seed when there are several)."""
        pl = self.point_labels()
        if len(self.seeds) == 1:
            return pl
        return [f"{lab}, seed={s}" for s in self.seeds for lab in pl]


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --------------------------------------------------------------------------------------------- data
def faces(image_size: int = 64, n_images: int = 400, path: str | Path | None = None) -> np.ndarray:
    """Olivetti faces (n_images, image_size²) in [0, 1]; sizes < 64 average-pool 64/size × 64/size blocks."""
    from ..data import load_olivetti

    Y = load_olivetti(path)[:n_images]
    if image_size != 64:
        f = 64 // image_size
        Y = Y.reshape(-1, image_size, f, image_size, f).mean(axis=(2, 4)).reshape(len(Y), -1)
    return Y


# ------------------------------------------------------------------------------------------ problem
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

    def __init__(self, Y: torch.Tensor, param: str, ks: Sequence[int], n_atoms: int, batch_size: int,
                 seeds: Sequence[int] | int = 0, sparsity_tol: float = 1e-2, dict_update: str = "aggregated",
                 log_init: str = "independent", threads: int = 1, reduce: bool = True):
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
            Z2.append(torch.randn(n, n_atoms, generator=g0, dtype=torch.float64) if (param, log_init) == ("log", "independent") else Z1[-1])
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
            "U": U.clone(), "V": V.clone(),
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
            idx = perm[:, s:s + self.batch_size]
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


# --------------------------------------------------------------------------------------- running
def run_sweep(cfg: Config, progress: Callable[[int], None] | None = None, Y: np.ndarray | None = None,
              return_problem: bool = False):
    """All (seed, k, α) of ``cfg`` as one batched run of ``cfg.iterations`` iterations on ``cfg.device``."""
    dtype, device = DTYPES[cfg.dtype], resolve_device(cfg.device)
    Y = faces(cfg.image_size, cfg.n_images) if Y is None else Y
    Yt = torch.as_tensor(np.asarray(Y), dtype=dtype).to(device)
    grid = cfg.grid()
    with torch_threads(cfg.threads):
        problem = SparseCoding(Yt, cfg.param, [k for _, k, _ in grid], cfg.n_atoms, cfg.batch_size,
                               [s for s, _, _ in grid], cfg.sparsity_tol, cfg.dict_update, cfg.log_init, cfg.threads)
        lam = torch.tensor([[a] for _, _, a in grid], dtype=dtype).expand(len(grid), cfg.iterations).contiguous()
        trace = run_batched(problem, lam.to(device), cfg.lr_scale, log_every=1, progress=progress)
    return (trace, problem) if return_problem else trace


def settled_iteration(values: np.ndarray, rel_tol: float = 0.01) -> int | None:
    """First logged index t from which ``values`` stays within ``rel_tol`` (relative) of its final value:
    |v_s − v_T| ≤ rel_tol·|v_T| for all s ≥ t. None for a diverged (non-finite) series. Depends on the
    horizon T: a series that drifts slowly never settles before its end."""
    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).all():
        return None
    outside = np.abs(v - v[-1]) > rel_tol * abs(v[-1])
    idx = np.nonzero(outside)[0]
    return 0 if len(idx) == 0 else int(idx[-1] + 1)


def stationary_iteration(values: np.ndarray, rel_tol: float = 1e-3, window: int = 5) -> int | None:
    """First iteration t from which the relative change per iteration stays below ``rel_tol`` for
    ``window`` consecutive iterations: |v_{s+1} − v_s| ≤ rel_tol·|v_s| for s = t, …, t + window − 1.

    This is how the tables measure when the code's nuclear norm "becomes stationary" (App. E, Fig. 11a).
    Unlike :func:`settled_iteration` it does not depend on the horizon and tolerates a slow drift (below
    ``rel_tol`` per iteration). None when it never happens, or for a diverged (non-finite) series."""
    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).all() or len(v) < window + 1:
        return None
    calm = np.abs(np.diff(v)) <= rel_tol * np.abs(v[:-1])
    run = np.convolve(calm.astype(int), np.ones(window, dtype=int), mode="valid")  # calm steps in each window
    hit = np.nonzero(run == window)[0]
    return int(hit[0]) if len(hit) else None


def summarize(cfg: Config, trace: Trace) -> list[dict]:
    """Per configuration: final metrics, MSE at iterations 5/10/20, the iteration from which ‖X‖_* is
    stationary (:func:`stationary_iteration`) and from which it stays within 1% of its final value."""
    out = []
    for c, ((seed, k, alpha), label) in enumerate(zip(cfg.grid(), cfg.labels())):
        div = int(trace.diverged_at[c])
        mse = trace.metrics["mse"][c]
        nuc = trace.metrics["nuclear_norm"][c]
        row = {"label": label, "point": cfg.point_labels()[c % len(cfg.points())], "seed": seed,
               "k": k if cfg.param == "power" else None, "alpha": alpha,
               "diverged_at": div if div >= 0 else None, "status": "diverged" if div >= 0 else "finished"}
        for name in ("mse", "nuclear_norm", "frobenius_norm", "l1", "sparsity", "a_code"):
            row[name] = float(trace.metrics[name][c, -1])
        for it in (5, 10, 20):
            row[f"mse_at_{it}"] = float(mse[it]) if it < len(mse) else None
        row["nuclear_stationary_at"] = stationary_iteration(nuc, cfg.stationary_tol, cfg.stationary_window)
        row["nuclear_settled_at"] = settled_iteration(nuc)
        out.append(row)
    return out


def metric_rows(cfg: Config, trace: Trace) -> list[dict]:
    return [{"param": cfg.param, **r} for r in trace.rows(cfg.labels())]


def run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None) -> dict:
    """One reparameterization, all (seed, k, α) batched, into run directory ``out``."""
    from .sparse_coding_report import run_into

    return run_into(cfg, out, progress)


def reproduce(out: Path | str, overrides=None, progress: Callable[[int], None] | None = None) -> str:
    """Figs. 11 and 13 (``preset=paper``, the default) or the paper code's stored ``power/MSE.csv`` curve
    (``preset=authors``); see :func:`.sparse_coding_report.reproduce`."""
    from .sparse_coding_report import reproduce as _reproduce

    return _reproduce(out, overrides, progress)

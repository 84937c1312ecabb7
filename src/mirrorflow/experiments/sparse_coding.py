"""Sparse coding on Olivetti faces with a reparameterized sparse-code step (App. E; Figs. 11, 13; MATH.md §4.3).

Online dictionary learning (Mairal et al. 2009) on the 400 Olivetti faces (not centred, MATH.md §4.3):
dictionary D ∈ ℝ^{K×P} (K = 50 atoms, rows of unit norm at init), code X ∈ ℝ^{400×K}, data Y ∈ ℝ^{400×P}.
Per iteration (one pass, mini-batches of 200 in a shuffled order), for each batch b:

1. **sparse-code step** — ONE gradient-descent step on the reparameterized code of the batch's rows
   (the code of each image persists across iterations), with η = ``lr_scale`` / L, L = ‖D‖₂²:

   * ``power``: X = u^{2k} − v^{2k}, h = Σ u^{2k} + v^{2k}, loss ‖X_b D − Y_b‖² (the paper's code,
     ``main_power.py``; Cor. 3.12, MATH.md §3.3, Eq. 11):
       G = (X_b D − Y_b) Dᵀ,  u ← u − η·2k (2G + α) u^{2k−1},  v ← v − η·2k (−2G + α) v^{2k−1};
     init u_0 = ((x_0 + √(x_0²+1))/2)^{1/(2k)}, v_0 = ((−x_0 + √(x_0²+1))/2)^{1/(2k)}, x_0 ~ N(0, 1)
     (so u_0^{2k} − v_0^{2k} = x_0).
   * ``log``: X = log u − log v, h = Σ log u + log v, loss ½‖X_b D − Y_b‖² (``main_log.py``; MATH.md §3.4,
     R_a(x) = Σ (u_0²+v_0²+4a)/4 · log cosh x + (v_0²−u_0²)/4 · x):
       u ← max(u − η (G + α)/u, 10⁻¹⁰),  v ← max(v − η (−G + α)/v, 10⁻¹⁰);
     init u_0 = σ(x_0), v_0 = σ(−x_0), x_0 ~ N(0, 1) (so log u_0 − log v_0 = x_0).

2. **dictionary step** — accumulate A ← A + X_bᵀX_b (A_0 = 0.01·I), B ← B + Y_bᵀX_b with the new codes,
   then one block-coordinate sweep over the atoms:
   d_j ← (B_{:,j} − Dᵀ A_{:,j}) / A_{jj} + d_j,  d_j ← d_j / max(1, ‖d_j‖).

Metrics after every iteration, over all images: reconstruction MSE = mean((XD − Y)²), the code's
nuclear norm ‖X‖_*, Frobenius norm, ‖X‖₁ = Σ|X_ij| and sparsity (fraction of |X_ij| < ``sparsity_tol``).
The accumulated regularization of the code is a_t = −Σ_s η_s α (one step per image per iteration).

Every (k, α) of a run is one configuration of ONE batched tensor program (``mirrorflow.engine.batched``):
each has its own dictionary, code and accumulators (leading axis C); data, batch order, the initial
dictionary and x_0 are shared. A configuration whose state stops being finite is recorded as diverged.

Deviations from the paper's code (documented in ``docs/diagonal-and-sparse-coding.md``):
* the code accumulates A, B per position in the batch and sweeps the atoms once per position (200 sweeps
  per batch); we use Mairal's aggregated A, B and one sweep per batch (MATH.md §4.3's description);
* ``main_log.py`` at the stored commit uses η = 1/L and x_0 = 0.1; we use MATH.md's η = 0.001/L and
  x_0 ~ N(0, 1) for both parameterizations (``lr_scale`` overrides η).
Paper size: ``image_size=64`` (4096 pixels), ``iterations=100``; the defaults are the paper's sizes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..config import build, config_dict, require
from ..engine.batched import Trace, run_batched, torch_threads
from ..engine.progress import progress_or_bar
from ..store import RunDir
from ..report.figures import save_png, trace_plot

PARAMS = ("power", "log")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
IMAGE_SIZES = (64, 32, 16, 8, 4)
LOG_CLAMP = 1e-10  # main_log.py keeps u, v ≥ 1e-10
A0 = 0.01  # A_0 = 0.01·I


@dataclass(frozen=True)
class Config:
    """One reparameterization with a sweep over k (power) and/or α; all pairs run as one batch."""

    param: str = "power"  # "power": u^{2k} − v^{2k};  "log": log u − log v
    ks: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)  # power only
    alphas: tuple[float, ...] = (0.001,)
    n_atoms: int = 50
    batch_size: int = 200
    iterations: int = 100
    lr_scale: float = 0.001  # η = lr_scale / ‖D‖₂²
    image_size: int = 64  # 64 = paper; smaller sizes average-pool the faces
    n_images: int = 400
    seed: int = 0
    sparsity_tol: float = 1e-2
    dtype: str = "float64"
    threads: int = 1  # torch intra-op threads (0 = torch's default); one is fastest on a shared 2-core CPU

    def validate(self) -> None:
        require(self.param in PARAMS, f"param must be one of {', '.join(PARAMS)}, got {self.param!r}")
        require(len(self.ks) > 0, "ks must list at least one k")
        for k in self.ks:
            require(1 <= k <= 50, f"ks must be integers in 1..50, got {k}")
        require(len(self.alphas) > 0, "alphas must list at least one value")
        for a in self.alphas:
            require(math.isfinite(a) and a >= 0, f"alphas must be non-negative numbers, got {a}")
        require(self.n_atoms > 0, f"n_atoms must be positive, got {self.n_atoms}")
        require(1 <= self.n_images <= 400, f"n_images must be in 1..400, got {self.n_images}")
        require(0 < self.batch_size <= self.n_images, f"batch_size must be in 1..n_images={self.n_images}, got {self.batch_size}")
        require(self.iterations > 0, f"iterations must be positive, got {self.iterations}")
        require(math.isfinite(self.lr_scale) and self.lr_scale > 0, f"lr_scale must be positive, got {self.lr_scale}")
        require(self.image_size in IMAGE_SIZES, f"image_size must be one of {', '.join(map(str, IMAGE_SIZES))}, got {self.image_size}")
        require(self.sparsity_tol > 0, f"sparsity_tol must be positive, got {self.sparsity_tol}")
        require(self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        require(self.threads >= 0, f"threads must be non-negative (0 = torch's default), got {self.threads}")

    def grid(self) -> list[tuple[int, float]]:
        """The (k, α) configurations of this run (k is 1 and unused for ``log``)."""
        ks = self.ks if self.param == "power" else (1,)
        return [(k, a) for k in ks for a in self.alphas]

    def labels(self) -> list[str]:
        if self.param == "log":
            return [f"α={a:g}" for _, a in self.grid()]
        if len(self.alphas) == 1:
            return [f"k={k}" for k, _ in self.grid()]
        return [f"k={k}, α={a:g}" for k, a in self.grid()]


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

    ``lam`` is α per configuration, ``lr`` the relative step ``lr_scale`` (η = lr / ‖D‖₂² per batch).
    """

    def __init__(self, Y: torch.Tensor, param: str, ks: Sequence[int], n_atoms: int, batch_size: int,
                 seed: int = 0, sparsity_tol: float = 1e-2):
        self.Y = Y
        self.param = param
        self.n_configs = len(ks)
        dt = Y.dtype
        self.k = torch.as_tensor(list(ks), dtype=dt).view(-1, 1, 1)
        self.n_atoms = n_atoms
        self.batch_size = batch_size
        self.sparsity_tol = sparsity_tol
        self.gen = torch.Generator().manual_seed(seed + 1)
        g0 = torch.Generator().manual_seed(seed)
        D = torch.randn(n_atoms, Y.shape[1], generator=g0, dtype=torch.float64)
        self.D0 = (D / (1e-5 + D.norm(dim=1, keepdim=True))).to(dt)
        self.x0 = torch.randn(Y.shape[0], n_atoms, generator=g0, dtype=torch.float64).to(dt)
        self._y_sq = (Y * Y).sum()

    # --- code parameterization X = g(u, v)
    def code(self, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        if self.param == "power":
            return U.pow(2 * self.k) - V.pow(2 * self.k)
        return torch.log(U) - torch.log(V)

    def init_state(self) -> dict[str, torch.Tensor]:
        C, (n, K), P = self.n_configs, self.x0.shape, self.Y.shape[1]
        x0 = self.x0.expand(C, n, K)
        if self.param == "power":
            root = torch.sqrt(x0 * x0 + 1.0)
            U = ((x0 + root) / 2).pow(1.0 / (2 * self.k))
            V = ((-x0 + root) / 2).pow(1.0 / (2 * self.k))
        else:
            U, V = torch.sigmoid(x0), torch.sigmoid(-x0)
        return {
            "U": U.clone(), "V": V.clone(),
            "D": self.D0.expand(C, K, P).clone(),
            "A": (A0 * torch.eye(K, dtype=self.Y.dtype)).expand(C, K, K).clone(),
            "Bt": torch.zeros(C, K, P, dtype=self.Y.dtype),  # Bᵀ = Σ X_bᵀ Y_b, stored (C, K, P)
            "a": torch.zeros(C, dtype=self.Y.dtype),
        }

    def _code_step(self, U, V, D, gram, Yb, alpha, eta):
        """One reparameterized GD step on the batch's code (see module docstring).

        G = (X D − Y_b) Dᵀ = X (D Dᵀ) − Y_b Dᵀ: the (C, b, P) residual is never formed."""
        X = self.code(U, V)
        G = X @ gram - torch.matmul(D, Yb.T).transpose(1, 2)  # (C, b, K); (C·K, P)@(P, b) is one GEMM
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

    @staticmethod
    def _dictionary_step(D, A, Bt):
        """One block-coordinate sweep over the atoms (Mairal et al. 2009, Alg. 2)."""
        D = D.clone()
        for j in range(D.shape[1]):
            ajj = A[:, j, j].clamp_min(1e-12).view(-1, 1, 1)
            # A is symmetric: row j of A equals column j, and (C,1,K)@(C,K,P) is one batched GEMV
            u = (Bt[:, j:j + 1, :] - torch.bmm(A[:, j:j + 1, :], D)) / ajj + D[:, j:j + 1, :]
            D[:, j:j + 1, :] = u / torch.clamp(1e-5 + u.norm(dim=2, keepdim=True), min=1.0)
        return D

    def step(self, state, lam, lr, t):
        U, V, D, A, Bt, a = (state[k] for k in ("U", "V", "D", "A", "Bt", "a"))
        U, V = U.clone(), V.clone()
        n = self.Y.shape[0]
        perm = torch.randperm(n, generator=self.gen)
        etas = []
        for s in range(0, n, self.batch_size):
            idx = perm[s:s + self.batch_size]
            Yb = self.Y[idx]
            gram = D @ D.transpose(1, 2)
            eta = lr / _rowwise_finite(lambda G: torch.linalg.eigvalsh(G)[:, -1], gram)  # η = lr/‖D‖₂²
            Ub, Vb = self._code_step(U[:, idx], V[:, idx], D, gram, Yb, lam, eta)
            U[:, idx], V[:, idx] = Ub, Vb
            Xb = self.code(Ub, Vb)
            A = A + Xb.transpose(1, 2) @ Xb
            Bt = Bt + torch.matmul(Xb.transpose(1, 2), Yb)
            D = self._dictionary_step(D, A, Bt)
            etas.append(eta)
        a = a - lam * torch.stack(etas).mean(0)
        return {"U": U, "V": V, "D": D, "A": A, "Bt": Bt, "a": a}

    def metrics(self, state) -> dict[str, torch.Tensor]:
        X, D = self.code(state["U"], state["V"]), state["D"]
        # ‖XD − Y‖² = ⟨XᵀX, DDᵀ⟩ − 2⟨XᵀY, D⟩ + ‖Y‖²  (no (C, n, P) residual)
        XtX = X.transpose(1, 2) @ X
        sq = (XtX * (D @ D.transpose(1, 2))).sum((1, 2)) - 2 * (torch.matmul(X.transpose(1, 2), self.Y) * D).sum((1, 2))
        sq = (sq + self._y_sq).clamp_min(0.0)
        sv = _rowwise_finite(torch.linalg.svdvals, X)
        return {
            "mse": sq / self.Y.numel(),
            "nuclear_norm": sv.sum(-1),
            "frobenius_norm": X.flatten(1).norm(dim=1),
            "l1": X.abs().sum(dim=(1, 2)),
            "sparsity": (X.abs() < self.sparsity_tol).to(X.dtype).mean(dim=(1, 2)),
            "a_code": state["a"],
        }


# --------------------------------------------------------------------------------------- running
def run_sweep(cfg: Config, progress: Callable[[int], None] | None = None, Y: np.ndarray | None = None) -> Trace:
    """All (k, α) of ``cfg`` as one batched run of ``cfg.iterations`` iterations."""
    dtype = DTYPES[cfg.dtype]
    Y = faces(cfg.image_size, cfg.n_images) if Y is None else Y
    Yt = torch.as_tensor(np.asarray(Y), dtype=dtype)
    grid = cfg.grid()
    problem = SparseCoding(Yt, cfg.param, [k for k, _ in grid], cfg.n_atoms, cfg.batch_size, cfg.seed, cfg.sparsity_tol)
    lam = torch.tensor([[a] for _, a in grid], dtype=dtype).expand(len(grid), cfg.iterations).contiguous()
    with torch_threads(cfg.threads):
        return run_batched(problem, lam, cfg.lr_scale, log_every=1, progress=progress)


def settled_iteration(values: np.ndarray, rel_tol: float = 0.01) -> int | None:
    """First logged index t from which ``values`` stays within ``rel_tol`` (relative) of its final value:
    |v_s − v_T| ≤ rel_tol·|v_T| for all s ≥ t. None for a diverged (non-finite) series. This is how the
    table measures when the code's nuclear norm "becomes stationary" (App. E, Fig. 11a)."""
    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).all():
        return None
    outside = np.abs(v - v[-1]) > rel_tol * abs(v[-1])
    idx = np.nonzero(outside)[0]
    return 0 if len(idx) == 0 else int(idx[-1] + 1)


def summarize(cfg: Config, trace: Trace) -> list[dict]:
    """Per configuration: final metrics, the iteration from which ‖X‖_* stays within 1% of its final value
    and the first iteration where the MSE is within 10% of its final value."""
    out = []
    for c, ((k, alpha), label) in enumerate(zip(cfg.grid(), cfg.labels())):
        div = int(trace.diverged_at[c])
        mse = trace.metrics["mse"][c]
        nuc = trace.metrics["nuclear_norm"][c]
        row = {"label": label, "k": k if cfg.param == "power" else None, "alpha": alpha,
               "diverged_at": div if div >= 0 else None, "status": "diverged" if div >= 0 else "finished"}
        for name in ("mse", "nuclear_norm", "frobenius_norm", "l1", "sparsity", "a_code"):
            row[name] = float(trace.metrics[name][c, -1])
        row["mse_at_10"] = float(mse[min(10, len(mse) - 1)])
        row["nuclear_settled_at"] = settled_iteration(nuc)
        if div < 0 and np.isfinite(mse).all():
            row["mse_within_10pct_at"] = int(np.nonzero(mse <= 1.1 * mse[-1])[0][0])
        else:
            row["mse_within_10pct_at"] = None
        out.append(row)
    return out


def metric_rows(cfg: Config, trace: Trace) -> list[dict]:
    return [{"param": cfg.param, **r} for r in trace.rows(cfg.labels())]


def _plot(cfg: Config, trace: Trace, metric: str, title: str):
    ylabel = {"mse": "reconstruction MSE", "nuclear_norm": "‖X‖∗ (code nuclear norm)", "sparsity": "fraction |Xij| < tol",
              "l1": "‖X‖₁", "frobenius_norm": "‖X‖F"}[metric]
    return trace_plot(trace, cfg.labels(), metric, ylabel, log=metric == "mse", xlabel="iteration", title=title)


def run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None) -> dict:
    """One reparameterization, all (k, α) batched, into run directory ``out``."""
    rd = RunDir(out)
    rd.write_config({"experiment": "sparse-coding", **config_dict(cfg)})
    t0 = time.perf_counter()
    trace = run_sweep(cfg, progress)
    rd.write_metrics(metric_rows(cfg, trace))
    title = "x = u^(2k) − v^(2k)" if cfg.param == "power" else "x = log u − log v"
    for metric in ("mse", "nuclear_norm", "sparsity"):
        save_png(_plot(cfg, trace, metric, title), rd.file(f"{metric}.png"))
    rows = summarize(cfg, trace)
    summary = {"experiment": "sparse-coding", "param": cfg.param, "configs": rows,
               "diverged": sum(r["status"] == "diverged" for r in rows),
               "seconds": round(time.perf_counter() - t0, 3)}
    rd.finish(summary)
    return summary


# -------------------------------------------------------------------------------- Figs. 11, 13
LOG_ALPHAS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # main_log.py's sweep


@dataclass(frozen=True)
class _LogSweep:
    """The ``log_alphas=`` override of :func:`reproduce` (α values of the log u − log v run)."""

    log_alphas: tuple[float, ...] = LOG_ALPHAS


def _fmt(v, spec=".3g"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec)


def table_markdown(power: Config, log: Config, rows_power: Sequence[Mapping], rows_log: Sequence[Mapping]) -> str:
    head = (
        f"Sparse coding on Olivetti faces (App. E; {power.n_images} images of {power.image_size}×{power.image_size}, "
        f"{power.n_atoms} atoms, batch {power.batch_size}, {power.iterations} iterations, η = {power.lr_scale:g}/‖D‖₂²)\n\n"
        "| reparameterization | config | MSE final | MSE at it. 10 | MSE within 10% at it. | ‖X‖∗ final "
        "| ‖X‖∗ within 1% of final from it. | ‖X‖_F | sparsity | a_∞ |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for name, rows in (("u^(2k) − v^(2k)", rows_power), ("log u − log v", rows_log)):
        for r in rows:
            if r["status"] == "diverged":
                lines.append(f"| {name} | {r['label']} | diverged at it. {r['diverged_at']} | – | – | – | – | – | – | – |")
                continue
            lines.append(
                f"| {name} | {r['label']} | {r['mse']:.4g} | {r['mse_at_10']:.4g} | {_fmt(r['mse_within_10pct_at'], 'd')} "
                f"| {r['nuclear_norm']:.4g} | {_fmt(r['nuclear_settled_at'], 'd')} | {r['frobenius_norm']:.4g} "
                f"| {r['sparsity']:.3f} | {r['a_code']:.3g} |"
            )
    return head + "\n".join(lines) + "\n"


def reproduce(out: Path | str, overrides: Mapping[str, str] | None = None,
              progress: Callable[[int], None] | None = None) -> str:
    """Fig. 11 (u^{2k} − v^{2k}, k = 1..10, α = 0.001) and Fig. 13 (log u − log v, α sweep) analogs.

    Overrides apply to both runs (e.g. ``image_size=32 iterations=50``); ``alphas`` applies to the power
    run, ``log_alphas`` to the log run. Writes ``fig11a_nuclear_norm.png``, ``fig11b_mse.png``,
    ``fig13a_mse.png``, ``fig13b_nuclear_norm.png``, ``metrics.csv``, ``table.md``, ``summary.json``.
    """
    from ..errors import ConfigError

    ov = dict(overrides or {})
    if "param" in ov:
        raise ConfigError("param: reproduce runs both reparameterizations; drop param=")
    log_alphas = build(_LogSweep, {"log_alphas": ov.pop("log_alphas")}).log_alphas if "log_alphas" in ov else LOG_ALPHAS
    power_cfg = build(Config, {**ov, "param": "power"})
    log_cfg = build(Config, {**{k: v for k, v in ov.items() if k not in ("alphas", "ks")}, "param": "log",
                             "alphas": log_alphas})
    rd = RunDir(out)
    rd.write_config({"experiment": "sparse-coding", "reproduce": "figs11-13",
                     "power": config_dict(power_cfg), "log": config_dict(log_cfg)})
    t0 = time.perf_counter()
    Y = faces(power_cfg.image_size, power_cfg.n_images)
    total = power_cfg.iterations + log_cfg.iterations
    with progress_or_bar(progress, total, "sparse coding (Figs. 11, 13)") as progress:
        tr_power = run_sweep(power_cfg, progress, Y)
        tr_log = run_sweep(log_cfg, progress, Y)
    rows_power, rows_log = summarize(power_cfg, tr_power), summarize(log_cfg, tr_log)
    rd.write_metrics(metric_rows(power_cfg, tr_power) + metric_rows(log_cfg, tr_log))
    save_png(_plot(power_cfg, tr_power, "nuclear_norm", "Fig. 11a: u^(2k) − v^(2k)"), rd.file("fig11a_nuclear_norm.png"))
    save_png(_plot(power_cfg, tr_power, "mse", "Fig. 11b: u^(2k) − v^(2k)"), rd.file("fig11b_mse.png"))
    save_png(_plot(log_cfg, tr_log, "mse", "Fig. 13: log u − log v"), rd.file("fig13a_mse.png"))
    save_png(_plot(log_cfg, tr_log, "nuclear_norm", "Fig. 13: log u − log v"), rd.file("fig13b_nuclear_norm.png"))
    save_png(_plot(power_cfg, tr_power, "sparsity", "u^(2k) − v^(2k)"), rd.file("sparsity_power.png"))
    save_png(_plot(log_cfg, tr_log, "sparsity", "log u − log v"), rd.file("sparsity_log.png"))
    table = table_markdown(power_cfg, log_cfg, rows_power, rows_log)
    rd.write_text("table.md", table)
    rd.finish({"experiment": "sparse-coding", "power": rows_power, "log": rows_log,
               "seconds": round(time.perf_counter() - t0, 3)})
    return table


def estimate_bytes(cfg: Config) -> int:
    """Memory of one run's big tensors, from the config alone (checked before allocating): the images, the
    (pixels, atoms) dictionary and the (atoms, batch) codes of every (k, α) arm."""
    item = 4 if cfg.dtype == "float32" else 8
    pixels = cfg.image_size * cfg.image_size
    arms = max(1, len(cfg.ks)) * max(1, len(cfg.alphas))
    return item * (cfg.n_images * pixels + 4 * pixels * cfg.n_atoms + 6 * arms * cfg.n_atoms * cfg.batch_size)

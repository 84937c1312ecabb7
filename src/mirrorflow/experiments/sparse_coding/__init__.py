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

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...config import build, config_dict, require
from ...engine.batched import Trace, run_batched
from ...engine.progress import progress_or_bar
from ...engine.protocol import Plan
from ...errors import ConfigError
from ...report.figures import save_png
from ...runtime import resolve_device, torch_threads
from ...store import RunDir
from . import report as R
from .problem import LOG_CLAMP, SparseCoding, spectral_norm_sq  # noqa: F401 (re-exported)

PARAMS = ("power", "log")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
IMAGE_SIZES = (64, 32, 16, 8, 4)
DICT_UPDATES = ("aggregated", "per_sample")
LOG_INITS = ("independent", "shared")


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
        require(
            len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds),
            f"seeds must list distinct integers, got {','.join(map(str, self.seeds))}",
        )
        require(all(s >= 0 for s in self.seeds), f"seeds must be non-negative, got {','.join(map(str, self.seeds))}")
        require(self.n_atoms > 0, f"n_atoms must be positive, got {self.n_atoms}")
        require(1 <= self.n_images <= 400, f"n_images must be in 1..400, got {self.n_images}")
        require(
            0 < self.batch_size <= self.n_images,
            f"batch_size must be in 1..n_images={self.n_images}, got {self.batch_size}",
        )
        require(self.iterations > 0, f"iterations must be positive, got {self.iterations}")
        require(math.isfinite(self.lr_scale) and self.lr_scale > 0, f"lr_scale must be positive, got {self.lr_scale}")
        require(
            self.dict_update in DICT_UPDATES,
            f"dict_update must be one of {', '.join(DICT_UPDATES)}, got {self.dict_update!r}",
        )
        require(
            self.dict_update != "per_sample" or self.n_images % self.batch_size == 0,
            f"dict_update=per_sample needs batch_size dividing n_images={self.n_images} (one A[i], B[i] per "
            f"batch position), got batch_size={self.batch_size}",
        )
        require(self.log_init in LOG_INITS, f"log_init must be one of {', '.join(LOG_INITS)}, got {self.log_init!r}")
        require(
            self.image_size in IMAGE_SIZES,
            f"image_size must be one of {', '.join(map(str, IMAGE_SIZES))}, got {self.image_size}",
        )
        require(self.sparsity_tol > 0, f"sparsity_tol must be positive, got {self.sparsity_tol}")
        require(self.stationary_tol > 0, f"stationary_tol must be positive, got {self.stationary_tol}")
        require(self.stationary_window >= 1, f"stationary_window must be at least 1, got {self.stationary_window}")
        require(self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        resolve_device(self.device)  # ConfigError for cuda on a machine without CUDA (outside a dry run's planning)
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


# --------------------------------------------------------------------------------------------- data
def faces(image_size: int = 64, n_images: int = 400, path: str | Path | None = None) -> np.ndarray:
    """Olivetti faces (n_images, image_size²) in [0, 1]; sizes < 64 average-pool 64/size × 64/size blocks."""
    from ...data import load_olivetti

    Y = load_olivetti(path)[:n_images]
    if image_size != 64:
        f = 64 // image_size
        Y = Y.reshape(-1, image_size, f, image_size, f).mean(axis=(2, 4)).reshape(len(Y), -1)
    return Y


# --------------------------------------------------------------------------------------- running
def run_sweep(
    cfg: Config,
    progress: Callable[[int], None] | None = None,
    Y: np.ndarray | None = None,
    return_problem: bool = False,
):
    """All (seed, k, α) of ``cfg`` as one batched run of ``cfg.iterations`` iterations on ``cfg.device``."""
    dtype, device = DTYPES[cfg.dtype], resolve_device(cfg.device)
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
        row = {
            "label": label,
            "point": cfg.point_labels()[c % len(cfg.points())],
            "seed": seed,
            "k": k if cfg.param == "power" else None,
            "alpha": alpha,
            "diverged_at": div if div >= 0 else None,
            "status": "diverged" if div >= 0 else "finished",
        }
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


# ------------------------------------------------------------------------------- run, reproduce
def run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None) -> dict:
    """One reparameterization, all (seed, k, α) batched, into run directory ``out``."""
    rd = RunDir(out)
    rd.write_config({"experiment": "sparse-coding", **config_dict(cfg)})
    t0 = time.perf_counter()
    trace = run_sweep(cfg, progress)
    rd.write_metrics(metric_rows(cfg, trace))
    title = "x = u^(2k) − v^(2k)" if cfg.param == "power" else "x = log u − log v"
    for metric in ("mse", "nuclear_norm", "sparsity"):
        save_png(R.plot(cfg, trace, metric, title), rd.file(f"{metric}.png"))
    rows = summarize(cfg, trace)
    name = "u^(2k) − v^(2k)" if cfg.param == "power" else "log u − log v"
    table = R.table_markdown([(name, cfg, rows)])
    rd.write_text("table.md", table)
    summary = {
        "experiment": "sparse-coding",
        "param": cfg.param,
        "configs": rows,
        "diverged": sum(r["status"] == "diverged" for r in rows),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    rd.finish(summary)
    return summary


@dataclass(frozen=True)
class _Extra:
    """The keys of ``reproduce`` beyond ``Config``: the preset and the log run's α values."""

    preset: str = "paper"
    log_alphas: tuple[float, ...] = R.LOG_ALPHAS


def reproduce_plan(overrides: Mapping[str, str] | None = None) -> Plan:
    """``reproduce``'s overrides resolved: ``preset=paper`` → the power run (label ``power``) and the log run
    (``log``; ``alphas``/``ks`` apply to the power run only, ``log_alphas`` to the log run), seeds 0,1,2 unless
    given; ``preset=authors`` → one power run with ``R.AUTHORS_PRESET`` under the user's keys."""
    ov = dict(overrides or {})
    if "param" in ov:
        raise ConfigError("param: reproduce runs both reparameterizations; drop param=")
    given = {k: ov.pop(k) for k in ("preset", "log_alphas") if k in ov}
    extra = build(_Extra, given)
    if extra.preset not in ("paper", "authors"):
        raise ConfigError(f"preset must be one of paper, authors, got {extra.preset!r}")
    if extra.preset == "authors" and "log_alphas" in given:
        raise ConfigError(
            "log_alphas: preset=authors runs no log reparameterization; drop log_alphas= or use preset=paper"
        )
    if extra.preset == "authors":
        return Plan((("power", build(Config, {**R.AUTHORS_PRESET, **ov, "param": "power"})),), {"preset": "authors"})
    ov.setdefault("seeds", ",".join(map(str, R.PAPER_SEEDS)))
    power = build(Config, {**ov, "param": "power"})
    log = build(
        Config,
        {**{k: v for k, v in ov.items() if k not in ("alphas", "ks")}, "param": "log", "alphas": extra.log_alphas},
    )
    return Plan((("power", power), ("log", log)), {"preset": "paper"})


def reproduce(
    out: Path | str, overrides: Mapping[str, str] | None = None, progress: Callable[[int], None] | None = None
) -> str:
    """``preset=paper``: Fig. 11 (u^{2k} − v^{2k}, k = 1..10, α = 0.001) and Fig. 13 (log u − log v, α sweep)
    analogs over ``seeds`` (default 0,1,2). ``preset=authors``: the stored-curve setting (η = 0.01/‖D‖₂²,
    per-sample update, k = 1, 2, 3) against the stored numbers. Other keys override either preset and apply
    to both runs; ``alphas``/``ks`` apply to the power run, ``log_alphas`` to the log run."""
    plan = reproduce_plan(overrides)
    if plan.options["preset"] == "authors":
        return _reproduce_authors(out, plan.config, progress)
    (_, power), (_, log) = plan.configs
    rd = RunDir(out)
    rd.write_config(
        {
            "experiment": "sparse-coding",
            "reproduce": "figs11-13",
            "preset": "paper",
            "power": config_dict(power),
            "log": config_dict(log),
        }
    )
    t0 = time.perf_counter()
    Y = faces(power.image_size, power.n_images)
    with progress_or_bar(progress, power.iterations + log.iterations, "sparse coding (Figs. 11, 13)") as progress:
        tr_power = run_sweep(power, progress, Y)
        tr_log = run_sweep(log, progress, Y)
    rows_power, rows_log = summarize(power, tr_power), summarize(log, tr_log)
    rd.write_metrics(metric_rows(power, tr_power) + metric_rows(log, tr_log))
    save_png(R.plot(power, tr_power, "nuclear_norm", "Fig. 11a: u^(2k) − v^(2k)"), rd.file("fig11a_nuclear_norm.png"))
    save_png(R.plot(power, tr_power, "mse", "Fig. 11b: u^(2k) − v^(2k)"), rd.file("fig11b_mse.png"))
    save_png(R.plot(log, tr_log, "mse", "Fig. 13: log u − log v"), rd.file("fig13a_mse.png"))
    save_png(R.plot(log, tr_log, "nuclear_norm", "Fig. 13: log u − log v"), rd.file("fig13b_nuclear_norm.png"))
    save_png(R.plot(power, tr_power, "sparsity", "u^(2k) − v^(2k)"), rd.file("sparsity_power.png"))
    save_png(R.plot(log, tr_log, "sparsity", "log u − log v"), rd.file("sparsity_log.png"))
    table = R.table_markdown([("u^(2k) − v^(2k)", power, rows_power), ("log u − log v", log, rows_log)])
    rd.write_text("table.md", table)
    rd.finish(
        {
            "experiment": "sparse-coding",
            "preset": "paper",
            "power": rows_power,
            "log": rows_log,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    return table


def _reproduce_authors(out: Path | str, cfg: Config, progress) -> str:
    rd = RunDir(out)
    rd.write_config(
        {
            "experiment": "sparse-coding",
            "reproduce": "authors-stored-curve",
            "preset": "authors",
            "power": config_dict(cfg),
        }
    )
    t0 = time.perf_counter()
    with progress_or_bar(progress, cfg.iterations, "sparse coding (paper code's stored curve)") as progress:
        trace = run_sweep(cfg, progress)
    rows = summarize(cfg, trace)
    rd.write_metrics(metric_rows(cfg, trace))
    save_png(R.authors_plot(cfg, trace), rd.file("authors_mse.png"))
    save_png(R.plot(cfg, trace, "nuclear_norm", "u^(2k) − v^(2k)"), rd.file("nuclear_norm.png"))
    table = (
        R.table_markdown([("u^(2k) − v^(2k)", cfg, rows)])
        + "\nAgainst the paper code's stored power/MSE.csv (one unseeded run per k):\n\n"
        + R.authors_table(cfg, trace)
    )
    rd.write_text("table.md", table)
    rd.finish(
        {
            "experiment": "sparse-coding",
            "preset": "authors",
            "power": rows,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    return table


def estimate_bytes(cfg: Config) -> int:
    """Memory of one run's big tensors, from the config alone (checked before allocating): the images, the
    (pixels, atoms) dictionary and the (atoms, batch) codes of every (k, α, seed) arm, and with
    ``dict_update=per_sample`` the per-position accumulators A[i] (atoms²) and B[i] (atoms × pixels)."""
    item = 4 if cfg.dtype == "float32" else 8
    pixels = cfg.image_size * cfg.image_size
    arms = max(1, len(cfg.ks)) * max(1, len(cfg.alphas)) * max(1, len(cfg.seeds))
    per_arm = 4 * pixels * cfg.n_atoms + 6 * cfg.n_atoms * cfg.batch_size
    if cfg.dict_update == "per_sample":
        per_arm += cfg.batch_size * cfg.n_atoms * (cfg.n_atoms + pixels)
    return item * (cfg.n_images * pixels + arms * per_arm)

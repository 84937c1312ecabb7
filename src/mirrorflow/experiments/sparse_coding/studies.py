"""Sparse-coding studies (App. E): the presets of ``mirrorflow reproduce sparse-coding`` — the paper's seeds and
the log run's α sweep (``preset=paper``) — and ``preset=authors``: our MSE curve against the paper code's
stored ``power/MSE.csv`` (:data:`AUTHORS_STORED_MSE`: η = 0.01/‖D‖₂², per-sample dictionary update,
k = 1, 2, 3, α = 0.001), mean ± 95% t-interval over the finished seeds next to the stored value and their ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...config import config_dict
from ...engine.batched import Trace
from ...engine.progress import progress_or_bar
from ...report.figures import line_plot, save_png
from ...report.stats import t_interval
from ...report.tables import markdown_table
from ...store import RunDir
from .config import Config
from .problem import run_sweep
from .report import metric_rows, plot, summarize, table_markdown

LOG_ALPHAS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the paper code's sweep for log u − log v
PAPER_SEEDS = (0, 1, 2)
# The paper code's stored power/MSE.csv (k = 1, 2, 3; α = 0.001; η = 0.01/‖D‖₂²; per-sample dictionary
# update; one unseeded run each): reconstruction MSE after t iterations (its wandb step t + 1).
AUTHORS_ITERATIONS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 98)
AUTHORS_STORED_MSE = {
    1: (
        0.3414,
        0.318,
        0.276,
        0.2385,
        0.2038,
        0.165,
        0.1311,
        0.1049,
        0.08601,
        0.05913,
        0.04252,
        0.02855,
        0.01939,
        0.01645,
        0.01571,
        0.01507,
        0.01477,
        0.01442,
        0.01408,
        0.01376,
        0.01353,
        0.01334,
    ),
    2: (
        0.3414,
        0.2247,
        0.132,
        0.06756,
        0.03757,
        0.02522,
        0.01977,
        0.01825,
        0.01734,
        0.01688,
        0.01629,
        0.01594,
        0.01507,
        0.01414,
        0.01339,
        0.01202,
        0.01092,
        0.01019,
        0.009548,
        0.009011,
        0.008596,
        0.008295,
    ),
    3: (
        0.3414,
        0.1308,
        0.05913,
        0.02699,
        0.02343,
        0.02074,
        0.0209,
        0.01773,
        0.0175,
        0.01633,
        0.01557,
        0.01409,
        0.01228,
        0.01115,
        0.01039,
        0.009065,
        0.008144,
        0.007661,
        0.007172,
        0.006803,
        0.006519,
        0.006318,
    ),
}
AUTHORS_PRESET = {"ks": "1,2,3", "lr_scale": "0.01", "dict_update": "per_sample", "seeds": "0,1,2"}
AUTHORS_PRESET = {"ks": "1,2,3", "lr_scale": "0.01", "dict_update": "per_sample", "seeds": "0,1,2"}


def _finished_mse(cfg: Config, trace: Trace) -> np.ndarray:
    """MSE (seeds, points, iterations) with the seeds that diverged masked out (NaN) entirely: their last
    iterations before divergence are orders of magnitude off and would dominate a mean."""
    mse = trace.metrics["mse"].copy()
    mse[trace.diverged_at >= 0] = np.nan
    return mse.reshape(len(cfg.seeds), len(cfg.points()), -1)


def authors_table(cfg: Config, trace: Trace) -> str:
    """Our MSE (mean ± 95% t-interval over the finished seeds) against the stored curve."""
    ks = [k for k in cfg.ks if k in AUTHORS_STORED_MSE]
    mse = _finished_mse(cfg, trace)
    col = {k: [p for p, (kk, _) in enumerate(cfg.points()) if kk == k][0] for k in ks}
    fin = {k: int(np.isfinite(mse[:, col[k], 0]).sum()) for k in ks}
    header = ["iteration"] + [
        c for k in ks for c in (f"k={k} stored", f"k={k} ours ({fin[k]}/{len(cfg.seeds)} seeds)", "ratio")
    ]
    lines = []
    for j, it in enumerate(AUTHORS_ITERATIONS):
        if it >= mse.shape[2]:
            break
        cells = []
        for k in ks:
            m, h, n = t_interval(mse[:, col[k], it])
            stored = AUTHORS_STORED_MSE[k][j]
            ours = "diverged" if not n else f"{m:.4g}" if n == 1 else f"{m:.4g} ± {h:.2g}"
            cells += [f"{stored:.4g}", ours, f"{m / stored:.2f}" if n else "–"]
        lines.append([str(it)] + cells)
    return markdown_table(header, lines)


def authors_plot(cfg: Config, trace: Trace):
    """Our MSE curves (mean over the finished seeds) against the stored curve (markers)."""
    mse = _finished_mse(cfg, trace)
    series = {}
    for g, (k, _) in enumerate(cfg.points()):
        n = int(np.isfinite(mse[:, g, 0]).sum())
        if n:
            series[f"k={k} ours (mean of {n} finished seeds)"] = (trace.steps, np.nanmean(mse[:, g], axis=0))
        if k in AUTHORS_STORED_MSE:
            series[f"k={k} paper code, stored"] = (np.asarray(AUTHORS_ITERATIONS), np.asarray(AUTHORS_STORED_MSE[k]))
    fig = line_plot(
        series,
        "reconstruction MSE",
        log=True,
        xlabel="iteration",
        title=f"u^(2k) − v^(2k), η = {cfg.lr_scale:g}/‖D‖₂², {cfg.dict_update} update",
    )
    ax = fig.axes[0]
    prev = None
    for line in ax.get_lines():  # the stored curve as markers in its k's colour
        if "stored" in str(line.get_label()) and prev is not None:
            line.set_linestyle("none")
            line.set_marker("o")
            line.set_markersize(4)
            line.set_color(prev.get_color())
        prev = line
    ax.legend(fontsize=7)
    return fig


def run_authors(out: Path | str, cfg: Config, progress: Callable[[int], None] | None = None) -> str:
    """``preset=authors``: the stored-curve setting into ``out`` (table.md with our table and the comparison,
    metrics.csv, ``authors_mse.png``, ``nuclear_norm.png``, summary.json); returns the table."""
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
    save_png(authors_plot(cfg, trace), rd.file("authors_mse.png"))
    save_png(plot(cfg, trace, "nuclear_norm", "u^(2k) − v^(2k)"), rd.file("nuclear_norm.png"))
    table = (
        table_markdown([("u^(2k) − v^(2k)", cfg, rows)])
        + "\nAgainst the paper code's stored power/MSE.csv (one unseeded run per k):\n\n"
        + authors_table(cfg, trace)
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

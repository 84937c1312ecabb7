"""Tables and figures of the sparse-coding experiment (App. E, Figs. 11, 13): mean ± 95% t-interval over
seeds per (k, α) with the accumulated regularization a_∞, and our MSE curve against the paper code's stored
``power/MSE.csv`` (:data:`AUTHORS_STORED_MSE`: η = 0.01/‖D‖₂², per-sample dictionary update, k = 1, 2, 3).
``cfg`` arguments are :class:`mirrorflow.experiments.sparse_coding.Config` instances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from ...engine.batched import Trace
from ...report.figures import line_plot, trace_plot
from ...report.stats import t_interval
from ...report.tables import markdown_table

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


# ------------------------------------------------------------------------------------- statistics
def _pm(values, spec=".4g") -> str:
    m, h, n = t_interval(values)
    if n == 0:
        return "–"
    return format(m, spec) if n == 1 else f"{m:{spec}} ± {h:.2g}"


def by_point(cfg: Any, rows: Sequence[Mapping]) -> list[tuple[str, list[Mapping]]]:
    """The summary rows grouped by (k, α) point, in sweep order."""
    labels = cfg.point_labels()
    return [(lab, [r for r in rows if r["point"] == lab]) for lab in labels]


def seed_mean_trace(cfg: Any, trace: Trace):
    """A trace-like object with one curve per (k, α): the mean over seeds (a diverged seed makes it NaN
    from its divergence on; ``diverged_at`` is the earliest divergence)."""
    G, S = len(cfg.points()), len(cfg.seeds)
    metrics = {m: v.reshape(S, G, -1).mean(axis=0) for m, v in trace.metrics.items()}
    div = trace.diverged_at.reshape(S, G)
    first = np.where((div >= 0).any(axis=0), np.where(div >= 0, div, np.iinfo(np.int64).max).min(axis=0), -1)
    return SimpleNamespace(steps=trace.steps, metrics=metrics, diverged_at=first)


# ---------------------------------------------------------------------------------------- tables
def table_markdown(sections: Sequence[tuple[str, Any, Sequence[Mapping]]]) -> str:
    """One row per (reparameterization, point): mean ± 95% t-interval half-width over the finished seeds."""
    c0 = sections[0][1]
    head = (
        f"Sparse coding on Olivetti faces (App. E; {c0.n_images} images of {c0.image_size}×{c0.image_size}, "
        f"{c0.n_atoms} atoms, batch {c0.batch_size}, {c0.iterations} iterations, η = {c0.lr_scale:g}/‖D‖₂², "
        f"dictionary update {c0.dict_update}, seeds {','.join(map(str, c0.seeds))}; mean ± 95% t-interval over "
        f"the finished seeds; ‖X‖∗ stationary = |Δ‖X‖∗|/‖X‖∗ < {c0.stationary_tol:g} per iteration for "
        f"{c0.stationary_window} iterations)\n\n"
    )
    header = [
        "reparameterization",
        "config",
        "finished seeds",
        "MSE at it. 5",
        "MSE at it. 10",
        "MSE at it. 20",
        "MSE final",
        "‖X‖∗ final",
        "‖X‖∗ stationary from it.",
        "sparsity",
        "a_∞",
    ]
    lines = []
    for name, cfg, rows in sections:
        for label, rs in by_point(cfg, rows):
            ok = [r for r in rs if r["status"] == "finished"]
            div = [r for r in rs if r["status"] == "diverged"]
            fin = f"{len(ok)}/{len(rs)}" + (
                f" (diverged at it. {', '.join(str(r['diverged_at']) for r in div)})" if div else ""
            )
            if not ok:
                lines.append([name, label, fin] + ["–"] * 8)
                continue
            never = sum(r["nuclear_stationary_at"] is None for r in ok)
            stat = (
                "–"
                if cfg.iterations <= cfg.stationary_window
                else "never"
                if never == len(ok)
                else _pm([r["nuclear_stationary_at"] for r in ok], ".3g") + (f" ({never} never)" if never else "")
            )
            lines.append(
                [
                    name,
                    label,
                    fin,
                    _pm([r["mse_at_5"] for r in ok]),
                    _pm([r["mse_at_10"] for r in ok]),
                    _pm([r["mse_at_20"] for r in ok]),
                    _pm([r["mse"] for r in ok]),
                    _pm([r["nuclear_norm"] for r in ok]),
                    stat,
                    _pm([r["sparsity"] for r in ok], ".3f"),
                    _pm([r["a_code"] for r in ok], ".3g"),
                ]
            )
    return head + markdown_table(header, lines)


def _finished_mse(cfg: Any, trace: Trace) -> np.ndarray:
    """MSE (seeds, points, iterations) with the seeds that diverged masked out (NaN) entirely: their last
    iterations before divergence are orders of magnitude off and would dominate a mean."""
    mse = trace.metrics["mse"].copy()
    mse[trace.diverged_at >= 0] = np.nan
    return mse.reshape(len(cfg.seeds), len(cfg.points()), -1)


def authors_table(cfg: Any, trace: Trace) -> str:
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


# --------------------------------------------------------------------------------------- figures
YLABELS = {
    "mse": "reconstruction MSE",
    "nuclear_norm": "‖X‖∗ (code nuclear norm)",
    "sparsity": "fraction |Xij| < tol",
    "l1": "‖X‖₁",
    "frobenius_norm": "‖X‖F",
}


def plot(cfg: Any, trace: Trace, metric: str, title: str):
    """One curve per (k, α): the mean over seeds."""
    if len(cfg.seeds) > 1:
        title = f"{title} (mean of {len(cfg.seeds)} seeds)"
    return trace_plot(
        seed_mean_trace(cfg, trace),
        cfg.point_labels(),
        metric,
        YLABELS[metric],
        log=metric == "mse",
        xlabel="iteration",
        title=title,
    )


def authors_plot(cfg: Any, trace: Trace):
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

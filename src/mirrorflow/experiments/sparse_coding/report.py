"""Tables and figures of the sparse-coding experiment (App. E, Figs. 11, 13): per configuration the final
reconstruction MSE = mean((XD − Y)²), the code's nuclear norm ‖X‖_*, its sparsity and a_∞ = −Σ_s η_s α, when
‖X‖_* becomes stationary; mean ± 95% t-interval over seeds per (k, α); one curve per (k, α).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import numpy as np

from ...engine.batched import Trace
from ...report.figures import trace_plot
from ...report.stats import t_interval
from ...report.tables import markdown_table
from .config import Config


# -------------------------------------------------------------------------------------- summaries
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


# ------------------------------------------------------------------------------------- statistics
def _pm(values, spec=".4g") -> str:
    m, h, n = t_interval(values)
    if n == 0:
        return "–"
    return format(m, spec) if n == 1 else f"{m:{spec}} ± {h:.2g}"


def by_point(cfg: Config, rows: Sequence[Mapping]) -> list[tuple[str, list[Mapping]]]:
    """The summary rows grouped by (k, α) point, in sweep order."""
    labels = cfg.point_labels()
    return [(lab, [r for r in rows if r["point"] == lab]) for lab in labels]


def seed_mean_trace(cfg: Config, trace: Trace):
    """A trace-like object with one curve per (k, α): the mean over seeds (a diverged seed makes it NaN
    from its divergence on; ``diverged_at`` is the earliest divergence)."""
    G, S = len(cfg.points()), len(cfg.seeds)
    metrics = {m: v.reshape(S, G, -1).mean(axis=0) for m, v in trace.metrics.items()}
    div = trace.diverged_at.reshape(S, G)
    first = np.where((div >= 0).any(axis=0), np.where(div >= 0, div, np.iinfo(np.int64).max).min(axis=0), -1)
    return SimpleNamespace(steps=trace.steps, metrics=metrics, diverged_at=first)


# ---------------------------------------------------------------------------------------- tables
def table_markdown(sections: Sequence[tuple[str, Config, Sequence[Mapping]]]) -> str:
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


# --------------------------------------------------------------------------------------- figures
YLABELS = {
    "mse": "reconstruction MSE",
    "nuclear_norm": "‖X‖∗ (code nuclear norm)",
    "sparsity": "fraction |Xij| < tol",
    "l1": "‖X‖₁",
    "frobenius_norm": "‖X‖F",
}


def plot(cfg: Config, trace: Trace, metric: str, title: str):
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

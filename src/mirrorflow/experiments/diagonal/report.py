"""Tables and figures of the diagonal networks (App. D, Figs. 8, 9): per weight decay the distance to x* and
the ratio ‖x‖₁/‖x‖₂ at turn-off and at the end, the final loss, x₁ and a_∞ = −η Σ_t λ_t; the curves of one
sweep; and the markdown table of ``reproduce`` next to Theorem 3.11's predicted limit
x_∞ = argmin_{Zx=y} R_{a_∞}(x) (Eq. 9 for m⊙w).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from ...engine.batched import Trace
from ...report.figures import trace_plot
from ...report.tables import markdown_table
from .config import Config
from .problem import RegressionData

MODEL_TITLES = {
    "linear": "linear x, L2",
    "mw": "m⊙w",
    "mwv": "m⊙w⊙v (depth 3)",
    "power": "u^(2k) − v^(2k)",
}
FIG_LETTER = {"linear": "a", "mw": "b", "mwv": "c", "power": "d"}
REPRODUCE_MODELS = ("linear", "mw", "mwv")


def _at_step(trace: Trace, name: str, step: int) -> np.ndarray:
    j = int(np.searchsorted(trace.steps, step))
    j = min(j, len(trace.steps) - 1)
    return trace.metrics[name][:, j]


def summarize(cfg: Config, trace: Trace, data: RegressionData) -> list[dict]:
    """Per weight decay: distance to x* and ‖x‖₁/‖x‖₂ at turn-off and at the end, loss, x_1, a_∞."""
    out = []
    K = cfg.off_step
    for c, lam in enumerate(cfg.weight_decays):
        div = int(trace.diverged_at[c])
        final_loss = float(trace.final("train_loss")[c])
        # converged: final train loss below cfg.converged_loss; also reported: how much the distance to x*
        # still moved over the last 10% of the off phase (docs/theory.md#convergence: do not read an unconverged state
        # as the limit)
        tail = trace.metrics["dist"][c]
        j0 = int(np.searchsorted(trace.steps, cfg.steps - max(1, (cfg.steps - K) // 10)))
        window = tail[j0:]
        moving = float(window.max() - window.min()) if len(window) and np.isfinite(window).all() else float("nan")
        out.append(
            {
                "weight_decay": lam,
                "dist_on": float(_at_step(trace, "dist", K)[c]),
                "l1_l2_on": float(_at_step(trace, "l1_l2", K)[c]),
                "dist_final": float(trace.final("dist")[c]),
                "l1_l2_final": float(trace.final("l1_l2")[c]),
                "train_loss_final": final_loss,
                "x1_final": float(trace.final("x1")[c]),
                "a_final": float(trace.final("a")[c]),
                "dist_change_last10pct": moving,
                "converged": bool(div < 0 and final_loss < cfg.converged_loss),
                "diverged_at": div if div >= 0 else None,
                "status": "diverged" if div >= 0 else "finished",
            }
        )
    return out


def metric_rows(cfg: Config, trace: Trace) -> list[dict]:
    """The rows of metrics.csv: one per weight decay and logged step."""
    return trace.rows([f"{cfg.model} wd={lam:g}" for lam in cfg.weight_decays])


def model_title(cfg: Config) -> str:
    """The parameterization's name in a figure title (with k for u^{2k} − v^{2k})."""
    return MODEL_TITLES[cfg.model] + (f", k={cfg.k}" if cfg.model == "power" else "")


def plot_sweep(cfg: Config, trace: Trace, data: RegressionData, metric: str, title: str):
    """One metric of every weight decay against the step (the turn-off marked; for ‖x‖₁/‖x‖₂ the ratio of x*)."""
    labels = [f"λ={lam:g}" for lam in cfg.weight_decays]
    hline = data.ratio_star if metric == "l1_l2" else None
    ylabel = {"dist": "‖x − x*‖₂", "l1_l2": "‖x‖₁ / ‖x‖₂", "train_loss": "train loss", "x1": "x₁"}[metric]
    return trace_plot(
        trace,
        labels,
        metric,
        ylabel,
        log=metric in ("dist", "train_loss"),
        title=title,
        hline=hline,
        vline=cfg.off_step,
    )


def _fmt(v: float | None, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec)


def table_markdown(
    base: Config,
    rows: Sequence[tuple[str, Mapping]],
    ratio_star: float,
    x1_star: float,
    models: Sequence[str] = REPRODUCE_MODELS,
) -> str:
    """The table of ``reproduce diagonal``: one row per model and weight decay."""
    etas = ", ".join(f"{m} {replace(base, model=m).step_size:g}" for m in models)
    head = (
        f"Diagonal linear networks, Figs. 8/9 (N={base.n_samples}, d={base.dim}, ‖x*‖₀={base.sparsity}, "
        f"init scale {base.init_scale:g}, η: {etas}, {base.off_step} steps with weight decay + "
        f"{base.steps - base.off_step} without; ‖x*‖₁/‖x*‖₂ = {ratio_star:.3f}, x*₁ = {x1_star:.3f})\n\n"
    )
    header = [
        "model",
        "λ",
        "a_∞",
        "dist at turn-off",
        "dist final",
        "L1/L2 at turn-off",
        "L1/L2 final",
        "train loss",
        "x₁ final",
        "converged",
        "Thm 3.11: dist of x_pred",
        "Thm 3.11: ‖x_pred − x_trained‖",
    ]
    lines = []
    for model, r in rows:
        if r["status"] == "diverged":
            lines.append(
                [model, f"{r['weight_decay']:g}", f"diverged at step {r['diverged_at']}"] + ["–"] * 6 + ["no", "–", "–"]
            )
            continue
        if "pred_dist" not in r:
            pred = gap = "–"
        elif not r.get("pred_converged", False):
            pred = gap = "solver n.c."
        else:
            pred, gap = _fmt(r["pred_dist"], ".3g"), _fmt(r["pred_gap"], ".2g")
        lines.append(
            [
                model,
                f"{r['weight_decay']:g}",
                f"{r['a_final']:.3g}",
                f"{r['dist_on']:.3g}",
                f"{r['dist_final']:.3g}",
                f"{r['l1_l2_on']:.3f}",
                f"{r['l1_l2_final']:.3f}",
                f"{r['train_loss_final']:.1e}",
                f"{r['x1_final']:.3f}",
                "yes" if r["converged"] else "no",
                pred,
                gap,
            ]
        )
    return head + markdown_table(header, lines)

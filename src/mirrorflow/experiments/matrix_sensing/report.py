"""Tables and figures of matrix sensing (Table 2, Figs. 3, 5, 6, 7): a run's final metrics, its metrics.csv
rows, Table 2 as markdown and its figures.

The columns are those of the paper's Table 2: the nuclear norm ‖W‖_* (the target is ‖W*‖_* = 1), the train
loss f(W) = 1/(2m) Σ_i (⟨A_i, W⟩ − y_i)², the reconstruction error ‖W − W*‖_F, the first step whose loss is
below ``loss_threshold``, and the accumulated regularization a_∞ = −η Σ_s λ_s (docs/theory.md#notation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ...report.tables import markdown_table
from ...store import RunDir
from .config import Config


def summarize(cfg: Config, res: Mapping) -> dict:
    """Final metrics of one run (what Table 2 reports)."""
    mt = res["metrics"]
    hit = mt["hit_step"][-1]
    out = {
        "nuclear_norm": float(mt["nuclear_norm"][-1]),
        "train_loss": float(mt["train_loss"][-1]),
        "rec_error": float(mt["rec_error"][-1]),
        "effective_rank": float(mt["effective_rank"][-1]),
        "time_to_train_loss": int(hit) if np.isfinite(hit) and hit >= 0 else None,
        "a_final": float(mt["a"][-1]),
        "budget": cfg.lam_schedule().integral(cfg.steps),
        "diverged_at": res["diverged_at"] if res["diverged_at"] >= 0 else None,
        "status": "diverged" if res["diverged_at"] >= 0 else "finished",
    }
    return out


def metric_rows(res: Mapping, label: str | None = None) -> list[dict]:
    """The rows of metrics.csv for one run's result (one per logged step; ``label`` names its schedule)."""
    mt = res["metrics"]
    rows = []
    for j, s in enumerate(res["steps"]):
        row = {"step": int(s)} if label is None else {"schedule": label, "step": int(s)}
        row.update({k: float(v[j]) for k, v in mt.items() if k != "hit_step"})
        rows.append(row)
    return rows


def run_figure(res: Mapping, rd: RunDir) -> None:
    """``curves.png`` of one run: train loss, reconstruction error and nuclear norm against the step."""
    from ...report.figures import panel_plot, save_png

    panels = {m: {"run": (res["steps"], res["metrics"][m])} for m in ("train_loss", "rec_error", "nuclear_norm")}
    save_png(panel_plot(panels, log={"train_loss": True, "rec_error": True}), rd.file("curves.png"))


def _fmt(v, spec=".3g"):
    if v is None:
        return "–"
    if isinstance(v, float) and not math.isfinite(v):
        return "diverged"
    return format(v, spec)


def table2_markdown(labels: Sequence[str], summaries: Sequence[Mapping], base: Config) -> str:
    """Table 2 as markdown: one row per arm, with the setting in the heading."""
    head = (
        f"Matrix sensing, Table 2 (n={base.n}, r={base.r}, m={base.measurements}, W0={base.init_scale:g}·I, "
        f"η={base.lr:g}, T={base.steps}, Σλ={base.wd * base.steps:g}, loss threshold {base.loss_threshold:g}; "
        f"‖W*‖_* = 1)\n\n"
    )
    rows = []
    for lab, s in zip(labels, summaries):
        if s["status"] == "diverged":
            rows.append([lab, f"diverged at step {s['diverged_at']}", "–", "–", "–", "–"])
            continue
        rows.append(
            [
                lab,
                f"{s['nuclear_norm']:.3f}",
                _fmt(s["train_loss"], ".2e"),
                _fmt(s["rec_error"], ".2e"),
                _fmt(s["time_to_train_loss"], "d"),
                f"{s['a_final']:.3g}",
            ]
        )
    return head + markdown_table(
        ["Schedule", "Nuclear norm", "Train loss", "Rec error", "Time to train loss", "a_∞"], rows
    )


TABLE2_FIGURES = {  # file → (metric, log scale)
    "fig5_train_loss.png": ("train_loss", True),
    "fig5_rec_error.png": ("rec_error", True),
    "fig6_nuclear_norm.png": ("nuclear_norm", False),
    "effective_rank.png": ("effective_rank", False),
}


def table2_figures(
    arms: Mapping[str, tuple[str, Config]],
    results: Mapping[str, Mapping],
    rd: RunDir,
    fig3: Sequence[str],
    fig7: str,
) -> None:
    """Table 2's figures into ``rd``: every arm's curves (Figs. 5, 6 and the effective rank), Fig. 3's
    scenarios for both parameterizations (the arms named in ``fig3``: reconstruction error) and Fig. 7's
    grokking curve of arm ``fig7`` (train loss and reconstruction error, the switch-off marked).

    ``arms`` maps an arm's name to (label, config) and ``results`` its name to its result (``run_many``)."""
    from ...report.figures import line_plot, save_png

    for name, (metric, log) in TABLE2_FIGURES.items():
        series = {lab: (results[k]["steps"], results[k]["metrics"][metric]) for k, (lab, _) in arms.items()}
        save_png(line_plot(series, metric, log=log, hline=1.0 if metric == "nuclear_norm" else None), rd.file(name))
    series = {arms[k][0]: (results[k]["steps"], results[k]["metrics"]["rec_error"]) for k in fig3}
    save_png(line_plot(series, "rec_error", log=True), rd.file("fig3_uu_vs_linear.png"))
    (label, cfg), res = arms[fig7], results[fig7]
    series = {
        f"{label}: train loss": (res["steps"], res["metrics"]["train_loss"]),
        f"{label}: rec error": (res["steps"], res["metrics"]["rec_error"]),
    }
    save_png(
        line_plot(series, "value", log=True, vline=cfg.lam_schedule().params.get("at")),
        rd.file("fig7_grokking.png"),
    )

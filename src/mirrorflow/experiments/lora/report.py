"""The LoRA experiment's report (Table 5 / Fig. 4 analogs): per-λ summary rows over seeds, the markdown
tables (per-arm means, the paired difference turned off − kept with its 95 % interval, the per-seed values,
ρ's crossings of every constant-λ curve) and the figures. ``cfg`` is a :class:`.config.Config`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from ...report.stats import PAIRED_COLUMNS, paired_cells
from ...report.stats import format_mean_std as pm
from ...report.tables import markdown_table
from ..transformer_kit import arms as A

# The paper gives no Table 5 values (all of Table 5 is not recoverable); the seeds-needed column uses this
# reference effect on the validation loss instead: 0.01 nats, i.e. a 1 % change of perplexity.
LOSS_EFFECT = 0.01
# accuracy effect of the paper's Table 3 (turned off − kept: +1.7 to +2.4 points; the smallest)
ACC_EFFECT = 0.017


def summarize(cfg: Any, grid: Mapping) -> list[dict]:
    """One row per weight decay: final validation loss/accuracy and ρ of each arm (lists over seeds), the
    paired differences turned off − constant and auto − constant, and ρ's crossings of every constant curve."""
    rows = []
    off_name = f"off@{cfg.off_at}"
    constants = {v: A.by_arm(grid[v]).get("constant", []) for v in grid}
    for value in grid:
        by = A.by_arm(grid[value])
        row: dict = {"weight_decay": value}
        for arm, key in (("constant", "constant"), (off_name, "off"), ("auto", "auto")):
            arms = by.get(arm, [])
            row[f"val_loss_{key}"] = [A.final(a, "val_loss") for a in arms]
            row[f"val_acc_{key}"] = [A.final(a, "val_acc") for a in arms]
            row[f"rho_{key}"] = [A.final(a, "spectral/rho") for a in arms]
            row[f"diverged_{key}"] = sum(a.diverged_at is not None for a in arms)
        row["val_loss_sem"] = [A.final(a, "val_loss_sem") for a in by.get("constant", [])]
        row["auto_off_at"] = [a.off_at for a in by.get("auto", []) if a.off_at is not None]
        const = by.get("constant", [])
        for arm, key in ((off_name, "off"), ("auto", "auto")):
            other = by.get(arm, [])
            if key == "auto" and not any(a.off_at is not None for a in other):
                continue  # never triggered: the auto arm is the constant run
            if value > 0 and other:
                row[f"paired_loss_{key}"] = A.paired_final(const, other, "val_loss", LOSS_EFFECT)
                row[f"paired_acc_{key}"] = A.paired_final(const, other, "val_acc", ACC_EFFECT)
                row["switched"] = row.get("switched", ()) + (arm,)
        off = by.get(off_name, [])
        row["delta_val_loss"] = [A.final(o, "val_loss") - A.final(c, "val_loss") for c, o in zip(const, off)]
        row["arms"] = by
        row["crossings"] = {arm: A.crossings(by[arm], constants) for arm in row.get("switched", ())}
        row["intersection"] = row["crossings"].get(off_name, {}).get(value)
        rows.append(row)
    return rows


def table5_markdown(cfg: Any, rows: list[dict], task_desc: str) -> str:
    """Table 5 analog: final validation loss with weight decay kept vs turned off, as per-arm means and as
    the paired difference over seeds; then when each turned-off ρ crosses every constant-λ ρ curve."""
    acc = cfg.task == "speakers"
    tr, ad = cfg.train, cfg.adapter
    opt = f"SGD momentum {tr.momentum:g}" if tr.optimizer == "sgd" else "AdamW"
    head = (
        f"LoRA (Table 5 analog): {cfg.resolved_model}, {task_desc}. LoRA r={ad.rank}, α={ad.alpha:g}, "
        f"{opt}, constant lr {tr.lr:g}, batch {tr.batch_size}, {tr.steps} steps, weight decay on A, B turned off "
        f"at step {cfg.off_at}"
        + (
            f"; auto = switch-off on a plateau of ρ (tol {cfg.auto.tol:g}, window {cfg.auto.window} evaluations)"
            if cfg.auto.off
            else ""
        )
        + f". Seeds {', '.join(map(str, cfg.seeds))}; per-arm cells are mean ± std over seeds.\n\n"
    )
    cols = ["λ", "val loss (WD)", f"val loss (off@{cfg.off_at})", "ppl (WD)", "ppl (off)", "val-set s.e."]
    if acc:
        cols[3:5] = ["val acc (WD)", "val acc (off)"]
    cols += ["ρ (WD)", "ρ (off)"]
    lines = []
    for r in rows:
        lam = r["weight_decay"]
        ppl = [pm([math.exp(x) for x in r[f"val_loss_{k}"] if math.isfinite(x)], ".2f") for k in ("constant", "off")]
        if acc:
            ppl = [pm(r["val_acc_constant"], ".1f", 100), pm(r["val_acc_off"], ".1f", 100)]
        cells = [
            f"{lam:g}" if lam else "0 (no WD)",
            pm(r["val_loss_constant"]),
            pm(r["val_loss_off"]) if lam else "–",
            ppl[0],
            ppl[1] if lam else "–",
            pm(r["val_loss_sem"], ".4f"),
            pm(r["rho_constant"], ".2f"),
            pm(r["rho_off"], ".2f") if lam else "–",
        ]
        div = sum(r[f"diverged_{k}"] for k in ("constant", "off", "auto"))
        if div:
            cells[0] += f" ({div} diverged)"
        lines.append(cells)
    text = head + markdown_table(cols, lines)
    text += (
        f"\nPaired difference turned off − kept (the same seed's runs; negative loss = turning off is better). "
        f"Seeds needed: for a 95 % interval that excludes 0 at the observed spread, for an effect of "
        f"{LOSS_EFFECT:g} nats (the paper gives no Table 5 values; a reference of 1 % perplexity)"
        + (f" or {ACC_EFFECT * 100:g} accuracy points (the smallest gap of the paper's Table 3)" if acc else "")
        + ".\n\n"
    )
    pcols = ["λ", "arm", "metric", *PAIRED_COLUMNS]
    plines = []
    for r in rows:
        for key, arm in (("off", f"off@{cfg.off_at}"), ("auto", "auto")):
            if f"paired_loss_{key}" not in r:
                continue
            plines.append([f"{r['weight_decay']:g}", arm, "val loss", *paired_cells(r[f"paired_loss_{key}"])])
            if acc:
                plines.append(
                    [
                        f"{r['weight_decay']:g}",
                        arm,
                        "val acc (points)",
                        *paired_cells(r[f"paired_acc_{key}"], "+.1f", 100),
                    ]
                )
    text += markdown_table(pcols, plines)
    text += _per_seed_markdown(cfg, rows)
    return (
        text
        + "\n"
        + A.crossings_markdown(
            [(f"λ={r['weight_decay']:g}, {arm}", r["arms"][arm]) for r in rows for arm in r.get("switched", ())],
            {r["weight_decay"]: r["arms"]["constant"] for r in rows},
        )
    )


def _per_seed_markdown(cfg: Any, rows: list[dict]) -> str:
    """The final validation loss of each seed's kept and turned-off arm and their difference, so that a seed
    that dominates the paired mean (e.g. an arm that became unstable) is visible; with the median difference."""
    out = ""
    for r in rows:
        kept, off, d = r["val_loss_constant"], r["val_loss_off"], r["delta_val_loss"]
        if not r["weight_decay"] or not d:
            continue
        lines = [[str(s), f"{k:.3f}", f"{o:.3f}", f"{x:+.3f}"] for s, k, o, x in zip(cfg.seeds, kept, off, d)]
        out += (
            f"\nPer seed, λ = {r['weight_decay']:g}: final validation loss; median off − kept "
            f"{statistics.median(d):+.3f}.\n\n"
            + markdown_table(["seed", "kept", f"off@{cfg.off_at}", "off − kept"], lines)
        )
    return out


def figures(cfg: Any, grid: Mapping, rd) -> None:
    """Fig. 4 analog: ρ of B A over steps per λ (constant solid, turned off dashed, auto dotted; × = crossing)."""
    from ...report.figures import color_cycle, curves_figure, save_png

    values = list(grid)
    color = color_cycle(values)
    loss_key, loss_label = "val_loss", "validation loss"
    if cfg.task == "lm" and 0 < cfg.lm.val_subset < cfg.lm.val_windows:
        loss_key, loss_label = "val_loss_subset", f"validation loss (fixed subset of {cfg.lm.val_subset} windows)"
    for key, name, ylabel in (
        ("spectral/rho", "fig4_lora_rho.png", "ρ = avg ‖BA‖_* / avg ‖BA‖_F"),
        (loss_key, "lora_val_loss.png", loss_label),
    ):
        curves, vlines, marks = [], [], []
        for v in values:
            t, c, vl, mk = A.rho_panel(
                "", A.by_arm(grid[v]), key, "step", lambda n, v=v: color(v), lambda n, v=v: f"λ={v:g} {n}"
            )
            curves += c
            vlines += vl
            marks += mk if key == "spectral/rho" else []
        fig = curves_figure([(f"LoRA {cfg.resolved_model} ({cfg.task})", curves, sorted(set(vlines)), marks)], ylabel)
        save_png(fig, rd.file(name))

"""The four parts of the attention experiment: each part's table and figures (Fig. 14, Tables 3, 4, App. G).

Each ``part_*`` reads its groups through the :class:`~mirrorflow.experiments.attention.run.AttentionRunner`
(computing those not finished yet), writes its figures into the run directory and returns its markdown table.
Per-arm cells are "mean ± std" over seeds; every comparison of two arms is also given as the paired
difference over seeds (mean, 95 % interval, sign count, seeds needed for the paper's effect size).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ...report.figures import COLORS, Curve, bars_figure, color_cycle, curves_figure, save_png
from ...report.stats import PAIRED_COLUMNS, mean_std, paired_cells
from ...report.stats import format_mean_std as pm
from ...report.tables import markdown_table
from ..transformer_kit import arms as A
from ..transformer_kit.train import ArmResult, arm_name, intersection

RHO_LABEL = "ρ = avg ‖W_Q W_Kᵀ‖_* / avg ‖W_Q W_Kᵀ‖_F"


# The accuracy effect the seeds-needed column aims at: the smallest gain of turning off in the paper's
# Table 3 (ImageNet tiny-ViT: +1.7 to +2.4 points).
ACC_EFFECT = 0.017
PAIRED_NOTE = (
    f"Paired difference over seeds (each seed's arms share initialization and batches): mean, 95 % "
    f"t-interval, sign count (negative/positive), seeds; seeds needed = seeds the observed spread needs "
    f"for an interval that excludes 0 at an accuracy effect of {ACC_EFFECT * 100:g} points (the smallest "
    f"gain in the paper's Table 3). Validation loss has no paper effect size (–).\n"
)


def paired_rows(label: Sequence[str], ref: Sequence[ArmResult], other: Sequence[ArmResult]) -> list[list[str]]:
    """Two table rows (validation accuracy in points, validation loss) of the paired difference other − ref."""
    acc = A.paired_final(ref, other, "val_acc", ACC_EFFECT)
    loss = A.paired_final(ref, other, "val_loss")
    return [
        [*label, "val acc (points)", *paired_cells(acc, "+.2f", 100)],
        [*label, "val loss", *paired_cells(loss, "+.4f")],
    ]


def _steps_per_epoch(arms: Sequence[ArmResult]) -> int:
    """Steps per epoch of a digits run, read back from its rows (step / epoch of the second row)."""
    for a in arms:
        if len(a.rows) > 1 and a.rows[1]["epoch"] > 0:
            return int(round(a.rows[1]["step"] / a.rows[1]["epoch"]))
    return 1


def _epoch_of(arm: ArmResult, step: float) -> float:
    for r in arm.rows:
        if float(r["step"]) == float(step):
            return float(r["epoch"])
    return math.nan


# --------------------------------------------------------------------------------------------- parts
def part_sweep(R, rd) -> str:
    """Fig. 14 analog: ρ and validation accuracy of the digits ViT for each weight decay (AdamW, constant)."""
    cfg = R.cfg
    vit = cfg.digits
    res = {v: [R.vit_group("sweep", v, s)[0] for s in cfg.seeds] for v in cfg.sweep.weight_decays}
    lines = [
        f"Fig. 14 analog: ViT from scratch on digits ({_vit_desc(cfg)}), AdamW lr {vit.lr:g} "
        f"(warm-up {vit.warmup_epochs} epochs, then constant), {vit.epochs} epochs, constant weight decay. "
        f"Final values, mean ± std over seeds {_seeds(cfg)}.\n",
    ]
    rows = [
        [
            f"{v:g}" + _diverged(arms),
            pm([A.final(a, "spectral/rho") for a in arms], ".2f"),
            pm([float(min(A.column(a, "spectral/rho"))) for a in arms], ".2f"),
            pm([A.final(a, "val_acc") for a in arms]),
            pm([1 - A.final(a, "val_acc") for a in arms]),
            pm([A.final(a, "train_loss") for a in arms]),
        ]
        for v, arms in res.items()
    ]
    lines.append(markdown_table(["weight decay", "ρ (final)", "min ρ", "val acc", "val error", "train loss"], rows))
    colors = color_cycle(list(res))
    panels = []
    for key, title in (("spectral/rho", "ρ of W_Q W_Kᵀ"), ("val_acc", "validation accuracy")):
        curves = [Curve(f"λ={v:g}", *A.curve(arms, key, "epoch"), colors(v)) for v, arms in res.items()]
        panels.append((title, curves, [], []))
    save_png(curves_figure(panels, [RHO_LABEL, "validation accuracy"], "epoch"), rd.file("fig14_sweep_curves.png"))
    xs = list(res)
    stats = {
        "final ρ": [mean_std([A.final(a, "spectral/rho") for a in res[v]])[:2] for v in xs],
        "val error": [mean_std([1 - A.final(a, "val_acc") for a in res[v]])[:2] for v in xs],
    }
    save_png(
        bars_figure(
            xs,
            {k: ([m for m, _ in s], [e for _, e in s]) for k, s in stats.items()},
            "weight decay",
            "ViT on digits: final ρ and validation error against weight decay",
        ),
        rd.file("fig14_sweep_final.png"),
    )
    return "\n".join(lines)


def table3_rows(by: Mapping[str, list[ArmResult]], ref: str = "constant") -> list[dict]:
    """For each turned-off arm: off epoch, intersection epoch (on the seed-mean ρ curves), and validation
    accuracy (kept vs off) and ρ at the intersection, or at the end (with ρ of each) when they do not cross."""
    const = by[ref]
    steps, rho_c, _ = A.curve(const, "spectral/rho")
    out = []
    for name, arms in by.items():
        if name == ref:
            continue
        s2, rho_o, _ = A.curve(arms, "spectral/rho")
        offs = [a.off_at for a in arms if a.off_at is not None]
        row = {
            "arm": name,
            "off_epochs": [_epoch_of(a, a.off_at) for a in arms if a.off_at is not None],
            "triggered": len(offs),
            "seeds": len(arms),
        }
        cross = intersection(steps, rho_c, rho_o, min(offs)) if offs and len(s2) == len(steps) else None
        at = cross if cross is not None else steps[-1]
        i = list(steps).index(at)
        row.update(
            {
                "intersect_epoch": None if cross is None else _epoch_of(const[0], cross),
                "acc_wd": [A.at_step(a, "val_acc", at) for a in const],
                "acc_off": [A.at_step(a, "val_acc", at) for a in arms],
                "rho_wd": float(rho_c[i]),
                "rho_off": float(rho_o[i]),
                "final_acc_wd": [A.final(a, "val_acc") for a in const],
                "final_acc_off": [A.final(a, "val_acc") for a in arms],
                "final_rho_off": [A.final(a, "spectral/rho") for a in arms],
            }
        )
        out.append(row)
    return out


def part_ablation(R, rd) -> tuple[str, dict]:
    """Table 3 analog: turn-off epoch ablation (and the automatic switch-off) at one weight decay."""
    cfg = R.cfg
    vit = cfg.digits
    v = cfg.ablation.weight_decay
    groups = [R.vit_group("ablation", v, s, cfg.ablation.off_epochs, auto=cfg.auto.off) for s in cfg.seeds]
    by = A.by_arm(groups)
    rows = table3_rows(by)
    lines = [
        f"Table 3 analog: ViT from scratch on digits ({_vit_desc(cfg)}), AdamW lr {vit.lr:g}, weight decay {v:g} "
        f"kept (WD) or turned off (Off) at the given epoch, {vit.epochs} epochs; auto = switch-off on a plateau of ρ "
        f"(tol {cfg.auto.tol:g}, window {cfg.auto.window} epochs). Intersect = first epoch after the turn-off where "
        f"the seed-mean ρ curves cross; Val Acc and Norm Ratio (ρ) at that epoch, or at the end with the ρ of each "
        f"arm in parentheses when they do not cross. Mean ± std over seeds {_seeds(cfg)}.\n",
    ]
    cells_rows = []
    for r in rows:
        off = ", ".join(f"{e:g}" for e in r["off_epochs"]) if r["arm"] == "auto" else f"{r['off_epochs'][0]:g}"
        if r["arm"] == "auto":
            off = f"auto ({off or 'not triggered'})"
        if r["intersect_epoch"] is None:
            acc_wd = f"{pm(r['acc_wd'], '.1f', 100)} ({r['rho_wd']:.2f})"
            acc_off = f"{pm(r['acc_off'], '.1f', 100)} ({r['rho_off']:.2f})"
            cells = [off, "None", acc_wd, acc_off, "–"]
        else:
            cells = [
                off,
                f"{r['intersect_epoch']:g}",
                pm(r["acc_wd"], ".1f", 100),
                pm(r["acc_off"], ".1f", 100),
                f"{0.5 * (r['rho_wd'] + r['rho_off']):.2f}",
            ]
        cells += [pm(r["final_acc_wd"], ".1f", 100), pm(r["final_acc_off"], ".1f", 100)]
        cells_rows.append(cells)
    lines.append(
        markdown_table(
            [
                "WD Off",
                "Intersect",
                "Val Acc (WD)",
                "Val Acc (Off)",
                "Norm Ratio",
                "final Val Acc (WD)",
                "final Val Acc (Off)",
            ],
            cells_rows,
        )
    )
    spe = _steps_per_epoch(by["constant"])

    def label(name: str) -> str:
        if name.startswith("off@"):
            return f"off at epoch {int(name[4:]) / spe:g}"
        return {"constant": "WD kept", "auto": "auto switch-off"}.get(name, name)

    lines.append("\nFinal values, turned off − kept. " + PAIRED_NOTE)
    prows = []
    for name, arms in by.items():
        if name == "constant" or (name == "auto" and not any(a.off_at is not None for a in arms)):
            continue
        prows += paired_rows([f"{v:g}", label(name)], by["constant"], arms)
    lines.append(markdown_table(["λ", "arm", "metric", *PAIRED_COLUMNS], prows))
    constants = {v: by["constant"]}
    if "sweep" in cfg.parts:
        constants.update({w: [R.vit_group("sweep", w, s)[0] for s in cfg.seeds] for w in cfg.sweep.weight_decays})
    turned = [(label(n), arms) for n, arms in by.items() if n != "constant"]
    lines.append("\n" + A.crossings_markdown(turned, constants, "epoch", spe))
    colors = color_cycle(list(by))

    panels = [
        A.rho_panel(f"ViT digits, λ={v:g}: {title}", by, key, "epoch", colors, label, step_to_x=lambda s: s / spe)
        for key, title in (("spectral/rho", "ρ"), ("val_acc", "validation accuracy"))
    ]
    panels[1] = (panels[1][0], panels[1][1], panels[1][2], [])
    save_png(curves_figure(panels, [RHO_LABEL, "validation accuracy"], "epoch"), rd.file("fig4_attention_rho.png"))
    first = arm_name(cfg.ablation.off_epochs[0] * spe) if cfg.ablation.off_epochs else None
    t4 = {
        "model": f"ViT (scratch) / digits, off at epoch {cfg.ablation.off_epochs[0]}",
        "value": v,
        "by": {k: by[k] for k in ("constant", first, "auto") if k in by},
    }
    return "\n".join(lines), t4


def part_finetune(R, rd, extra: dict | None) -> str:
    """Table 4 analog: pretrained fine-tuning with AdamW, weight decay kept vs turned off vs automatic."""
    cfg = R.cfg
    res = {v: A.by_arm([R.finetune_group(v, s) for s in cfg.seeds]) for v in cfg.finetune.weight_decays}
    task = R.ft_cache.get("task")
    desc = task.describe() if task is not None else "(loaded from finished runs)"
    lines = [
        f"Table 4 analog: validation accuracy at the end, weight decay kept (WD) vs turned off (Off) vs automatic "
        f"switch-off (auto). {cfg.finetune.model}: {desc}; AdamW lr {cfg.finetune.lr:g}, "
        f"batch {cfg.finetune.batch_size}, "
        f"{cfg.finetune.steps} steps, "
        f"trained: {'W_Q, W_K and head' if cfg.finetune.train == 'qk' else 'all but embeddings'}, "
        f"off at step {cfg.finetune.off_at}. Mean ± std over seeds {_seeds(cfg)}.\n",
    ]
    table = []
    rows = [
        (
            f"{cfg.finetune.model} (pretrained) / speakers"
            if task is None or task.name == "speakers"
            else f"{cfg.finetune.model} (pretrained) / digits",
            v,
            by,
            f"off@{cfg.finetune.off_at}",
        )
        for v, by in res.items()
    ]
    if extra is not None:
        off_name = next((k for k in extra["by"] if k.startswith("off@")), None)
        rows.append((extra["model"], extra["value"], extra["by"], off_name))
    for model, v, by, off_name in rows:
        if v == 0:
            continue
        c, o, a = by.get("constant", []), by.get(off_name, []), by.get("auto", [])
        acc = lambda arms: [A.final(x, "val_acc") for x in arms]  # noqa: E731
        rho = lambda arms: [A.final(x, "spectral/rho") for x in arms]  # noqa: E731
        delta = [y - x for x, y in zip(acc(c), acc(o))]
        auto_at = ", ".join(f"{x.off_at}" for x in a if x.off_at is not None) or "not triggered"
        table.append(
            [
                model,
                f"{v:g}",
                pm(acc(c), ".1f", 100),
                pm(acc(o), ".1f", 100),
                pm(acc(a), ".1f", 100),
                pm(delta, "+.1f", 100),
                pm(rho(c), ".2f"),
                pm(rho(o), ".2f"),
                pm(rho(a), ".2f"),
                auto_at,
            ]
        )
    lines.append(
        markdown_table(
            [
                "model / data",
                "λ",
                "Val Acc (WD)",
                "Val Acc (Off)",
                "Val Acc (auto)",
                "Δ Off−WD",
                "ρ (WD)",
                "ρ (Off)",
                "ρ (auto)",
                "auto off at",
            ],
            table,
        )
    )
    lines.append("\nFinal values, turned off (or auto) − kept. " + PAIRED_NOTE)
    prows = []
    for model, v, by, off_name in rows:
        if v == 0:
            continue
        for arm in (off_name, "auto"):
            arms = by.get(arm, [])
            if arms and (arm != "auto" or any(a.off_at is not None for a in arms)):
                prows += paired_rows([model, f"{v:g}", arm], by.get("constant", []), arms)
    lines.append(markdown_table(["model / data", "λ", "arm", "metric", *PAIRED_COLUMNS], prows))
    colors = color_cycle(list(res))
    panels = []
    for key, title in (("spectral/rho", "ρ of W_Q W_Kᵀ"), ("val_acc", "validation accuracy")):
        curves, vlines, marks = [], [], []
        for v, by in res.items():
            _, cs, vl, mk = A.rho_panel("", by, key, "step", lambda n, v=v: colors(v), lambda n, v=v: f"λ={v:g} {n}")
            curves += cs
            vlines += vl
            marks += mk if key == "spectral/rho" else []
        panels.append((f"{cfg.finetune.model} fine-tuning: {title}", curves, sorted(set(vlines)), marks))
    save_png(curves_figure(panels, [RHO_LABEL, "validation accuracy"], "step"), rd.file("table4_finetune_curves.png"))
    return "\n".join(lines)


def part_lr_schedule(R, rd) -> str:
    """App. G (Figs. 15, 16): constant learning rate vs CosineAnnealingWarmRestarts, AdamW and SGD."""
    cfg = R.cfg
    vit = cfg.digits
    lines = [
        f"App. G analog: ViT from scratch on digits ({_vit_desc(cfg)}), {vit.epochs} epochs, constant weight decay; "
        f"learning rate constant (AdamW after {vit.warmup_epochs} warm-up epochs) or CosineAnnealingWarmRestarts "
        f"(T_0 = {vit.restart_epochs} epochs). AdamW lr {vit.lr:g}; SGD lr {vit.sgd_lr:g}, momentum {vit.momentum:g}, "
        f"gradient norm clipped at {vit.sgd_clip:g}, no warm-up. "
        f"Final values, mean ± std over seeds {_seeds(cfg)}.\n",
    ]
    table, prows = [], []
    for opt in cfg.lrs.optimizers:
        values = cfg.lrs.adamw_weight_decays if opt == "adamw" else cfg.lrs.sgd_weight_decays
        curves_rho, curves_acc = [], []
        for i, v in enumerate(values):
            pair = {}
            for sched, style in (("constant", "-"), ("cosine_restarts", "--")):
                arms = pair[sched] = [
                    R.vit_group("lr-schedule", v, s, optimizer=opt, lr_schedule=sched)[0] for s in cfg.seeds
                ]
                table.append(
                    [
                        opt,
                        f"{v:g}" + _diverged(arms),
                        sched,
                        pm([A.final(a, "val_acc") for a in arms]),
                        pm([A.final(a, "spectral/rho") for a in arms], ".2f"),
                        pm([A.final(a, "train_loss") for a in arms]),
                    ]
                )
                col = COLORS[i % len(COLORS)]
                curves_rho.append(Curve(f"λ={v:g} {sched}", *A.curve(arms, "spectral/rho", "epoch"), col, style))
                curves_acc.append(Curve(f"λ={v:g} {sched}", *A.curve(arms, "val_acc", "epoch"), col, style))
            prows += paired_rows([opt, f"{v:g}"], pair["constant"], pair["cosine_restarts"])
        fig = curves_figure(
            [(f"{opt}: ρ", curves_rho, [], []), (f"{opt}: validation accuracy", curves_acc, [], [])],
            [RHO_LABEL, "validation accuracy"],
            "epoch",
        )
        save_png(fig, rd.file(f"fig{15 if opt == 'adamw' else 16}_lr_schedule_{opt}.png"))
    lines.append(markdown_table(["optimizer", "λ", "lr schedule", "val acc", "ρ (final)", "train loss"], table))
    lines.append("\nFinal values, CosineAnnealingWarmRestarts − constant learning rate (same seeds). " + PAIRED_NOTE)
    lines.append(markdown_table(["optimizer", "λ", "metric", *PAIRED_COLUMNS], prows))
    return "\n".join(lines)


def _vit_desc(cfg) -> str:
    vit = cfg.digits
    if vit.vit != "tiny-vit":
        return vit.vit
    return f"patch {vit.patch_size}, width {vit.hidden}, {vit.layers} layers, {vit.heads} heads, batch {vit.batch_size}"


def _seeds(cfg) -> str:
    return ", ".join(map(str, cfg.seeds))


def _diverged(arms: Sequence[ArmResult]) -> str:
    n = sum(a.diverged_at is not None for a in arms)
    return f" ({n} diverged)" if n else ""

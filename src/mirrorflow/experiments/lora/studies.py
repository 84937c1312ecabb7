"""The LoRA study (docs/transformers.md, "The LoRA study: design stated before the runs"): its design, the
pilot's stability rule, the per-arm rows it records and the verdict tables made from them.

The design, fixed before the confirmatory runs: SmolLM2-135M with LoRA r = 8, α = 16 on q/v, 60 steps, weight
decay switched off at step 24 (0.4 of the run), evaluated every 12 steps; SGD with momentum 0.9 at
λ ∈ {0.1, 1} and AdamW at λ ∈ {1, 10}; arms constant / turned off / automatic switch-off (``AutoTurnOff`` on
a plateau of ρ, tol 0.05, window 2) / λ = 0; seeds 100–111. The accumulated regularization at the switch is
a = −Σ_{s<24} η λ_s (Eq. (9) in steps). Primary outcome: the final validation loss on 512 fixed windows,
paired difference turned off − kept, 98.75 % t-intervals (Bonferroni over the four settings); a diverged arm
counts ln |V| (:data:`DIVERGED_LOSS`) and is never dropped.

The runs, their files and the command line are in ``scripts/lora_study.py`` (``pilot``, ``run``, ``table``);
this module holds what they compute, so that it can be tested and reused.
"""

from __future__ import annotations

import math
import time

WEIGHT_DECAYS = {"sgd": (0.1, 1.0), "adamw": (1.0, 10.0)}
LR_GRID = {"sgd": (0.02, 0.01, 0.005), "adamw": (2e-3, 1e-3, 5e-4)}  # searched from the largest down
PILOT_SEEDS = (900, 901)
SEEDS = tuple(range(100, 112))
STEPS, OFF_AT, EVAL_EVERY = 60, 24, 12
AUTO = {"auto_off": True, "auto_tol": 0.05, "auto_window": 2}
TOLERANCE = 0.1  # nats: the stability rule's margin
DIVERGED_LOSS = math.log(49152)  # ln |V| of SmolLM2's vocabulary: a diverged arm's final validation loss
LOSS_EFFECT = 0.01  # nats: the reference effect (1 % perplexity)
FAMILY = 4  # settings corrected for (Bonferroni)

PILOT_FIELDS = [
    "optimizer",
    "lr",
    "weight_decay",
    "seed",
    "stable",
    "reason",
    "val_loss_0",
    "val_loss_max",
    "val_loss_final",
    "train_first12",
    "train_last12",
    "diverged_at",
    "seconds",
]
ARM_FIELDS = [
    "optimizer",
    "lr",
    "weight_decay",
    "seed",
    "arm",
    "val_loss",
    "val_loss_0",
    "diverged_at",
    "off_at",
    "a_switch",
    "rho_switch",
    "rho_final",
    "val_loss_subset_final",
    "rho_curve",
]


def base_values(optimizer: str, lr: float, **extra) -> dict:
    """The lora.Config values shared by the pilot and the study."""
    return {
        "task": "lm",
        "model": "smollm2",
        "optimizer": optimizer,
        "lr": lr,
        "momentum": 0.9,
        "steps": STEPS,
        "off_at": OFF_AT,
        "eval_every": EVAL_EVERY,
        "batch_size": 4,
        "block_size": 64,
        "rank": 8,
        "alpha": 16.0,
        "threads": 1,
        "workers": 1,
        **extra,
    }


# ---------------------------------------------------------------------------------------------- pilot
def stability(rows: list[dict], losses: list[float], diverged_at) -> tuple[bool, str]:
    """The design's rule: finite losses; validation loss never above step 0's + 0.1; last 12 steps' training
    loss not above the first 12 steps' + 0.1."""
    if diverged_at is not None or not all(math.isfinite(x) for x in losses):
        return False, f"non-finite training loss at step {diverged_at}"
    v = [r["val_loss"] for r in rows]
    if max(v) > v[0] + TOLERANCE:
        i = max(range(len(v)), key=v.__getitem__)
        return False, f"validation loss {v[i]:.3f} at step {rows[i]['step']} > {v[0]:.3f} + {TOLERANCE}"
    first, last = sum(losses[:12]) / 12, sum(losses[-12:]) / 12
    if last > first + TOLERANCE:
        return False, f"training loss of the last 12 steps {last:.3f} > first 12 {first:.3f} + {TOLERANCE}"
    return True, ""


_TASK: dict = {}


def pilot_run(optimizer: str, lr: float, value: float, seed: int) -> dict:
    """One constant-λ pilot run (32 validation windows, evaluated every 12 steps)."""
    import torch

    from ...config import build
    from ...training.monitor import SpectralMonitor
    from ..transformer_kit.distributed import dist_env
    from ..transformer_kit.train import Trainer
    from .config import Config
    from .model import make_model, make_task

    torch.set_num_threads(1)
    cfg = build(
        Config,
        {
            k: str(v)
            for k, v in base_values(
                optimizer, lr, weight_decays=value, seeds=seed, val_windows=32, val_subset=0
            ).items()
        },
    )
    if "task" not in _TASK:
        _TASK["task"] = make_task(cfg)
    task = _TASK["task"]
    t0 = time.perf_counter()
    model = make_model(cfg, task, seed)
    tr = Trainer(
        model, task, cfg.train_spec(seed), value, dist_env("cpu"), SpectralMonitor(model, every=1, include="lora")
    )
    tr.advance(cfg.train.steps)
    tr.close()
    stable, reason = stability(tr.rows, tr.losses, tr.diverged_at)
    v = [r["val_loss"] for r in tr.rows]
    return {
        "optimizer": optimizer,
        "lr": lr,
        "weight_decay": value,
        "seed": seed,
        "stable": int(stable),
        "reason": reason,
        "val_loss_0": f"{v[0]:.5f}",
        "val_loss_max": f"{max(v):.5f}",
        "val_loss_final": f"{v[-1]:.5f}",
        "train_first12": f"{sum(tr.losses[:12]) / 12:.5f}" if len(tr.losses) >= 12 else "",
        "train_last12": f"{sum(tr.losses[-12:]) / 12:.5f}" if len(tr.losses) >= 12 else "",
        "diverged_at": "" if tr.diverged_at is None else tr.diverged_at,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def pilot_key(r: dict) -> tuple:
    """(optimizer, lr, λ, seed) of a pilot row."""
    return (r["optimizer"], float(r["lr"]), float(r["weight_decay"]), int(r["seed"]))


def pilot_job(item: tuple) -> dict:
    """:func:`pilot_run` of ``(optimizer, lr, λ, seed)`` (a worker pool's unit of work)."""
    return pilot_run(*item)


def pilot_choice(rows: list[dict], optimizer: str) -> tuple[float | None, str]:
    """(chosen lr or None, status) from the pilot rows: the first lr from the top whose runs are all stable."""
    done = {pilot_key(r): r for r in rows}
    for lr in LR_GRID[optimizer]:
        runs = [done.get((optimizer, lr, v, s)) for v in (*WEIGHT_DECAYS[optimizer], 0.0) for s in PILOT_SEEDS]
        if any(r is None for r in runs):
            return None, f"pending at lr {lr:g}"
        if all(r["stable"] == "1" for r in runs):
            return lr, "chosen"
    return None, "no stable learning rate in the grid"


def study_values(optimizer: str, lr: float, seed: int, workers: int) -> dict:
    """The lora.Config values of one seed's groups: both λ of the design, λ = 0 and the automatic arm."""
    return base_values(
        optimizer,
        lr,
        weight_decays=",".join(f"{v:g}" for v in WEIGHT_DECAYS[optimizer]),
        seeds=seed,
        baseline="true",
        workers=workers,
        **AUTO,
    )


def arm_rows(optimizer: str, lr: float, seed: int, grid: dict) -> list[dict]:
    """One row per arm of one seed (λ = 0 once, as arm ``lambda0``)."""
    from ..transformer_kit import arms as A

    out = []
    for value, groups in grid.items():
        for arm in groups[0]:
            if value == 0 and arm.name != "constant":
                continue
            rows = arm.rows
            step0 = rows[0] if rows else {}
            at24 = [r for r in rows if r["step"] == OFF_AT]
            out.append(
                {
                    "optimizer": optimizer,
                    "lr": lr,
                    "weight_decay": value,
                    "seed": seed,
                    "arm": "lambda0" if value == 0 else ("off" if arm.name == f"off@{OFF_AT}" else arm.name),
                    "val_loss": f"{A.final(arm, 'val_loss'):.6f}",
                    "val_loss_0": f"{step0.get('val_loss_subset', math.nan):.6f}",
                    "diverged_at": "" if arm.diverged_at is None else arm.diverged_at,
                    "off_at": "" if arm.off_at is None else arm.off_at,
                    "a_switch": f"{at24[0]['a']:.6g}" if at24 else "",
                    "rho_switch": f"{at24[0].get('spectral/rho', math.nan):.6f}" if at24 else "",
                    "rho_final": f"{A.final(arm, 'spectral/rho'):.6f}",
                    "val_loss_subset_final": f"{A.final(arm, 'val_loss_subset'):.6f}",
                    "rho_curve": ";".join(f"{int(r['step'])}:{r.get('spectral/rho', math.nan):.5f}" for r in rows),
                }
            )
    return out


# ---------------------------------------------------------------------------------------------- table
def final_loss(r: dict) -> float:
    """The design's value of an arm: its final loss, or ln|V| when it diverged (non-finite training loss)."""
    v = float(r["val_loss"])
    return DIVERGED_LOSS if r["diverged_at"] != "" or not math.isfinite(v) else v


def unstable(r: dict) -> bool:
    """Diverged, or the final loss on the 32 fixed subset windows above the pretrained model's (step 0) + 0.1."""
    return (
        r["diverged_at"] != ""
        or not math.isfinite(float(r["val_loss"]))
        or float(r["val_loss_subset_final"]) > float(r["val_loss_0"]) + TOLERANCE
    )


def _paired(a_rows: dict, b_rows: dict, seeds: list[int], level: float):
    from ...report.stats import paired_difference

    return paired_difference(
        [final_loss(a_rows[s]) for s in seeds], [final_loss(b_rows[s]) for s in seeds], LOSS_EFFECT, level
    )


def _ci(d) -> str:
    return f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]" if d.n >= 2 else (f"{d.mean:+.4f}" if d.n else "–")


def verdict_tables(rows_by_optimizer: dict[str, list[dict]], min_seeds: int = len(SEEDS)) -> str:
    """The design's tables from the per-arm rows (``results/lora_study/<optimizer>.csv``): per setting the
    paired differences (Bonferroni over the settings), the verdicts, the automatic arm against kept and against
    the fixed switch at step 24 (auto − off), the divergence counts; then per seed.
    A setting with fewer than ``min_seeds`` seeds (the design's 12) gets no verdict: "interim (n/12)"."""
    from ...report.stats import claim_verdict

    level = 1 - 0.05 / FAMILY
    out = [
        f"Final validation loss on 512 windows (nats). Paired differences over the seeds with "
        f"{100 * level:.2f} % t-intervals (Bonferroni over the {FAMILY} settings). A diverged arm counts "
        f"ln|V| = {DIVERGED_LOSS:.2f}; unstable = diverged or final loss above the pretrained model's + "
        f"{TOLERANCE}.",
        "",
        "| optimizer, lr | λ | a at switch | seeds | kept | off − kept [CI] | signs −/+ | verdict "
        "| auto − kept [CI] | auto verdict | auto switched at | auto − off [CI] | off − λ=0 [CI] | kept − λ=0 [CI] "
        "| unstable kept / off / auto / λ=0 |",
        "|" + "---|" * 15,
    ]
    per_seed, rho_rows = [], []
    for opt, rows in rows_by_optimizer.items():
        by: dict = {}
        for r in rows:
            by.setdefault((float(r["weight_decay"]), r["arm"]), {})[int(r["seed"])] = r
        zero = by.get((0.0, "lambda0"), {})
        for value in WEIGHT_DECAYS[opt]:
            kept, off, auto = (by.get((value, a), {}) for a in ("constant", "off", "auto"))
            seeds = sorted(set(kept) & set(off) & set(auto) & set(zero))
            if not seeds:
                continue
            d_off = _paired(kept, off, seeds, level)
            d_auto = _paired(kept, auto, seeds, level)
            d_auto_off = _paired(off, auto, seeds, level)
            d_off0, d_kept0 = _paired(zero, off, seeds, level), _paired(zero, kept, seeds, level)
            fired = [auto[s]["off_at"] or "never" for s in seeds]
            a_sw = kept[seeds[0]]["a_switch"]
            n_unst = [sum(unstable(arm[s]) for s in seeds) for arm in (kept, off, auto, zero)]
            mean_kept = sum(final_loss(kept[s]) for s in seeds) / len(seeds)
            out.append(
                f"| {opt}, {float(kept[seeds[0]]['lr']):g} | {value:g} | {float(a_sw):.3g} | {len(seeds)} | "
                f"{mean_kept:.4f} | {_ci(d_off)} | {d_off.negative}/{d_off.positive} | "
                f"{_verdict_cell(claim_verdict(d_off, -1, LOSS_EFFECT), d_off, min_seeds)} | {_ci(d_auto)} | "
                f"{_verdict_cell(claim_verdict(d_auto, -1, LOSS_EFFECT), d_auto, min_seeds)} | "
                f"{', '.join(map(str, fired))} | {_ci(d_auto_off)} | "
                f"{_ci(d_off0)} | {_ci(d_kept0)} | {' / '.join(map(str, n_unst))} |"
            )
            curves = [_mean_curve(a, seeds) for a in (kept, off, auto, zero)]
            ends = " / ".join(f"{c[max(c)]:.3f}" if c else "–" for c in curves)
            at24 = curves[0].get(OFF_AT, math.nan)
            rho_rows.append(
                f"| {opt} | {value:g} | {at24:.3f} | {ends} | {_crossing(curves[1], curves[0])} | "
                f"{_crossing(curves[1], curves[3])} | {_crossing(curves[2], curves[0])} |"
            )
            for s in seeds:
                cells = [
                    f"{final_loss(a[s]):.4f}" + ("†" if a[s]["diverged_at"] != "" else "*" if unstable(a[s]) else "")
                    for a in (kept, off, auto, zero)
                ]
                per_seed.append(
                    f"| {opt} | {value:g} | {s} | {' | '.join(cells)} | "
                    f"{final_loss(off[s]) - final_loss(kept[s]):+.4f} | {auto[s]['off_at'] or 'never'} |"
                )
    out += [
        "",
        "ρ of B A (seed means): at the switch (step 24), at the end per arm, and the first evaluation "
        "after the switch where the turned-off (or automatic) mean curve crosses the kept or the λ = 0 curve:",
        "",
        "| optimizer | λ | ρ at 24 | ρ end kept / off / auto / λ=0 | off crosses kept | off crosses λ=0 "
        "| auto crosses kept |",
        "|" + "---|" * 7,
    ] + rho_rows
    out += [
        "",
        "Per seed (final validation loss; * unstable, † diverged and counted as ln|V|):",
        "",
        "| optimizer | λ | seed | kept | off at 24 | auto | λ = 0 | off − kept | auto switched at |",
        "|" + "---|" * 9,
    ] + per_seed
    return "\n".join(out)


def _mean_curve(arm: dict, seeds: list[int]) -> dict[int, float]:
    """Step → mean ρ over the seeds whose arm has a finite ρ at that step (from the ``rho_curve`` column)."""
    acc: dict[int, list[float]] = {}
    for s in seeds:
        for item in filter(None, arm[s].get("rho_curve", "").split(";")):
            step, v = item.split(":")
            if math.isfinite(float(v)):
                acc.setdefault(int(step), []).append(float(v))
    return {k: sum(v) / len(v) for k, v in sorted(acc.items())}


def _crossing(turned: dict[int, float], ref: dict[int, float]) -> str:
    """The first step after the switch where the curve ``turned`` crosses ``ref`` (``intersection``)."""
    from ..transformer_kit.train import intersection

    steps = [k for k in turned if k in ref]
    if not steps:
        return "–"
    hit = intersection(steps, [ref[k] for k in steps], [turned[k] for k in steps], OFF_AT)
    return "none" if hit is None else str(int(hit))


def _verdict_cell(verdict: str, d, min_seeds: int) -> str:
    if d.n < min_seeds:
        return f"interim ({d.n}/{min_seeds} seeds)"
    if verdict == "inconclusive" and d.needed:
        return f"inconclusive (≈{d.needed} seeds)"
    return verdict


DOCS_START, DOCS_END = "<!-- lora-study-table: generated, do not edit -->", "<!-- /lora-study-table -->"


def docs_block(rows_by_optimizer: dict[str, list[dict]]) -> str:
    """The interim (or final) block of docs/transformers.md: which seeds have finished, then the tables."""
    done = {opt: sorted({int(r["seed"]) for r in rows}) for opt, rows in rows_by_optimizer.items()}
    complete = all(set(SEEDS) <= set(v) for v in done.values())
    state = "all seeds of the design" if complete else "interim, not a verdict"
    seeds = "; ".join(f"{'SGD' if o == 'sgd' else 'AdamW'} {', '.join(map(str, v)) or 'none'}" for o, v in done.items())
    head = (
        f"**The LoRA study — {state}** (seeds finished: {seeds}; of {SEEDS[0]}–{SEEDS[-1]}). The design above "
        'draws a verdict only at 12 seeds per setting; until then the verdict column says "interim". '
        "An automatic arm that switched at step 60 (its last evaluation) or never is the kept run. "
        "Generated by `python scripts/lora_study.py table --docs docs/transformers.md` from `results/lora_study/`:"
    )
    return f"{DOCS_START}\n{head}\n\n{verdict_tables(rows_by_optimizer)}\n{DOCS_END}"

"""The attention experiment's runs: the cached groups of every part (ViT on digits, fine-tuning;
:mod:`..transformer_kit.groups`), ``run`` and ``reproduce`` (Fig. 14, Tables 3, 4 and App. G analogs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ...config import build, config_dict, flat_keys
from ...engine.progress import progress_or_bar
from ...engine.protocol import Plan
from ...runtime import set_threads
from ..transformer_kit.config import SpeakerData
from ..transformer_kit.distributed import barrier, dist_env
from ..transformer_kit.groups import GroupJob, GroupRunner, group_key
from ..transformer_kit.train import ArmResult, Trainer, run_arms
from .config import PARTS, AblationPart, Config, DigitsViT, FinetunePart, LRSchedulePart, SweepPart
from .model import digits_task, make_finetune, make_vit
from .report import part_ablation, part_finetune, part_lr_schedule, part_sweep

# ----------------------------------------------------------------------------------------------- runs
# the keys that enumerate the groups (each group adds its own part, weight decay, seed, turn-off epochs, ...)
GRID = (
    "parts",
    "seeds",
    *flat_keys(SweepPart, "sweep_"),
    *flat_keys(AblationPart, "ablation_"),
    "finetune_weight_decays",
    *flat_keys(LRSchedulePart, "lrs_"),
)
# the keys only the other kind of group reads: a ViT group does not depend on the fine-tuning part, and back
FINETUNE_ONLY = (*flat_keys(FinetunePart, "finetune_"), *flat_keys(SpeakerData))
VIT_ONLY = flat_keys(DigitsViT)


def group_config(cfg: Config, part: str, unused: Sequence[str], **own) -> dict:
    """A group's config: ``cfg`` but the volatile keys, :data:`GRID` and the keys the group does not read
    (:func:`..transformer_kit.groups.group_key`), and the group's ``own`` values."""
    return {"experiment": "attention", "part": part, **group_key(cfg, (*GRID, *unused)), **own}


def _vit_steps(cfg: Config) -> tuple[int, int]:
    """(steps per epoch, total steps) of a digits ViT run."""
    from ..transformer_kit.tasks import digits_train_size

    spe = digits_train_size(cfg.val_fraction) // cfg.digits.batch_size
    return spe, cfg.digits.epochs * spe


def vit_job(
    cfg: Config,
    out: Path | str,
    part: str,
    value: float,
    seed: int,
    off_epochs: Sequence[int] = (),
    auto: bool = False,
    optimizer: str = "adamw",
    lr_schedule: str = "constant",
) -> GroupJob:
    """One ViT-on-digits group: constant λ and, from its snapshots, λ turned off at ``off_epochs``/auto."""
    label = f"{part}/{optimizer}-{lr_schedule}-wd{value:g}-seed{seed}"
    config = group_config(
        cfg,
        part,
        FINETUNE_ONLY,
        weight_decay=value,
        seed=seed,
        optimizer=optimizer,
        lr_schedule=lr_schedule,
        off_epochs=list(off_epochs),
    )
    spe, T = _vit_steps(cfg)
    steps = T + sum(T - e * spe for e in off_epochs) + (T // 2 if auto else 0)
    params = {
        "kind": "vit",
        "part": part,
        "value": value,
        "seed": seed,
        "off_epochs": tuple(off_epochs),
        "auto": auto,
        "optimizer": optimizer,
        "lr_schedule": lr_schedule,
    }
    return GroupJob(Path(out) / "groups" / label, config, steps, params)


def finetune_job(cfg: Config, out: Path | str, value: float, seed: int) -> GroupJob:
    """One fine-tuning group: constant λ, turned off at ``finetune_off_at``, automatic switch-off."""
    config = group_config(cfg, "finetune", VIT_ONLY, weight_decay=value, seed=seed)
    F = cfg.finetune.steps
    steps = F + ((1 + cfg.auto.off) * (F - cfg.finetune.off_at) if value > 0 else 0)
    # a MiniLM step costs about 7 small-ViT steps (orders the worker pool)
    return GroupJob(
        Path(out) / "groups" / f"finetune/wd{value:g}-seed{seed}",
        config,
        steps,
        {"kind": "finetune", "value": value, "seed": seed},
        cost=7.0,
    )


class AttentionRunner(GroupRunner):
    """Computes the ViT and fine-tuning groups of one ``run``; keeps the digits task and the pretrained model."""

    def __init__(self, cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None):
        super().__init__(__name__, config_dict(cfg), out, dist_env(cfg.runtime.device), progress)
        self.cfg = cfg
        self._digits = None
        self.ft_cache: dict = {}

    def digits(self, model):
        if self._digits is None:
            self._digits = digits_task(model, self.env.device, self.cfg.val_fraction)
        return self._digits

    def compute(self, job: GroupJob) -> list[ArmResult]:
        from ...training.monitor import SpectralMonitor

        p, cfg = job.params, self.cfg
        if p["kind"] == "finetune":
            task, model = make_finetune(cfg, p["seed"], self.env.device, self.ft_cache)
            trainer = Trainer(
                model,
                task,
                cfg.finetune_spec(p["seed"]),
                p["value"],
                self.env,
                SpectralMonitor(model, every=1, include="attention"),
            )
            return run_arms(
                trainer,
                p["value"],
                [cfg.finetune.off_at] if p["value"] > 0 else [],
                self.cfg.auto.kwargs() if p["value"] > 0 else None,
                self.progress,
            )
        model = make_vit(cfg, p["seed"])
        task = self.digits(model)
        spe = task.n_train // cfg.digits.batch_size
        spec = cfg.vit_spec(p["seed"], spe, p["optimizer"], p["lr_schedule"])
        trainer = Trainer(model, task, spec, p["value"], self.env, SpectralMonitor(model, every=1, include="attention"))
        return run_arms(
            trainer,
            p["value"],
            [e * spe for e in p["off_epochs"]],
            self.cfg.auto.kwargs() if p["auto"] else None,
            self.progress,
        )

    def vit_group(self, part: str, value: float, seed: int, *args, **kwargs) -> list[ArmResult]:
        """The arms of the ViT group :func:`vit_job` describes (same arguments after ``part, value, seed``)."""
        return self.group(vit_job(self.cfg, self.out, part, value, seed, *args, **kwargs))

    def finetune_group(self, value: float, seed: int) -> list[ArmResult]:
        return self.group(finetune_job(self.cfg, self.out, value, seed))


def make_runner(values: Mapping, out: Path | str) -> AttentionRunner:
    """The runner of a worker process (a worker process runs jobs only)."""
    cfg = build(Config, values)
    set_threads(cfg.runtime.threads)
    return AttentionRunner(cfg, out)


def plan(cfg: Config, out: Path | str = ".") -> list[GroupJob]:
    """Every group of the selected parts, in the order the parts read them."""
    jobs: list[GroupJob] = []
    for s in cfg.seeds:
        if "sweep" in cfg.parts:
            jobs += [vit_job(cfg, out, "sweep", v, s) for v in cfg.sweep.weight_decays]
        if "ablation" in cfg.parts:
            jobs.append(
                vit_job(
                    cfg, out, "ablation", cfg.ablation.weight_decay, s, tuple(cfg.ablation.off_epochs), cfg.auto.off
                )
            )
        if "finetune" in cfg.parts:
            jobs += [finetune_job(cfg, out, v, s) for v in cfg.finetune.weight_decays]
        if "lr-schedule" in cfg.parts:
            for opt in cfg.lrs.optimizers:
                vals = cfg.lrs.adamw_weight_decays if opt == "adamw" else cfg.lrs.sgd_weight_decays
                jobs += [
                    vit_job(cfg, out, "lr-schedule", v, s, optimizer=opt, lr_schedule=sched)
                    for v in vals
                    for sched in ("constant", "cosine_restarts")
                ]
    return jobs


def total_steps(cfg: Config) -> int:
    """Training steps of the whole run (for the progress bar)."""
    return sum(j.steps for j in plan(cfg))


TABLE_FILES = {
    "sweep": "fig14_sweep.md",
    "ablation": "table3.md",
    "finetune": "table4.md",
    "lr-schedule": "appG_lr_schedule.md",
}


def run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None) -> dict:
    """The selected parts into ``out``: groups/, one markdown table per part, figures, summary.json last."""
    from ...runtime import torch_threads
    from ...store import RunDir

    t0 = time.perf_counter()
    with torch_threads(cfg.runtime.threads):
        R = AttentionRunner(cfg, out, progress)
        R.prepare(plan(cfg, out), cfg.runtime.workers)
        rd = RunDir(out)
        tables: dict[str, str] = {}
        t4 = None
        if "sweep" in cfg.parts:
            tables["sweep"] = part_sweep(R, rd)
        if "ablation" in cfg.parts:
            tables["ablation"], t4 = part_ablation(R, rd)
        if "finetune" in cfg.parts:
            tables["finetune"] = part_finetune(R, rd, t4)
        if "lr-schedule" in cfg.parts:
            tables["lr-schedule"] = part_lr_schedule(R, rd)
    text = "\n".join(tables[p] for p in PARTS if p in tables)
    summary = {"experiment": "attention", "tables": tables, "seconds": round(time.perf_counter() - t0, 1)}
    if R.env.is_main:
        rd.write_config({"experiment": "attention", **config_dict(cfg)})
        for p, t in tables.items():
            rd.write_text(TABLE_FILES[p], t)
        rd.write_text("tables.md", text)
        rd.finish(summary)
    barrier(R.env)
    summary["table"] = text
    return summary


def reproduce_plan(overrides: Mapping[str, str] | None = None) -> Plan:
    """``reproduce``'s overrides resolved: the ``Config`` of the selected ``parts=`` (its seeds are a field)."""
    return Plan((("attention", build(Config, overrides or {})),))


def reproduce(
    out: Path | str, overrides: Mapping[str, str] | None = None, progress: Callable[[int], None] | None = None
) -> str:
    """Fig. 14, Table 3, Table 4 and App. G analogs with the CPU defaults; returns the markdown tables."""
    cfg = reproduce_plan(overrides).config
    with progress_or_bar(
        progress,
        total_steps(cfg),
        "attention (" + ", ".join(cfg.parts) + ")",
        show=dist_env(cfg.runtime.device).is_main,
    ) as progress:
        return run(cfg, out, progress)["table"]

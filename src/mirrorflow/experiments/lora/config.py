"""The LoRA experiment's configuration: the grid of weight decays × seeds, the task, the model, the optimiser
(``docs/transformers.md`` lists the values the paper does not give)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import check_count, check_rate, require, sub_config
from ..transformer_kit.config import AutoOff, Runtime, SpeakerData, off_step
from ..transformer_kit.train import OPTIMIZERS, TrainSpec

TASKS = ("speakers", "lm")
TINY_GPT2 = {"n_embd": 64, "n_layer": 2, "n_head": 4}


@dataclass(frozen=True)
class Adapter:
    """The LoRA adapter (no key prefix): rank r, α (ΔW = (α/r)·B A), the adapted modules (empty: peft's default
    for the architecture — BERT: query, value; GPT-2: c_attn), and whether the speaker task's linear head
    trains with it (``train_head``, without weight decay)."""

    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ()
    train_head: bool = True

    def validate(self) -> None:
        require(self.rank > 0, f"rank must be positive, got {self.rank}")
        check_rate("alpha", self.alpha, positive=True)


@dataclass(frozen=True)
class Training:
    """How each arm trains (no key prefix): ``optimizer`` (SGD with momentum as in the paper, or AdamW) at a
    constant ``lr`` with gradient clipping ``clip`` (0: none), ``steps`` of ``batch_size``, a row every
    ``eval_every`` steps."""

    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    clip: float = 0.0
    steps: int = 60
    batch_size: int = 4
    eval_every: int = 12

    def validate(self) -> None:
        require(
            self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
        )
        require(self.steps > 1, f"steps must be at least 2 (one with weight decay, one without), got {self.steps}")

    def spec(self, seed: int, precision: str) -> TrainSpec:
        """The :class:`TrainSpec` of an arm: weight decay on the LoRA factors only."""
        return TrainSpec(
            steps=self.steps,
            batch_size=self.batch_size,
            eval_every=self.eval_every,
            optimizer=self.optimizer,
            lr=self.lr,
            momentum=self.momentum,
            clip=self.clip,
            decay=("*lora_A*", "*lora_B*"),
            seed=seed,
            precision=precision,
        )


@dataclass(frozen=True)
class LMData:
    """The language-modelling task (no key prefix): windows of ``block_size`` tokens; ``val_windows`` windows
    evaluated at the end of every arm, during training only the first ``val_subset`` (0: all, every time)."""

    block_size: int = 64
    val_windows: int = 512
    val_subset: int = 32

    def validate(self) -> None:
        check_count("block_size", self.block_size, low=2)
        check_count("val_windows", self.val_windows, low=1)
        require(self.val_subset >= 0, f"val_subset must be non-negative, got {self.val_subset}")


@dataclass(frozen=True)
class Config:
    """LoRA experiment grid: every weight decay × seed, with constant / turned-off / automatic arms.

    ``model=auto`` is ``minilm`` for ``task=speakers`` and ``smollm2`` (SmolLM2-135M-Instruct, offline) for
    ``task=lm``. The defaults are the CPU design of ``docs/transformers.md`` (SmolLM2, 4 paired seeds).
    Typed parts (:func:`mirrorflow.config.sub_config`), each filled from flat keys: the adapter
    (:class:`Adapter`), the training (:class:`Training`), ``auto_*`` (:class:`AutoOff`), the speaker task
    (``speakers``, ``max_length``, ``val_size``), the LM task (:class:`LMData`) and the runtime (``device``,
    ``precision``, ``threads``, ``workers``).
    """

    task: str = "lm"
    model: str = "auto"
    hub: bool = False
    adapter: Adapter = sub_config(Adapter)
    train: Training = sub_config(Training)
    weight_decays: tuple[float, ...] = (0.1,)
    off_at: int | float = 24  # a step, or a fraction of the run (schedules.switch_off_step)
    auto: AutoOff = sub_config(AutoOff, "auto_")
    baseline: bool = False
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    text: SpeakerData = sub_config(SpeakerData, val_size=192)
    lm: LMData = sub_config(LMData)
    runtime: Runtime = sub_config(Runtime, workers=2)  # the CPU default: two seed groups at a time (2 cores)

    def __post_init__(self) -> None:  # off_at=0.4 is the step it lands on (one config)
        object.__setattr__(self, "off_at", off_step("off_at", self.off_at, self.train.steps, strict=False))

    def validate(self) -> None:
        require(self.task in TASKS, f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        self.adapter.validate()
        self.lm.validate()
        self.train.validate()
        require(len(self.weight_decays) > 0, "weight_decays must name at least one value")
        for v in self.weight_decays:
            check_rate("weight_decays", v, horizon=self.train.lr * self.train.steps)  # a = -lr·Σλ stays finite
        require(len(set(self.weight_decays)) == len(self.weight_decays), "weight_decays has repeated values")
        require(len(self.seeds) > 0, "seeds must name at least one seed")
        require(len(set(self.seeds)) == len(self.seeds), "seeds has repeated values")
        off_step("off_at", self.off_at, self.train.steps)
        self.auto.validate()
        self.text.validate()
        self.runtime.validate()
        if self.task == "speakers":
            require(
                self.resolved_model != "tiny-gpt2",
                "task=speakers needs a pretrained text encoder (model=minilm or a BERT-like name/path)",
            )
        self.train_spec(0).validate()

    @property
    def resolved_model(self) -> str:
        if self.model == "auto":
            return "minilm" if self.task == "speakers" else "smollm2"
        return self.model

    @property
    def resolved_precision(self) -> str:
        """``f32`` or ``bf16`` (``auto`` resolved on this machine's device; :mod:`mirrorflow.runtime`)."""
        return self.runtime.resolved_precision

    def train_spec(self, seed: int) -> TrainSpec:
        return self.train.spec(seed, self.resolved_precision)


HIDDEN = {"tiny-gpt2": TINY_GPT2["n_embd"], "smollm2": 576, "minilm": 384}  # model width d (64: the least)


def estimate_bytes(cfg: Config) -> int:
    """A lower bound on the adapter's memory, checked before a model is loaded
    (``experiments.check_resources``): per adapted matrix B A with B ∈ ℝ^{d×r}, A ∈ ℝ^{r×d}, 2·r·d float32
    values, four copies (weights, gradients, two optimizer states), two adapted matrices in each of at least
    two layers."""
    d = HIDDEN.get(cfg.resolved_model, 64)
    return 4 * 4 * 2 * cfg.adapter.rank * d * 2 * 2

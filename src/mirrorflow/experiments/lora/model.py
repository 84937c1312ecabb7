"""The LoRA experiment's task (tiny_shakespeare: causal LM or speakers) and model (a base model + peft's
LoRA adapter; Sec. 5, App. F)."""

from __future__ import annotations

import copy

from ...errors import ConfigError
from ...models import first_line
from ...runtime import freeze_in_bf16
from ..transformer_kit import models
from .config import TINY_GPT2, Config

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
    from ...data.datasets import load_tinyshakespeare
    from ..transformer_kit.tasks import LMTask, SpeakerTask

    text = load_tinyshakespeare()
    name = cfg.resolved_model
    if cfg.task == "speakers":
        from transformers import AutoTokenizer

        tok = models.load_pretrained(AutoTokenizer.from_pretrained, name, cfg.hub)
        return SpeakerTask(
            text, tok, k=cfg.text.speakers, max_length=cfg.text.max_length, val_size=cfg.text.val_size, device=device
        )
    if name == "tiny-gpt2":
        tok = None
    else:
        from transformers import AutoTokenizer

        tok = models.load_pretrained(AutoTokenizer.from_pretrained, name, cfg.hub)
    return LMTask(
        text,
        tok,
        block_size=cfg.lm.block_size,
        val_windows=cfg.lm.val_windows,
        device=device,
        val_subset=cfg.lm.val_subset,
    )


def make_model(cfg: Config, task, seed: int):
    """Base model + peft LoRA adapter (rank r, α, no dropout); LoRA's A and the head are drawn from ``seed``."""
    from peft import LoraConfig, get_peft_model

    from ..transformer_kit.tasks import TextClassifier

    name = cfg.resolved_model
    lora = LoraConfig(
        r=cfg.adapter.rank,
        lora_alpha=cfg.adapter.alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=list(cfg.adapter.target_modules) or None,
    )
    models.set_seed(seed)
    if cfg.task == "speakers":
        enc = _pretrained("encoder", name, cfg.hub)
        models.set_seed(seed)
        model = TextClassifier(_peft(get_peft_model, enc, lora, name), task.n_classes, enc.config.hidden_size)
        model.head.requires_grad_(cfg.adapter.train_head)
        return model
    if name == "tiny-gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        base = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=task.tokenizer.vocab_size,
                n_positions=cfg.lm.block_size,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                **TINY_GPT2,
            )
        )
    else:
        base = _pretrained("causal", name, cfg.hub)
        if cfg.lm.block_size > getattr(
            base.config, "n_positions", getattr(base.config, "max_position_embeddings", 10**9)
        ):
            raise ConfigError(f"block_size={cfg.lm.block_size} is longer than {name}'s context")
    models.set_seed(seed)
    model = _peft(get_peft_model, base, lora, name)
    if cfg.resolved_precision == "bf16":
        freeze_in_bf16(model)  # the frozen base in bfloat16; the LoRA factors stay float32
    return model


def _peft(get_peft_model, base, lora, name: str):
    try:
        return get_peft_model(base, lora)
    except ValueError as e:  # e.g. target modules not found, or no default for the architecture
        raise ConfigError(f"LoRA on {name!r}: {first_line(e)} (set target_modules=...)") from None

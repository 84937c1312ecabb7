"""The attention experiment's models and tasks: the small ViT on 8×8 digits (random init) and the pretrained
model of the fine-tuning part (MiniLM on the speaker task, or a ViT checkpoint on the digits)."""

from __future__ import annotations

from ...errors import ConfigError
from ..transformer_kit import models
from .config import Config


# --------------------------------------------------------------------------------------------- models
def make_vit(cfg: Config, seed: int):
    """The small ViT from a config (random init from ``seed``) or a pretrained ViT with a new 10-class head."""
    models.set_seed(seed)
    if cfg.digits.vit == "tiny-vit":
        from transformers import ViTConfig, ViTForImageClassification

        return ViTForImageClassification(
            ViTConfig(
                image_size=8,
                patch_size=cfg.digits.patch_size,
                num_channels=1,
                hidden_size=cfg.digits.hidden,
                num_hidden_layers=cfg.digits.layers,
                num_attention_heads=cfg.digits.heads,
                intermediate_size=cfg.digits.mlp,
                num_labels=10,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
            )
        )
    return _pretrained_vit(cfg.digits.vit, cfg.hub, seed)


def _pretrained_vit(name: str, hub: bool, seed: int):
    from transformers import AutoModelForImageClassification

    models.set_seed(seed)
    return models.load_pretrained(
        AutoModelForImageClassification.from_pretrained, name, hub, num_labels=10, ignore_mismatched_sizes=True
    )


def is_image_model(config) -> bool:
    return hasattr(config, "image_size") and hasattr(config, "num_channels")


def digits_task(model, device: str, val_fraction: float = 0.3):
    from ..transformer_kit.tasks import DigitsTask

    c = model.config
    return DigitsTask(image_size=c.image_size, channels=c.num_channels, device=device, val_fraction=val_fraction)


def make_finetune(cfg: Config, seed: int, device: str, cache: dict):
    """(task, model) of the fine-tuning part; only W_Q, W_K and the head train with ``finetune_train=qk``."""
    from ..transformer_kit.tasks import SpeakerTask, TextClassifier

    name = cfg.finetune.model
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
            from ...data.datasets import load_tinyshakespeare

            cache["task"] = SpeakerTask(
                load_tinyshakespeare(),
                tok,
                k=cfg.text.speakers,
                max_length=cfg.text.max_length,
                val_size=cfg.text.val_size,
                device=device,
            )
        enc = copy.deepcopy(cache["encoder"])
        models.set_seed(seed)
        model = TextClassifier(enc, cfg.text.speakers, enc.config.hidden_size)
        head = "head"
    _select_trainable(model, cfg.finetune.train, head, name)
    return cache["task"], model


def _select_trainable(model, mode: str, head: str, name: str) -> None:
    from ...training.factors import find_factor_pairs

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

"""Tools for any PyTorch training loop: weight-decay scheduling, spectral monitoring of factorized
products (attention W_Q W_Kᵀ, LoRA B A), automatic turn-off, LoRA decay checks, and a Hugging Face
``Trainer`` callback.

``WeightDecayCallback`` lives in :mod:`mirrorflow.training.hf` and the Lightning callback
``WeightDecayMonitor`` in :mod:`mirrorflow.training.lightning`; both are loaded on first access, so
importing this package imports neither ``transformers`` nor ``lightning``; likewise ``LegendreTracker`` (and
``identity_residual``) in :mod:`mirrorflow.training.tracker`, which needs ``mirrorflow.geometry``.
"""

from .auto_off import AutoTurnOff
from .factors import FactorPair, find_factor_pairs
from .lora_check import LoRADecayWarning, check_lora_decay, format_lora_decay_report, lora_decay_report
from .monitor import SpectralMonitor
from .scheduler import SmallRegularizationWarning, WeightDecayScheduler, decay_param_groups, is_decoupled, warn_if_small
from .spectral import product_singular_values, spectral_metrics

__all__ = [
    "WeightDecayScheduler",
    "SmallRegularizationWarning",
    "warn_if_small",
    "decay_param_groups",
    "is_decoupled",
    "product_singular_values",
    "spectral_metrics",
    "FactorPair",
    "find_factor_pairs",
    "SpectralMonitor",
    "AutoTurnOff",
    "LoRADecayWarning",
    "check_lora_decay",
    "lora_decay_report",
    "format_lora_decay_report",
    "WeightDecayCallback",
    "LegendreTracker",
    "identity_residual",
    "WeightDecayMonitor",
]


def __getattr__(name: str):
    if name == "WeightDecayCallback":
        from .hf import WeightDecayCallback

        return WeightDecayCallback
    if name in ("LegendreTracker", "identity_residual"):
        from . import tracker

        return getattr(tracker, name)
    if name == "WeightDecayMonitor":
        from .lightning import WeightDecayMonitor

        return WeightDecayMonitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Tools for any PyTorch training loop: weight-decay scheduling (and, later, spectral monitoring)."""
from .scheduler import WeightDecayScheduler, decay_param_groups, is_decoupled

__all__ = ["WeightDecayScheduler", "decay_param_groups", "is_decoupled"]

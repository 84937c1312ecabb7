"""The paper's experiments, one package each, and their registry (name → module).

Each experiment is a package satisfying :class:`mirrorflow.engine.protocol.Experiment` (and
:class:`~mirrorflow.engine.protocol.BatchedExperiment` for batched sweeps); the contract is written there.
What the commands do with an experiment (run, reproduce, sweep, phase) is in :mod:`mirrorflow.app`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..engine.protocol import Experiment
from ..errors import ConfigError

EXPERIMENTS: dict[str, str] = {
    "matrix-sensing": "mirrorflow.experiments.matrix_sensing",
    "diagonal": "mirrorflow.experiments.diagonal",
    "sparse-coding": "mirrorflow.experiments.sparse_coding",
    "lora": "mirrorflow.experiments.lora",
    "attention": "mirrorflow.experiments.attention",
}


def canonical(name: str) -> str:
    """The registry spelling of an experiment name (``matrix_sensing`` → ``matrix-sensing``)."""
    return name.replace("_", "-")


def load(name: str) -> Experiment:
    """The module of experiment ``name`` (e.g. ``"matrix-sensing"``), checked against the
    :class:`~mirrorflow.engine.protocol.Experiment` protocol (a TypeError names what it lacks)."""
    key = canonical(name)
    if key not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r} (known: {', '.join(sorted(EXPERIMENTS))})")
    mod: ModuleType = importlib.import_module(EXPERIMENTS[key])
    if not isinstance(mod, Experiment):
        missing = [n for n in ("Config", "run", "reproduce_plan", "reproduce") if not hasattr(mod, n)]
        raise TypeError(f"{mod.__name__} is not an Experiment (engine/protocol.py): it lacks {', '.join(missing)}")
    return mod

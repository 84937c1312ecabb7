"""The paper's experiments, one module each (DESIGN.md). Imported lazily by name.

Each experiment module provides:

* ``Config`` — a frozen dataclass of plain fields with ``validate()`` (raise ``ConfigError`` naming the key);
* ``run(cfg, out, progress=None) -> dict`` — one configuration into run directory ``out``
  (``config.yaml``, ``metrics.csv``, figures, ``summary.json`` last); returns the summary;
* ``reproduce(out, overrides=None, progress=None) -> str`` — the paper's figure/table reproduction into
  ``out``; returns the markdown table it printed.

Optionally, for batched sweeps (the engine runs configs that share data as one tensor program):

* ``Config.data_key()`` — configs with equal keys (and equal ``steps``) can run in one batch;
* ``run_many(cfgs, progress=None) -> list[result]`` — runs a list, grouping by ``data_key``;
* ``write_run(cfg, result, out, seconds) -> dict`` — writes one result as a run directory.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ConfigError

EXPERIMENTS: dict[str, str] = {
    "matrix-sensing": "mirrorflow.experiments.matrix_sensing",
    "diagonal": "mirrorflow.experiments.diagonal",
    "sparse-coding": "mirrorflow.experiments.sparse_coding",
    "lora": "mirrorflow.experiments.lora",
    "attention": "mirrorflow.experiments.attention",
}


def load(name: str) -> ModuleType:
    """The module of experiment ``name`` (e.g. ``"matrix-sensing"``)."""
    key = name.replace("_", "-")
    if key not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r} (known: {', '.join(sorted(EXPERIMENTS))})")
    return importlib.import_module(EXPERIMENTS[key])

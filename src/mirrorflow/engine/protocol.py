"""The contract between the commands and an experiment, as typing Protocols checked by type.

An experiment is a package under ``mirrorflow.experiments`` whose ``__init__`` exposes:

* ``Config`` — a frozen dataclass of plain fields with ``validate()`` (raise ``ConfigError`` naming the key);
* ``run(cfg, out, progress=None) -> dict`` — one configuration into run directory ``out``
  (``config.yaml``, ``metrics.csv``, figures, ``summary.json`` last); returns the summary;
* ``reproduce_plan(overrides) -> Plan`` — the one place where ``reproduce``'s ``key=value`` overrides are
  resolved and validated into the labelled configs it runs (``mirrorflow reproduce --dry-run`` prints it);
* ``reproduce(out, overrides=None, progress=None) -> str`` — the paper's figure/table reproduction into
  ``out``; returns the markdown table it printed.

A :class:`BatchedExperiment` also runs configs that share data as one tensor program (the sweep engine
groups them): ``Config.data_key()`` (configs with equal keys and equal ``steps`` share a batch),
``run_many(cfgs, progress=None) -> list[result]`` and ``write_run(cfg, result, out, seconds) -> dict``.

Optional: ``estimate_bytes(cfg) -> int`` (:class:`EstimatesMemory`, the memory check of ``run``/``sweep``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..config import Validated


@dataclass(frozen=True)
class Plan:
    """What ``reproduce`` runs for some overrides, resolved and validated before anything runs: labelled
    configs (each a complete ``Config``) and the reproduction's own options (preset, seeds, models, ...)."""

    configs: tuple[tuple[str, Any], ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Any:
        """The first config (the base config of a reproduction that derives its arms from one)."""
        return self.configs[0][1]


@runtime_checkable
class BatchedConfig(Validated, Protocol):
    """A config whose runs can share a batch: equal ``data_key()`` (and equal ``steps``) run together."""

    def data_key(self) -> Any: ...


@runtime_checkable
class Experiment(Protocol):
    """An experiment package (module docstring)."""

    Config: type

    def run(self, cfg: Any, out: Path, progress: Callable[[int], None] | None = None) -> dict: ...

    def reproduce_plan(self, overrides: Mapping[str, Any]) -> Plan: ...

    def reproduce(self, out: Path, overrides: Mapping[str, Any] | None = None, progress=None) -> str: ...


@runtime_checkable
class BatchedExperiment(Experiment, Protocol):
    """An experiment whose configs sharing ``Config.data_key()`` run as one batched tensor program."""

    def run_many(self, cfgs: list, progress: Callable[[int], None] | None = None) -> list: ...

    def write_run(self, cfg: Any, result: Any, out: Path, seconds: float) -> dict: ...


def is_batched(mod: Any) -> bool:
    """True when ``mod`` is a :class:`BatchedExperiment` and its ``Config`` a :class:`BatchedConfig`."""
    return isinstance(mod, BatchedExperiment) and isinstance(mod.Config, type) and issubclass(mod.Config, BatchedConfig)


@runtime_checkable
class EstimatesMemory(Protocol):
    """An experiment that says how many bytes its big tensors take for a config (the memory check of
    ``run``/``sweep``, :func:`mirrorflow.app.resources.check_resources`)."""

    def estimate_bytes(self, cfg: Any) -> int: ...

"""The paper's experiments, one module each, and the entry points the command line dispatches to.

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
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

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


def load(name: str) -> ModuleType:
    """The module of experiment ``name`` (e.g. ``"matrix-sensing"``)."""
    key = canonical(name)
    if key not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r} (known: {', '.join(sorted(EXPERIMENTS))})")
    return importlib.import_module(EXPERIMENTS[key])


def run_one(experiment: str, tokens: Sequence[str], out: Path | None = None,
            force: bool = False) -> tuple[dict[str, Any], Path, bool]:
    """``mirrorflow run``: build the config from ``key=value`` tokens and run it into ``out`` (default
    ``runs/<experiment>-<hash of the resolved config>``). A finished run of the same config there is reused
    unless ``force``; a finished run of another config is refused (naming the differing keys) unless ``force``.
    Returns (summary, run directory, reused)."""
    from ..config import build, config_dict, parse_overrides
    from ..store import RunDir, run_id

    mod = load(experiment)
    name = canonical(experiment)
    cfg = build(mod.Config, parse_overrides(tokens))
    resolved = {"experiment": name, **config_dict(cfg)}
    out = Path("runs") / run_id(resolved, prefix=name) if out is None else Path(out)
    rd = RunDir(out)
    rd.check_out()
    if force:
        rd.clear()
    elif rd.finished_with(resolved):
        return rd.summary(), out, True
    check_resources(mod, cfg)
    try:
        return mod.run(cfg, out), out, False
    except KeyboardInterrupt:
        rd.clear()
        raise


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def check_resources(mod: ModuleType, cfgs: Any, available: int | None = None) -> None:
    """Refuse configs whose big tensors cannot fit, before allocating anything: the experiment's
    ``estimate_bytes(cfg)`` (largest over ``cfgs``) against the memory available now (psutil)."""
    estimate = getattr(mod, "estimate_bytes", None)
    if estimate is None:
        return
    cfgs = list(cfgs) if isinstance(cfgs, (list, tuple)) else [cfgs]
    need = max((int(estimate(c)) for c in cfgs), default=0)
    if available is None:
        import psutil

        available = int(psutil.virtual_memory().available)
    if need > available:
        raise ConfigError(f"this config needs about {_size(need)} of memory, {_size(available)} is available "
                          "(reduce the sizes or steps)")


def reproduce(experiment: str, tokens: Sequence[str], out: Path | None = None) -> tuple[str, Path]:
    """``mirrorflow reproduce``: the experiment's paper reproduction into ``out`` (default
    ``runs/reproduce-<experiment>-<hash of the overrides>``); returns (the table it printed, ``out``)."""
    from ..config import parse_overrides
    from ..store import RunDir, run_id

    mod = load(experiment)
    overrides = parse_overrides(tokens)
    out = Path("runs") / f"reproduce-{canonical(experiment)}-{run_id(overrides)[:8]}" if out is None else Path(out)
    RunDir(out).check_out()
    return mod.reproduce(out, overrides), out


def resolve_sweep(experiment: str, tokens: Sequence[str], out: Path | None = None):
    """``mirrorflow sweep``: an optional spec file and ``key=v1,v2`` tokens → (grid, points, sweep directory)."""
    from ..engine.grid import resolve
    from ..store import RunDir, run_id

    files = [t for t in tokens if "=" not in t]
    if len(files) > 1:
        raise ConfigError(f"give at most one spec file, got {', '.join(files)}")
    grid, points = resolve(canonical(experiment), load(experiment), files[0] if files else None,
                           [t for t in tokens if "=" in t])
    check_resources(grid.module, [p.config for p in points])
    out = Path("runs") / f"sweep-{grid.experiment}-{run_id([p.run_id for p in points])[:8]}" if out is None \
        else Path(out)
    RunDir(out).check_out()
    return grid, points, out

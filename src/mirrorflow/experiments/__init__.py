"""The paper's experiments, one module each, and the entry points the command line dispatches to.

Each experiment is a package satisfying :class:`mirrorflow.engine.protocol.Experiment` (and
:class:`~mirrorflow.engine.protocol.BatchedExperiment` for batched sweeps); the contract is written there.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ..engine.protocol import Plan
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


def run_one(
    experiment: str, tokens: Sequence[str], out: Path | None = None, force: bool = False
) -> tuple[dict[str, Any], Path, bool]:
    """``mirrorflow run``: build the config from ``key=value`` tokens and run it into ``out`` (default
    ``runs/<experiment>-<hash of the resolved config>``). A finished run of the same config there is reused
    unless ``force``; a finished run of another config is refused (naming the differing keys) unless ``force``.
    Returns (summary, run directory, reused)."""
    from ..store import RunDir, has_finished_run, writing

    mod, cfg, resolved, out = resolve_run(experiment, tokens, out)
    rd = RunDir(out)
    with writing(out, keep=has_finished_run):  # locked; a failed run leaves nothing half-written behind
        if not force and rd.finished_with(resolved):  # refuses a finished run of another config
            return rd.summary(), out, True
        check_resources(mod, cfg)
        if rd.done:
            rd.clear()  # --force, or a truncated run: summary.json goes first
        return mod.run(cfg, out), out, False


def resolve_run(experiment: str, tokens: Sequence[str], out: Path | None = None, dry_run: bool = False):
    """``mirrorflow run`` up to running: ``key=value`` tokens → (module, validated config, the resolved dict
    that names the run, run directory). Nothing is created. ``dry_run``: a device this machine lacks is
    accepted (:func:`~mirrorflow.engine.batched.planning`: the plan may be meant for another machine)."""
    from ..config import build, config_dict, parse_overrides
    from ..store import RunDir, run_id

    mod = load(experiment)
    name = canonical(experiment)
    with _planning(dry_run):
        cfg = build(mod.Config, parse_overrides(tokens))
    resolved = {"experiment": name, **config_dict(cfg)}
    out = Path("runs") / run_id(resolved, prefix=name) if out is None else Path(out)
    RunDir(out).check_out()
    if dry_run and resolved.get("device", "cpu") != "cuda":  # a plan for this machine: the real run's memory check
        check_resources(mod, cfg)
    return mod, cfg, resolved, out


def _planning(dry_run: bool):
    import contextlib

    from ..runtime import planning

    return planning() if dry_run else contextlib.nullcontext()


def describe(cfg: Any) -> str:
    """One line ``key=value ...`` of a config's fields, or of a mapping (lists comma-separated, as the
    command line takes them)."""
    from ..config import config_dict

    def text(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    values = cfg if isinstance(cfg, Mapping) else config_dict(cfg)
    return " ".join(f"{k}={text(v)}" for k, v in values.items())


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
        raise ConfigError(
            f"this config needs about {_size(need)} of memory, {_size(available)} is available "
            "(reduce the sizes or steps)"
        )


def reproduce(experiment: str, tokens: Sequence[str], out: Path | None = None) -> tuple[str, Path]:
    """``mirrorflow reproduce``: the experiment's paper reproduction into ``out`` (default
    ``runs/reproduce-<experiment>-<hash of the overrides>``); returns (the table it printed, ``out``)."""
    from ..store import has_finished_run, writing

    mod, overrides, _, out = plan_reproduce(experiment, tokens, out)
    with writing(out, keep=has_finished_run):
        return mod.reproduce(out, overrides), out


def plan_reproduce(
    experiment: str, tokens: Sequence[str], out: Path | None = None, dry_run: bool = False
) -> tuple[ModuleType, dict[str, str], Plan, Path]:
    """``mirrorflow reproduce`` up to running: (module, overrides, the module's ``reproduce_plan``, run
    directory). Nothing is created; ``dry_run`` as in :func:`resolve_run`."""
    from ..config import parse_overrides
    from ..store import RunDir, run_id

    mod = load(experiment)
    overrides = parse_overrides(tokens)
    with _planning(dry_run):
        plan = mod.reproduce_plan(overrides)
    out = Path("runs") / f"reproduce-{canonical(experiment)}-{run_id(overrides)[:8]}" if out is None else Path(out)
    RunDir(out).check_out()
    return mod, overrides, plan, out


def resolve_sweep(experiment: str, tokens: Sequence[str], out: Path | None = None, dry_run: bool = False):
    """``mirrorflow sweep``: an optional spec file and ``key=v1,v2`` tokens → (grid, points, sweep directory);
    ``dry_run`` as in :func:`resolve_run`."""
    from ..engine.grid import resolve
    from ..store import RunDir, run_id

    files = [t for t in tokens if "=" not in t]
    if len(files) > 1:
        raise ConfigError(f"give at most one spec file, got {', '.join(files)}")
    with _planning(dry_run):
        grid, points = resolve(
            canonical(experiment), load(experiment), files[0] if files else None, [t for t in tokens if "=" in t]
        )
    check_resources(grid.module, [p.config for p in points])
    out = (
        Path("runs") / f"sweep-{grid.experiment}-{run_id([p.run_id for p in points])[:8]}" if out is None else Path(out)
    )
    RunDir(out).check_out()
    return grid, points, out

"""``mirrorflow reproduce``: an experiment's paper reproduction (its table and figures) into a run directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..engine.protocol import Experiment, Plan
from ..experiments import canonical, load
from ..store import RunDir, has_finished_run, run_id, writing
from .resources import planned
from .run import read_overrides


def reproduce(experiment: str, tokens: Sequence[str], out: Path | None = None) -> tuple[str, Path]:
    """``mirrorflow reproduce``: the experiment's paper reproduction into ``out`` (default
    ``runs/reproduce-<experiment>-<hash of the overrides>``); returns (the table it printed, ``out``)."""
    mod, overrides, _, out = plan_reproduce(experiment, tokens, out)
    with writing(out, keep=has_finished_run):
        return mod.reproduce(out, overrides), out


def plan_reproduce(
    experiment: str, tokens: Sequence[str], out: Path | None = None, dry_run: bool = False
) -> tuple[Experiment, dict[str, str], Plan, Path]:
    """``mirrorflow reproduce`` up to running: (module, overrides, the module's ``reproduce_plan``, run
    directory). Nothing is created; ``dry_run`` as in :func:`mirrorflow.app.run.resolve_run`."""
    mod = load(experiment)
    overrides = read_overrides(tokens)
    with planned(dry_run):
        plan = mod.reproduce_plan(overrides)
    out = Path("runs") / f"reproduce-{canonical(experiment)}-{run_id(overrides)[:8]}" if out is None else Path(out)
    RunDir(out).check_out()
    return mod, overrides, plan, out

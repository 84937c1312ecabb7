"""``mirrorflow sweep`` up to running: an optional spec file and ``key=v1,v2`` tokens → the grid's points and
the sweep directory (running them is :func:`mirrorflow.engine.sweep.sweep`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config import tokenize
from ..engine.grid import Grid, GridPoint, resolve
from ..errors import ConfigError
from ..experiments import canonical, load
from ..store import RunDir, run_id
from .resources import check_resources, planned


def resolve_sweep(
    experiment: str, tokens: Sequence[str], out: Path | None = None, dry_run: bool = False
) -> tuple[Grid, list[GridPoint], Path]:
    """``mirrorflow sweep``: an optional spec file (the one token without ``=``) and ``key=v1,v2`` tokens →
    (grid, points, sweep directory); ``dry_run`` as in :func:`mirrorflow.app.run.resolve_run`."""
    files, _ = tokenize(tokens, positional=True)  # the token errors (no key, a key twice) come from here
    if len(files) > 1:
        raise ConfigError(f"give at most one spec file, got {', '.join(files)}")
    with planned(dry_run):
        grid, points = resolve(
            canonical(experiment), load(experiment), files[0] if files else None, [t for t in tokens if t not in files]
        )
    check_resources(grid.module, [p.config for p in points])
    out = (
        Path("runs") / f"sweep-{grid.experiment}-{run_id([p.run_id for p in points])[:8]}" if out is None else Path(out)
    )
    RunDir(out).check_out()
    return grid, points, out

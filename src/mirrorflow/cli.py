"""``mirrorflow`` command line: parses and dispatches; heavy imports happen inside commands.

Errors a user can cause (``MirrorflowError``: bad config key/value, missing data, unknown model) are
printed as one line ``error: ...`` with exit code 2, never a traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import MirrorflowError

app = typer.Typer(
    name="mirrorflow",
    help="Weight-decay schedules, time-dependent Legendre functions, and the paper's experiments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OUT_HELP = "Run directory to write into (created if missing)."


def _default_out(kind: str, experiment: str, overrides: dict) -> Path:
    from .engine.store import run_id

    return Path("runs") / f"{kind}-{experiment}-{run_id(overrides)[:8]}"


def progress_bar(total: int, description: str):
    """A rich progress bar with an ETA; returns (context manager, advance callable)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
        disable=not sys.stderr.isatty() and False,
    )
    task = prog.add_task(description, total=total)
    return prog, lambda k=1: prog.advance(task, k)


@app.command()
def run(
    experiment: str = typer.Argument(..., help="Experiment name, e.g. matrix-sensing."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Config overrides key=value."),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
    force: bool = typer.Option(False, "--force", help="Redo the run even if it has finished before."),
) -> None:
    """Run one configuration of an experiment (key=value overrides) into a run directory."""
    from . import config as C
    from .engine.store import RunDir, run_id
    from .experiments import load

    mod = load(experiment)
    cfg = C.build(mod.Config, C.parse_overrides(overrides or []))
    resolved = C.config_dict(cfg)
    out = out or Path("runs") / run_id({"experiment": experiment, **resolved}, prefix=experiment)
    rd = RunDir(out)
    if rd.done and not force:
        typer.echo(f"finished run found in {out} (use --force to redo)")
        summary = rd.summary()
    else:
        summary = mod.run(cfg, out)
    for k, v in summary.items():
        if not isinstance(v, (dict, list)):
            typer.echo(f"{k}: {v}")
    typer.echo(f"run directory: {out}")


@app.command()
def reproduce(
    experiment: str = typer.Argument(..., help="Experiment name, e.g. matrix-sensing."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Config overrides key=value."),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Reproduce the paper's table and figures for an experiment; prints the table."""
    from . import config as C
    from .experiments import load

    mod = load(experiment)
    ov = C.parse_overrides(overrides or [])
    out = out or _default_out("reproduce", experiment, ov)
    table = mod.reproduce(out, ov)
    typer.echo(table)
    typer.echo(f"\nrun directory: {out}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the typer app, turning user errors into one line and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except MirrorflowError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2)
    except ValueError as e:  # schedule constructors and other argument checks
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2)
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            raise SystemExit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            typer.echo("aborted", err=True)
            raise SystemExit(1)
        raise


if __name__ == "__main__":
    main()

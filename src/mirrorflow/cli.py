"""``mirrorflow`` command line: parses and dispatches to :mod:`mirrorflow.app` (what the commands do);
heavy imports happen inside commands.

Errors are mapped to one line in one place (:func:`main`): a problem with the user's input
(``MirrorflowError``, argument checks raising ``ValueError``, a missing file, a usage error of the command
line itself) prints ``error: ...`` and exits with code 2; Ctrl-C prints ``interrupted`` and exits with 130.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    name="mirrorflow",
    help="Weight-decay schedules, time-dependent Legendre functions, and the paper's experiments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OUT_HELP = "Run directory to write into (created if missing)."
DRY_RUN_HELP = (
    "Resolve and check the overrides, print the configuration(s) and the run directory, and exit "
    "(nothing is created or loaded; a device this machine lacks is accepted)."
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mirrorflow {version('mirrorflow')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Weight-decay schedules, time-dependent Legendre functions, and the paper's experiments."""


@app.command()
def run(
    experiment: str = typer.Argument(..., help="Experiment name, e.g. matrix-sensing."),
    overrides: list[str] | None = typer.Argument(None, help="Config overrides key=value."),
    out: Path | None = typer.Option(None, "--out", help=OUT_HELP),
    force: bool = typer.Option(False, "--force", help="Redo the run even if it has finished before."),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Run one configuration of an experiment (key=value overrides) into a run directory."""
    from .app.run import describe, resolve_run, run_one
    from .store import RunDir

    if dry_run:
        _, cfg, resolved, out = resolve_run(experiment, overrides or [], out, dry_run=True)
        if not force:  # what the real run refuses: a finished run of another config in --out
            RunDir(out).finished_with(resolved)
        typer.echo(describe(cfg))
        typer.echo(f"run directory: {out}")
        return
    summary, out, reused = run_one(experiment, overrides or [], out, force)
    if reused:
        typer.echo(f"finished run found in {out} (use --force to redo)")
    for k, v in summary.items():
        if not isinstance(v, (dict, list)):
            typer.echo(f"{k}: {v}")
    typer.echo(f"run directory: {out}")


@app.command()
def reproduce(
    experiment: str = typer.Argument(..., help="Experiment name, e.g. matrix-sensing."),
    overrides: list[str] | None = typer.Argument(None, help="Config overrides key=value."),
    out: Path | None = typer.Option(None, "--out", help=OUT_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Reproduce the paper's table and figures for an experiment; prints the table."""
    from .app.reproduce import plan_reproduce
    from .app.reproduce import reproduce as reproduce_experiment
    from .app.run import describe

    if dry_run:
        _, _, plan, out = plan_reproduce(experiment, overrides or [], out, dry_run=True)
        if plan.options:
            typer.echo(f"options: {describe(plan.options)}")
        for label, cfg in plan.configs:
            typer.echo(f"{label}: {describe(cfg)}")
        typer.echo(f"run directory: {out}")
        return
    table, out = reproduce_experiment(experiment, overrides or [], out)
    typer.echo(table)
    typer.echo(f"\nrun directory: {out}")


@app.command()
def sweep(
    experiment: str = typer.Argument(..., help="Experiment name, e.g. matrix-sensing."),
    spec: list[str] | None = typer.Argument(
        None,
        help="Optional spec.yaml, then key=v1,v2,... (an axis), key=v (fixed), seeds=0..4 or seeds=0,1,2; "
        "an axis of a list-valued field: key=\\[a,b],\\[c].",
    ),
    out: Path | None = typer.Option(None, "--out", help="Sweep directory (run store); re-run to resume."),
    backend: str = typer.Option("local", "--backend", help="local (process pool) or ray."),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster address (default: start a local instance)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Parallel workers (default: the cores / the cluster's CPUs)."
    ),
    batch_size: int = typer.Option(128, "--batch-size", help="Most configurations in one batched tensor program."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the resolved runs and exit."),
) -> None:
    """Run a grid of configurations (YAML spec and/or key=v1,v2 axes × seeds=0..4) into one resumable run store."""
    from .app.sweep import resolve_sweep
    from .engine.progress import SweepProgress
    from .engine.sweep import check_manifest
    from .engine.sweep import sweep as run_sweep

    grid, points, out = resolve_sweep(experiment, spec or [], out, dry_run=dry_run)
    if dry_run:
        check_manifest(out, grid)  # what the real sweep refuses: a damaged store or one of another experiment
        for p in points:
            typer.echo(f"{p.run_id}  " + " ".join(f"{k}={v}" for k, v in p.params.items()))
        typer.echo(f"{len(points)} runs into {out}")
        return
    with SweepProgress(f"sweep {grid.experiment}", out, lambda s: typer.echo(s, err=True)) as progress:
        result = run_sweep(
            grid,
            points,
            out,
            backend=backend,
            address=address,
            workers=workers,
            batch_size=batch_size,
            progress=progress,
        )
    typer.echo(result.line())
    typer.echo(f"sweep directory: {out}  (mirrorflow report {out})")
    if result.failed:
        rid, err = next(iter(result.failed.items()))
        typer.echo(
            f"error: {len(result.failed)} runs failed, e.g. {rid}: {err} (see {out / rid / 'error.txt'}); "
            "re-run to retry them",
            err=True,
        )
        raise SystemExit(1)


@app.command()
def phase(
    experiment: str = typer.Argument(..., help="Experiment name, e.g. matrix-sensing."),
    spec: list[str] | None = typer.Argument(
        None,
        help="x=KEY:LO:HI:COUNT[:log], y=..., facet=KEY:V1,V2, seeds=0,1,2, off=FRACTION, metric=NAME, "
        "schedules=a,b,c[,auto], auto=plateau[:SIGNAL[:TOL[:WINDOW]]], device=cpu|cuda, key=value overrides.",
    ),
    out: Path | None = typer.Option(None, "--out", help=OUT_HELP),
    force: bool = typer.Option(False, "--force", help="Redo the grid even if it has finished before."),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Resolve and check the grid, print it and the run directory, and exit (nothing is created).",
    ),
) -> None:
    """Phase diagram: a 2-D grid per weight-decay schedule as batched programs; heatmaps into a run directory."""
    from .app.phase import is_faceted, plan_facets, plan_phase, run_phase
    from .app.run import describe
    from .store import RunDir

    if dry_run and is_faceted(spec or []):
        key, facets, out = plan_facets(experiment, spec or [], out)
        for v, fspec, _sub in facets:
            typer.echo(f"{key}={v:g}: {describe({k: x for k, x in fspec.as_dict().items() if k != 'base'})}")
        typer.echo(f"run directory: {out}")
        return
    if dry_run:
        _, spec, out = plan_phase(experiment, spec or [], out)
        if not force:  # what the real run refuses: a finished grid of another spec in --out
            RunDir(out).finished_with(spec.as_dict())
        plan = spec.as_dict()
        base = plan.pop("base")
        typer.echo(describe(plan))
        typer.echo(f"base: {describe(base)}")
        typer.echo(
            f"{len(spec.x.values) * len(spec.y.values)} cells × {len(spec.schedules)} schedules × "
            f"{len(spec.seeds)} seed{'s' if len(spec.seeds) > 1 else ''}"
        )
        typer.echo(f"run directory: {out}")
        return
    out, summary = run_phase(experiment, spec or [], out, force)
    for k, v in summary.items():
        if k not in ("axes", "best_switch", "facets"):  # long: in summary.json and `mirrorflow report`
            typer.echo(f"{k}: {v}")
    for name, f in summary.get("facets", {}).items():
        typer.echo(
            f"{name}: turned off beats both in {f.get('turn_off_wins_fraction')}, winners {f['winner_fraction']}"
        )
    for r in summary.get("best_switch", []):
        other = next(iter(r))
        auto = f", automatic switch-off {r['auto_off']}" if "auto_off" in r else ""
        typer.echo(
            f"{other}={r[other]:.3g}: best fixed switch {r['best_off']} (within 2× of the best: {r['near_best']}){auto}"
        )
    typer.echo(f"run directory: {out}")


@app.command()
def report(
    directory: Path = typer.Argument(..., help="A sweep or phase directory (or any directory with finished runs)."),
    out: Path | None = typer.Option(None, "--out", help="Where to write the report (default DIR/report)."),
) -> None:
    """Aggregate a sweep: tidy CSV, markdown table (mean ± 95% CI across seeds), figures, one HTML page; on a
    phase directory: the heatmaps, the winner map and margin, the win fraction and winning box."""
    from .report import phase as phase_report
    from .report.aggregate import write_report

    write = phase_report.write_report if phase_report.is_phase_dir(directory) else write_report
    rep = write(directory, out)
    typer.echo(rep.markdown)
    typer.echo(f"report: {rep.html}")


@app.command()
def legendre(
    reparam: str = typer.Argument(..., help="mw, mw-coupled, uut, power, log, linear or depth3."),
    a: str = typer.Option("-0.5,-1,-2", "--a", help="Comma-separated accumulated regularizations a = -∫λ."),
    out: Path | None = typer.Option(None, "--out", help="PNG to draw R_a and its mirror map into."),
    scale: float = typer.Option(1.0, "--scale", help="Initial parameter scale (see docs/geometry.md)."),
    x0: float = typer.Option(0.0, "--x0", help="Initial x_0 = g(w_0) (ignored by mw-coupled and uut)."),
    k: int = typer.Option(2, "--k", help="Depth exponent of power: x = u^(2k) - v^(2k)."),
    data_scale: float = typer.Option(1.0, "--data-scale", help="Scale s of the type-of-bias curvature ratio."),
    xmin: float | None = typer.Option(None, "--xmin", help="Left end of the plotted x range."),
    xmax: float | None = typer.Option(None, "--xmax", help="Right end of the plotted x range."),
) -> None:
    """Draw R_a of a one-dimensional reparameterization for several a; print the three effects."""
    from .app.legendre import draw, effects_table

    table, rep, init, a_values = effects_table(reparam, a, scale, x0, k, data_scale)
    typer.echo(table, nl=False)
    if out is not None:
        typer.echo(f"figure: {draw(rep, init, a_values, out, xmin, xmax)}")


MAX_ECHO = 300  # characters of an error line: a 100 KB argument is not echoed in full


def _one_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when empty)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _bounded(line: str) -> str:
    """``line`` cut to :data:`MAX_ECHO` characters, saying how much was left out."""
    return line if len(line) <= MAX_ECHO else f"{line[:MAX_ECHO]}... ({len(line) - MAX_ECHO} more characters)"


def _encodable_streams() -> None:
    """A terminal whose encoding cannot show ``λ``, ``∫`` or ``≥`` (``PYTHONIOENCODING=ascii``, a C locale)
    gets ``\\u03bb`` escapes instead of a UnicodeEncodeError."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        if (
            hasattr(stream, "reconfigure")
            and (getattr(stream, "encoding", "") or "").lower().replace("-", "") != "utf8"
        ):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; every error a user can cause becomes one line (module docstring)."""
    from .errors import MirrorflowError

    _encodable_streams()
    try:
        code = app(args=argv, standalone_mode=False)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None
    except (MirrorflowError, ValueError, OSError) as e:
        where = f"{e.filename}: " if isinstance(e, OSError) and getattr(e, "filename", None) else ""
        msg = e.strerror if isinstance(e, OSError) and e.strerror else _one_line(e)
        typer.echo(_bounded(f"error: {where}{msg}"), err=True)
        raise SystemExit(2) from None
    except Exception as e:
        # usage errors of click (or of the copy of click that typer bundles): they carry an exit code
        if callable(getattr(e, "format_message", None)) and isinstance(getattr(e, "exit_code", None), int):
            lines = str(e.format_message()).strip().splitlines()
            if lines:  # an empty message: the help was shown (no arguments)
                typer.echo(_bounded(f"error: {lines[0]}"), err=True)
            raise SystemExit(e.exit_code) from None
        if type(e).__name__ == "Abort":  # click's Abort (e.g. Ctrl-C at a prompt)
            typer.echo("interrupted", err=True)
            raise SystemExit(130) from None
        raise
    # typer turns Ctrl-C inside a command into Exit(130), which non-standalone mode returns as the exit code
    if code == 130:
        typer.echo("interrupted", err=True)
        raise SystemExit(130)
    if isinstance(code, int) and not isinstance(code, bool) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()

"""``mirrorflow`` command line: parses and dispatches; heavy imports happen inside commands.

Errors a user can cause (``MirrorflowError``: bad config key/value, missing data, unknown model) are
printed as one line ``error: ...`` with exit code 2, never a traceback.
"""
from __future__ import annotations

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
    from .store import run_id

    return Path("runs") / f"{kind}-{experiment}-{run_id(overrides)[:8]}"


@app.command()
def run(
    experiment: str = typer.Argument(..., help="Experiment name, e.g. matrix-sensing."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Config overrides key=value."),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
    force: bool = typer.Option(False, "--force", help="Redo the run even if it has finished before."),
) -> None:
    """Run one configuration of an experiment (key=value overrides) into a run directory."""
    from . import config as C
    from .store import RunDir, run_id
    from .experiments import load

    mod = load(experiment)
    experiment = experiment.replace("_", "-")
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


@app.command()
def sweep(
    experiment: str = typer.Argument(..., help="Experiment name, e.g. matrix-sensing."),
    spec: Optional[List[str]] = typer.Argument(
        None, help="Optional spec.yaml, then key=v1,v2,... (an axis), key=v (fixed), seeds=N; "
                   "an axis of a list-valued field: key=\\[a,b],\\[c]."),
    out: Optional[Path] = typer.Option(None, "--out", help="Sweep directory (run store); re-run to resume."),
    backend: str = typer.Option("local", "--backend", help="local (process pool) or ray."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: start a local instance)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Parallel workers (default: the cores / the cluster's CPUs)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Most configurations in one batched tensor program."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the resolved runs and exit."),
) -> None:
    """Run a grid of configurations (YAML spec and/or key=v1,v2 axes × seeds=N) into one resumable run store."""
    from .engine.grid import resolve
    from .store import run_id
    from .engine.sweep import sweep as run_sweep
    from .errors import ConfigError

    tokens = list(spec or [])
    files = [t for t in tokens if "=" not in t]
    if len(files) > 1:
        raise ConfigError(f"give at most one spec file, got {', '.join(files)}")
    grid, points = resolve(experiment, files[0] if files else None, [t for t in tokens if "=" in t])
    out = out or Path("runs") / f"sweep-{grid.experiment}-{run_id([p.run_id for p in points])[:8]}"
    if dry_run:
        for p in points:
            typer.echo(f"{p.run_id}  " + " ".join(f"{k}={v}" for k, v in p.params.items()))
        typer.echo(f"{len(points)} runs into {out}")
        return
    bar = {}

    def progress(total: int, skipped: int, pending: int):
        typer.echo(f"{total} runs in {out}: {skipped} finished before, {pending} to run", err=True)
        if not pending:
            return None
        from .engine.progress import progress_bar

        prog, advance = progress_bar(pending, f"sweep {grid.experiment}")
        prog.start()
        bar["prog"] = prog
        return advance

    try:
        result = run_sweep(grid, points, out, backend=backend, address=address, workers=workers,
                           batch_size=batch_size, progress=progress)
    finally:
        if "prog" in bar:
            bar["prog"].stop()
    typer.echo(result.line())
    typer.echo(f"sweep directory: {out}  (mirrorflow report {out})")
    if result.failed:
        rid, err = next(iter(result.failed.items()))
        typer.echo(f"error: {len(result.failed)} runs failed, e.g. {rid}: {err} (see {out / rid / 'error.txt'}); "
                   "re-run to retry them", err=True)
        raise SystemExit(1)


@app.command()
def phase(
    experiment: str = typer.Argument(..., help="Experiment name, e.g. matrix-sensing."),
    spec: Optional[List[str]] = typer.Argument(
        None, help="x=KEY:LO:HI:COUNT[:log], y=..., metric=NAME, schedules=a,b,c, device=cpu|cuda, key=value overrides."),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
    force: bool = typer.Option(False, "--force", help="Redo the grid even if it has finished before."),
) -> None:
    """Phase diagram: a 2-D grid per weight-decay schedule as batched programs; heatmaps into a run directory."""
    from .experiments.phase import run_phase

    out, summary = run_phase(experiment, spec or [], out, force)
    for k, v in summary.items():
        typer.echo(f"{k}: {v}")
    typer.echo(f"run directory: {out}")


@app.command()
def report(
    directory: Path = typer.Argument(..., help="A sweep directory (or any directory with finished runs)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the report (default DIR/report)."),
) -> None:
    """Aggregate a sweep: tidy CSV, markdown table (mean ± 95% CI across seeds), figures, one HTML page."""
    from .report.aggregate import write_report

    rep = write_report(directory, out)
    typer.echo(rep.markdown)
    typer.echo(f"report: {rep.html}")


@app.command()
def legendre(
    reparam: str = typer.Argument(..., help="mw, mw-coupled, uut, power, log, linear or depth3."),
    a: str = typer.Option("-0.5,-1,-2", "--a", help="Comma-separated accumulated regularizations a = -∫λ."),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG to draw R_a and its mirror map into."),
    scale: float = typer.Option(1.0, "--scale", help="Initial parameter scale (see docs/geometry.md)."),
    x0: float = typer.Option(0.0, "--x0", help="Initial x_0 = g(w_0) (ignored by mw-coupled and uut)."),
    k: int = typer.Option(2, "--k", help="Depth exponent of power: x = u^(2k) - v^(2k)."),
    data_scale: float = typer.Option(1.0, "--data-scale", help="Scale s of the type-of-bias curvature ratio."),
    xmin: Optional[float] = typer.Option(None, "--xmin", help="Left end of the plotted x range."),
    xmax: Optional[float] = typer.Option(None, "--xmax", help="Right end of the plotted x range."),
) -> None:
    """Draw R_a of a one-dimensional reparameterization for several a; print the three effects."""
    from . import geometry as G
    from .errors import ConfigError

    key = reparam.strip().lower()
    if key not in G.REPARAMETERIZATIONS:
        raise ConfigError(f"unknown reparameterization {reparam!r} (known: {', '.join(G.REPARAMETERIZATIONS)})")
    try:
        a_values = [float(v) for v in a.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--a: expected comma-separated numbers, got {a!r}") from None
    if not a_values:
        raise ConfigError("--a: give at least one value")
    if scale <= 0:
        raise ConfigError(f"--scale must be positive, got {scale:g}")
    rep = G.get(key, 1, k=k)
    init = rep.init(scale=scale, x0=None if key in ("mw-coupled", "uut") else x0)
    rows = G.three_effects(rep, init, a_values, scale=data_scale)
    typer.echo(f"{rep.name}: x*_a = argmin R_a (positional bias), tau = curvature ratio R_a''(x* + {data_scale:g})"
               " / R_a''(x*) outwards (1 = L2-like, 0 = L1-like), dual width = range of the mirror map")
    typer.echo("| a | minimiser x*_a | type tau | dual width |")
    typer.echo("|---|---|---|---|")
    for r in rows:
        typer.echo(f"| {r['a']:g} | {float(r['minimizer'].flatten()[0]):.6g} | {r['type']:.6g} | "
                   f"{float(r['dual_width'].flatten()[0]):.6g} |")
    if out is not None:
        from .geometry.plot import legendre_figure

        rng = None
        if xmin is not None or xmax is not None:
            if xmin is None or xmax is None or not xmin < xmax:
                raise ConfigError("--xmin and --xmax must be given together with xmin < xmax")
            rng = (xmin, xmax)
        path = legendre_figure(rep, init, a_values, out, x_range=rng)
        typer.echo(f"figure: {path}")


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

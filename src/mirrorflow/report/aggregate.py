"""Collect a sweep's run store into a tidy CSV, a markdown table (mean ± 95% CI across seeds) and figures.

Input: a sweep directory ``DIR`` (``DIR/sweep.yaml`` plus one run directory per run, see
:mod:`mirrorflow.engine.sweep`) or any directory with finished run directories below it (then the axes are
the config keys whose values differ between runs).

Outputs (written to ``DIR/report/`` by :func:`write_report`):

* ``runs.csv`` — tidy: one row per finished run; columns ``run_id``, ``status``, every config key, every
  numeric summary value (nested dicts/lists flattened to ``a.b`` / ``a[0].b``);
* ``curves.csv`` — tidy: one row per run × logged step (``run_id``, the axes, then ``metrics.csv``'s columns);
* ``summary.md`` — one row per *group* (equal axis values except ``seed``) with, per summary metric,
  the mean over the group's finite values and the half-width of the 95% confidence interval of the mean
  from the t-distribution,

      x̄ ± t_{0.975, n−1} · s / √n,     s² = Σ (x_i − x̄)² / (n − 1),

  (no interval for n = 1); a value missing for some seeds (a diverged run, a loss threshold never hit)
  shows how many seeds had it, ``(k/n)``;
* figures — per summary metric the group means ± CI against the numeric axis with the most values (one
  line per combination of the other axes), or a dot plot per group when no axis is numeric; and the
  mean learning curve ± CI band per group for the first metrics of ``metrics.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .collect import (
    REPORT_DIR,
    Group,
    Sweep,
    _fmt_param,
    _number,
    collect,
    curve_rows,  # noqa: F401
    flatten,
    groups,
    metric_names,
    tidy_rows,
)
from .stats import interval, spans_decades
from .sweep_figures import figures  # noqa: F401
from .tables import markdown_table

MAX_TABLE_METRICS = 10


# ------------------------------------------------------------------------------------- table
def fmt_num(v: float) -> str:
    if not math.isfinite(v):
        return "–" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return f"{v:.4g}"


def fmt_ci(centre: float, low: float, high: float, n: int, total: int, log: bool = False) -> str:
    """``mean ± half-width`` (``± 0`` below 1e-9 relative: rounding), or on the log scale
    ``geometric mean [low, high]``; ``(n/total)`` when some seeds had no value."""
    if n == 0:
        return "–"
    if not math.isfinite(low):
        s = fmt_num(centre)
    elif log:
        s = f"{fmt_num(centre)} [{low:.2g}, {high:.2g}]"
    else:
        half = 0.5 * (high - low)
        s = f"{fmt_num(centre)} ± {0 if half <= 1e-9 * abs(centre) else half:.2g}"
    return s if n == total else f"{s} ({n}/{total})"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    more_metrics: int  # metrics left out of the table (all are in runs.csv)

    def markdown(self) -> str:
        return markdown_table(self.header, self.rows, escape=True)


def summary_table(sweep: Sweep, gs: Sequence[Group] | None = None) -> Table:
    """Mean ± 95% CI (t-distribution) across seeds per group, one column per summary metric; a positive
    metric that spans decades across the sweep gets its interval on the log scale (:func:`.stats.interval`)."""
    gs = list(gs) if gs is not None else groups(sweep)
    metrics = metric_names(sweep.runs)
    shown = metrics[:MAX_TABLE_METRICS]
    has_status = any("status" in r.summary for r in sweep.runs)
    header = [*sweep.group_axes, "runs", *(["diverged"] if has_status else []), *shown]
    logs = {m for m in shown if spans_decades(_number(flatten(r.summary).get(m)) for r in sweep.runs)}
    rows = []
    for g in gs:
        n = len(g.runs)
        row = [_fmt_param(g.params[a]) for a in sweep.group_axes] + [str(n)]
        if has_status:
            row.append(str(sum(r.status == "diverged" for r in g.runs)))
        for m in shown:
            centre, low, high, k = interval((_number(flatten(r.summary).get(m)) for r in g.runs), log=m in logs)
            row.append(fmt_ci(centre, low, high, k, n, log=m in logs))
        rows.append(row)
    return Table(header, rows, len(metrics) - len(shown))


def describe(sweep: Sweep) -> str:
    """One paragraph: experiment, axes, run counts."""
    seeds = sorted({r.config.get("seed") for r in sweep.runs if "seed" in r.config}, key=str)
    parts = [f"experiment {sweep.experiment or '?'}", f"{len(sweep.runs)} finished of {sweep.planned} planned runs"]
    if sweep.failed:
        parts.append(f"{len(sweep.failed)} failed")
    if sweep.missing:
        parts.append(f"{sweep.missing} not run yet")
    parts.append("axes: " + (", ".join(sweep.group_axes) or "none"))
    if "seed" in sweep.axes:
        parts.append(f"{len(seeds)} seeds")
    return "; ".join(parts) + (
        ". Cells: mean ± half-width of the 95% t-interval across seeds, or for a positive "
        "metric spanning decades the geometric mean [95% interval on the log scale]; "
        "(k/n): k of n seeds had a value."
    )


# ------------------------------------------------------------------------------------- writing
@dataclass
class Report:
    out: Path
    markdown: str
    files: list[Path]
    html: Path


def write_report(root: Path | str, out: Path | str | None = None) -> Report:
    """Write runs.csv, curves.csv, summary.md, figures and index.html into ``out`` (default ``root/report``)."""
    from ..store import RunDir, writing

    sweep = collect(root)
    out = Path(out) if out is not None else Path(root) / REPORT_DIR
    RunDir(out).check_out()
    with writing(out):  # locked; a report that fails (a full disk, a damaged run) leaves nothing behind
        return _write_report(sweep, root, out)


def _write_report(sweep: Sweep, root: Path | str, out: Path) -> Report:
    from ..store import atomic_write, write_csv
    from .figures import png_bytes
    from .html import render_page

    gs = groups(sweep)
    files = []
    rows, cols = tidy_rows(sweep)
    files.append(write_csv(out / "runs.csv", rows, cols))
    crow, ccols = curve_rows(sweep)
    if crow:
        files.append(write_csv(out / "curves.csv", crow, ccols))
    table = summary_table(sweep, gs)
    title = f"Sweep report: {sweep.experiment or Path(root).name}"
    md = f"# {title}\n\n{describe(sweep)}\n\n{table.markdown()}"
    if table.more_metrics:
        md += f"\n{table.more_metrics} more metrics in runs.csv.\n"
    files.append(atomic_write(out / "summary.md", md))
    figs = []
    for name, caption, fig in figures(sweep, gs):
        data = png_bytes(fig)
        files.append(atomic_write(out / name, data))
        figs.append((caption, data))
    page = render_page(
        title,
        describe(sweep),
        table,
        figs,
        links=[(p.name, p.read_bytes()) for p in files if p.suffix in (".csv", ".md")],
        failed=sweep.failed,
    )
    html_path = atomic_write(out / "index.html", page)
    files.append(html_path)
    return Report(out, md, files, html_path)

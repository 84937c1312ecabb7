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

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from ..store import ERROR, METRICS, RunDir, StoreFileError, read_csv, read_manifest, runs_under
from .stats import t_interval, t_interval_columns
from .tables import markdown_table

REPORT_DIR = "report"
SKIP_METRICS = {"seconds", "diverged_at"}
MAX_TABLE_METRICS = 10
MAX_FIGURE_METRICS = 6
MAX_CURVE_METRICS = 2
MAX_LINES = 10


@dataclass
class RunRecord:
    run_id: str
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "finished"))


@dataclass
class Group:
    """Runs with equal axis values (seeds aside)."""

    key: tuple
    params: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)


@dataclass
class Sweep:
    """What :func:`collect` found under a directory."""

    root: Path
    experiment: str
    axes: list[str]  # varying config keys, ``seed`` included when present
    runs: list[RunRecord]
    planned: int
    failed: dict[str, str]  # run id → first line of error.txt

    @property
    def group_axes(self) -> list[str]:
        return [a for a in self.axes if a != "seed"]

    @property
    def missing(self) -> int:
        return max(0, self.planned - len(self.runs) - len(self.failed))


# ------------------------------------------------------------------------------------ collecting
def _read_run(path: Path, invalid: dict[str, str] | None = None) -> RunRecord | None:
    """The finished run in ``path``, or None. A summary or config that fails validation
    (:func:`mirrorflow.store.read_summary`) makes the run unfinished; its message (naming the file) goes
    into ``invalid`` (run id → message)."""
    rd = RunDir(path)
    if not rd.done:
        return None
    try:
        return RunRecord(path.name, path, rd.config(), rd.summary())
    except StoreFileError as e:
        if invalid is None:
            raise
        invalid[path.name] = str(e)
        return None


def collect(root: Path | str) -> Sweep:
    """Finished runs of the sweep in ``root`` (its ``sweep.yaml`` when present)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"report: {str(root)!r} is not a directory")
    m = read_manifest(root)
    failed: dict[str, str] = {}
    if m is not None:
        ids = [r["id"] for r in m.get("runs") or []]
        runs = []
        for rid in ids:
            rec = _read_run(root / rid, failed)
            if rec is not None:
                runs.append(rec)
            elif (root / rid / ERROR).is_file():
                failed[rid] = _first_error_line(root / rid / ERROR)
        experiment = str(m.get("experiment", ""))
        axes = [a for a in m.get("axes") or []]
        planned = len(ids)
    else:
        runs = [r for r in (_read_run(rd.path, failed) for rd in runs_under(root, skip=(REPORT_DIR,)))
                if r is not None]
        exps = sorted({str(r.config.get("experiment", "")) for r in runs})
        if len(exps) > 1:
            raise ConfigError(f"report: {root} mixes experiments {', '.join(exps)}; report one sweep directory")
        experiment = exps[0] if exps else ""
        axes = varying_keys(runs)
        planned = len(runs)
    if not runs:
        why = f"; {next(iter(failed.values()))}" if failed else ""
        raise ConfigError(f"report: no finished runs (summary.json) in {root}{why}")
    return Sweep(root, experiment, axes, runs, planned, failed)


def _first_error_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "failed"


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def varying_keys(runs: Sequence[RunRecord]) -> list[str]:
    """Config keys whose values differ between runs (in config order)."""
    keys: list[str] = []
    for r in runs:
        for k in r.config:
            if k not in keys:
                keys.append(k)
    return [k for k in keys if k != "experiment" and len({_hashable(r.config.get(k)) for r in runs}) > 1]


# --------------------------------------------------------------------------------------- metrics
def flatten(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists → ``{"a.b": v, "a[0].c": w}``; only numbers (not bools), None and strings kept."""
    out: dict[str, Any] = {}
    for k, v in summary.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, name))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                if isinstance(x, Mapping):
                    out.update(flatten(x, f"{name}[{i}]"))
                else:
                    out[f"{name}[{i}]"] = x
        else:
            out[name] = v
    return out


def _number(v: Any) -> float:
    """A summary value as a float: None / "inf" strings (store's encoding of non-finite) → nan / ±inf."""
    if isinstance(v, bool) or v is None:
        return math.nan
    if isinstance(v, (int, float)):
        return float(v)
    if v in ("inf", "-inf"):
        return float(v)
    return math.nan


def metric_names(runs: Sequence[RunRecord]) -> list[str]:
    """Numeric summary keys (flattened), in first-seen order, without bookkeeping keys (seconds...)."""
    names: list[str] = []
    numeric: set[str] = set()
    for r in runs:
        for k, v in flatten(r.summary).items():
            if k.split(".")[-1].split("[")[0] in SKIP_METRICS or k in SKIP_METRICS:
                continue
            if k not in names:
                names.append(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                numeric.add(k)
    return [n for n in names if n in numeric]


def groups(sweep: Sweep) -> list[Group]:
    """Runs grouped by their values of the non-seed axes, in order of first appearance."""
    out: dict[tuple, Group] = {}
    for r in sweep.runs:
        params = {a: r.config.get(a) for a in sweep.group_axes}
        key = tuple(_hashable(params[a]) for a in sweep.group_axes)
        out.setdefault(key, Group(key, params)).runs.append(r)
    return _sorted_groups(list(out.values()), sweep.group_axes)


def _sorted_groups(gs: list[Group], axes: Sequence[str]) -> list[Group]:
    def sort_key(g: Group):
        return tuple((0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))
                     for v in g.key)
    try:
        return sorted(gs, key=sort_key)
    except TypeError:
        return gs


# ------------------------------------------------------------------------------------ tidy data
def tidy_rows(sweep: Sweep) -> tuple[list[dict], list[str]]:
    """``runs.csv``: one row per run (run id, status, config, numeric summary values)."""
    cfg_keys: list[str] = []
    for r in sweep.runs:
        for k in r.config:
            if k not in cfg_keys and k != "experiment":
                cfg_keys.append(k)
    metrics = metric_names(sweep.runs)
    rows = []
    for r in sweep.runs:
        flat = flatten(r.summary)
        row = {"run_id": r.run_id, "status": r.status}
        for k in cfg_keys:
            v = r.config.get(k)
            row[k] = json.dumps(v) if isinstance(v, (list, dict)) else v
        for m in metrics:
            row[m] = _number(flat.get(m))
        row["seconds"] = _number(r.summary.get("seconds"))
        rows.append(row)
    return rows, ["run_id", "status", *cfg_keys, *metrics, "seconds"]


def curve_rows(sweep: Sweep) -> tuple[list[dict], list[str]]:
    """``curves.csv``: each run's ``metrics.csv`` with ``run_id`` and the axis values in front."""
    rows: list[dict] = []
    cols: list[str] = []
    for r in sweep.runs:
        p = r.path / METRICS
        if not p.is_file():
            continue
        for row in read_csv(p):
            front = {"run_id": r.run_id, **{a: _cell(r.config.get(a)) for a in sweep.axes}}
            full = {**front, **row}
            for k in full:
                if k not in cols:
                    cols.append(k)
            rows.append(full)
    return rows, cols


def _cell(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (list, dict)) else v


# ------------------------------------------------------------------------------------- table
def fmt_num(v: float) -> str:
    if not math.isfinite(v):
        return "–" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return f"{v:.4g}"


def fmt_ci(mean: float, half: float, n: int, total: int) -> str:
    if n == 0:
        return "–"
    s = fmt_num(mean) if not math.isfinite(half) else f"{fmt_num(mean)} ± {half:.2g}"
    return s if n == total else f"{s} ({n}/{total})"


def _fmt_param(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_param(x) for x in v) + "]"
    return str(v)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    more_metrics: int  # metrics left out of the table (all are in runs.csv)

    def markdown(self) -> str:
        return markdown_table(self.header, self.rows, escape=True)


def summary_table(sweep: Sweep, gs: Sequence[Group] | None = None) -> Table:
    """Mean ± 95% CI (t-distribution) across seeds per group, one column per summary metric."""
    gs = list(gs) if gs is not None else groups(sweep)
    metrics = metric_names(sweep.runs)
    shown = metrics[:MAX_TABLE_METRICS]
    has_status = any("status" in r.summary for r in sweep.runs)
    header = [*sweep.group_axes, "runs", *(["diverged"] if has_status else []), *shown]
    rows = []
    for g in gs:
        n = len(g.runs)
        row = [_fmt_param(g.params[a]) for a in sweep.group_axes] + [str(n)]
        if has_status:
            row.append(str(sum(r.status == "diverged" for r in g.runs)))
        for m in shown:
            mean, half, k = t_interval(_number(flatten(r.summary).get(m)) for r in g.runs)
            row.append(fmt_ci(mean, half, k, n))
        rows.append(row)
    return Table(header, rows, len(metrics) - len(shown))


def describe(sweep: Sweep) -> str:
    """One paragraph: experiment, axes, run counts."""
    seeds = sorted({r.config.get("seed") for r in sweep.runs if "seed" in r.config}, key=str)
    parts = [f"experiment {sweep.experiment or '?'}",
             f"{len(sweep.runs)} finished of {sweep.planned} planned runs"]
    if sweep.failed:
        parts.append(f"{len(sweep.failed)} failed")
    if sweep.missing:
        parts.append(f"{sweep.missing} not run yet")
    parts.append("axes: " + (", ".join(sweep.group_axes) or "none"))
    if "seed" in sweep.axes:
        parts.append(f"{len(seeds)} seeds")
    return "; ".join(parts) + ". Cells: mean ± half-width of the 95% t-interval across seeds; (k/n): k of n seeds had a value."


# ------------------------------------------------------------------------------------- figures
def _numeric_axis(sweep: Sweep, gs: Sequence[Group]) -> str | None:
    best, best_n = None, 1
    for a in sweep.group_axes:
        vals = {g.params[a] for g in gs if not isinstance(g.params[a], (list, dict))}
        if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) and len(vals) > best_n:
            best, best_n = a, len(vals)
    return best


def _log_ok(values: Iterable[float], ratio: float = 100.0) -> bool:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    return bool(len(v) > 1 and (v > 0).all() and v.max() / v.min() >= ratio)


def final_metric_figure(sweep: Sweep, gs: Sequence[Group], metric: str):
    """Group means ± 95% CI of one summary metric, against the main numeric axis."""
    from .figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xaxis = _numeric_axis(sweep, gs)
    stats = {id(g): t_interval(_number(flatten(r.summary).get(metric)) for r in g.runs) for g in gs}
    ys = [s[0] for s in stats.values()]
    if xaxis is not None:
        others = [a for a in sweep.group_axes if a != xaxis]
        lines: dict[tuple, list[Group]] = {}
        for g in gs:
            lines.setdefault(tuple(_hashable(g.params[a]) for a in others), []).append(g)
        for i, (k, members) in enumerate(list(lines.items())[:MAX_LINES]):
            members = sorted(members, key=lambda g: g.params[xaxis])
            x = np.array([g.params[xaxis] for g in members], dtype=float)
            y = np.array([stats[id(g)][0] for g in members])
            e = np.array([stats[id(g)][1] for g in members])
            label = ", ".join(f"{a}={_fmt_param(v)}" for a, v in zip(others, [members[0].params[a] for a in others]))
            ax.errorbar(x, y, yerr=np.where(np.isfinite(e), e, 0.0), marker="o", capsize=3, lw=1.4,
                        label=label or None)
        xs = [g.params[xaxis] for g in gs]
        if _log_ok(xs):
            ax.set_xscale("log")
        ax.set_xlabel(xaxis)
        if len(lines) > 1:
            ax.legend(fontsize=7, loc="best")
        if len(lines) > MAX_LINES:
            ax.set_title(f"first {MAX_LINES} of {len(lines)} lines", fontsize=8)
    else:
        labels = [", ".join(f"{a}={_fmt_param(g.params[a])}" for a in sweep.group_axes) or "all runs" for g in gs]
        y = np.array(ys)
        e = np.array([stats[id(g)][1] for g in gs])
        pos = np.arange(len(gs))
        ax.errorbar(y, pos, xerr=np.where(np.isfinite(e), e, 0.0), fmt="o", capsize=3)
        ax.set_yticks(pos, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(metric)
    if xaxis is not None:
        ax.set_ylabel(metric.replace("_", " "))
        if _log_ok(ys):
            ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig


def curve_metric_names(sweep: Sweep) -> list[str]:
    """Learning-curve columns of ``metrics.csv`` (numbers, not ``step``/``lam``/``a``), train loss first."""
    for r in sweep.runs:
        p = r.path / METRICS
        if p.is_file():
            rows = read_csv(p)
            if not rows:
                continue
            cols = [c for c in rows[0] if c not in ("step", "lam", "a", "config", "schedule")]
            cols = [c for c in cols if _is_float(rows[0][c])]
            return sorted(cols, key=lambda c: (c != "train_loss", cols.index(c)))
    return []


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def curve_figure(sweep: Sweep, gs: Sequence[Group], metric: str):
    """Mean learning curve of ``metric`` per group with its 95% CI band across seeds (t-distribution)."""
    from .figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    allv: list[float] = []
    drawn = 0
    for g in gs[:MAX_LINES]:
        curves = []
        for r in g.runs:
            p = r.path / METRICS
            if not p.is_file():
                continue
            rows = read_csv(p)
            if not rows or "config" in rows[0]:  # empty, or a run holding several configs: not one curve
                continue
            if metric in rows[0] and "step" in rows[0]:
                curves.append((np.array([float(x["step"]) for x in rows]), np.array([float(x[metric]) for x in rows])))
        if not curves:
            continue
        n_steps = min(len(c[0]) for c in curves)
        steps = curves[0][0][:n_steps]
        mean, half, _ = t_interval_columns(np.stack([c[1][:n_steps] for c in curves]))
        label = ", ".join(f"{a}={_fmt_param(g.params[a])}" for a in sweep.group_axes) or "all runs"
        (line,) = ax.plot(steps, mean, lw=1.4, label=label)
        if np.isfinite(half).any():
            ax.fill_between(steps, mean - half, mean + half, color=line.get_color(), alpha=0.2, lw=0)
        allv += [float(v) for v in mean if np.isfinite(v)]
        drawn += 1
    if _log_ok(allv):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(metric.replace("_", " "))
    if drawn > 1:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig if drawn else None


def figures(sweep: Sweep, gs: Sequence[Group] | None = None) -> list[tuple[str, str, Any]]:
    """``(file name, caption, matplotlib figure)`` for the report."""
    gs = list(gs) if gs is not None else groups(sweep)
    out = []

    def finite(m: str) -> list[float]:
        return [v for v in (_number(flatten(r.summary).get(m)) for r in sweep.runs) if math.isfinite(v)]

    metrics = [m for m in metric_names(sweep.runs) if finite(m)]
    varying = [m for m in metrics if len({round(v, 12) for v in finite(m)}) > 1]  # varying ones first
    chosen = (varying + [m for m in metrics if m not in varying])[:MAX_FIGURE_METRICS]
    for m in chosen:
        safe = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in m)
        out.append((f"final_{safe}.png", f"{m}: mean ± 95% CI across seeds", final_metric_figure(sweep, gs, m)))
    for m in curve_metric_names(sweep)[:MAX_CURVE_METRICS]:
        fig = curve_figure(sweep, gs, m)
        if fig is not None:
            out.append((f"curve_{m}.png", f"{m} during training: mean over seeds, band = 95% CI", fig))
    return out


# ------------------------------------------------------------------------------------- writing
@dataclass
class Report:
    out: Path
    markdown: str
    files: list[Path]
    html: Path


def write_report(root: Path | str, out: Path | str | None = None) -> Report:
    """Write runs.csv, curves.csv, summary.md, figures and index.html into ``out`` (default ``root/report``)."""
    from ..store import atomic_write, write_csv
    from .figures import png_bytes
    from .html import render_page

    sweep = collect(root)
    out = Path(out) if out is not None else Path(root) / REPORT_DIR
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
    page = render_page(title, describe(sweep), table, figs,
                       links=[p.name for p in files if p.suffix in (".csv", ".md")],
                       failed=sweep.failed)
    html_path = atomic_write(out / "index.html", page)
    files.append(html_path)
    return Report(out, md, files, html_path)

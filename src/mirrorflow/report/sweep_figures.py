"""Figures of a sweep report: final metrics against the main numeric axis, and mean learning curves.

Each group's values are summarized by the mean and the 95 % t-interval across seeds (:mod:`.stats`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..store import METRICS, read_csv
from .collect import Group, Sweep, _fmt_param, _hashable, _number, flatten, groups, metric_names
from .figures import finish, pyplot
from .stats import interval, spans_decades, t_interval_columns

MAX_FIGURE_METRICS = 6
MAX_CURVE_METRICS = 2
MAX_LINES = 10


def _numeric_axis(sweep: Sweep, gs: Sequence[Group]) -> str | None:
    best, best_n = None, 1
    for a in sweep.group_axes:
        vals = {g.params[a] for g in gs if not isinstance(g.params[a], (list, dict))}
        if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) and len(vals) > best_n:
            best, best_n = a, len(vals)
    return best


def _title(sweep: Sweep, what: str) -> str:
    n = len({r.config.get("seed") for r in sweep.runs})
    return f"{sweep.experiment or 'sweep'}: {what} ({n} seed{'s' if n != 1 else ''}, 95% CI)"


def _legend_outside(ax, n_lines: int) -> None:
    """The legend to the right of the axes, so it never covers data."""
    if n_lines > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def final_metric_figure(sweep: Sweep, gs: Sequence[Group], metric: str):
    """Group means with 95% CIs of one summary metric, against the main numeric axis (or a dot per group).

    A positive metric spanning decades is drawn on a log axis with its interval computed on the log scale
    (geometric mean, :func:`.stats.interval`), so an error bar never reaches below zero."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    xaxis = _numeric_axis(sweep, gs)
    log = spans_decades(_number(flatten(r.summary).get(metric)) for r in sweep.runs)
    stats = {id(g): interval((_number(flatten(r.summary).get(metric)) for r in g.runs), log=log) for g in gs}

    def bars(members: Sequence[Group]) -> tuple[np.ndarray, np.ndarray]:
        c = np.array([stats[id(g)][0] for g in members])
        lo = np.array([stats[id(g)][1] for g in members])
        hi = np.array([stats[id(g)][2] for g in members])
        err = np.stack([np.where(np.isfinite(lo), c - lo, 0.0), np.where(np.isfinite(hi), hi - c, 0.0)])
        return c, err

    if xaxis is not None:
        others = [a for a in sweep.group_axes if a != xaxis]
        lines: dict[tuple, list[Group]] = {}
        for g in gs:
            lines.setdefault(tuple(_hashable(g.params[a]) for a in others), []).append(g)
        for members in list(lines.values())[:MAX_LINES]:
            members = sorted(members, key=lambda g: g.params[xaxis])
            x = np.array([g.params[xaxis] for g in members], dtype=float)
            y, err = bars(members)
            label = ", ".join(f"{a}={_fmt_param(members[0].params[a])}" for a in others)
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, lw=1.4, label=label or None)
        if spans_decades(g.params[xaxis] for g in gs):
            ax.set_xscale("log")
        ax.set_xlabel(xaxis)
        ax.set_ylabel(metric.replace("_", " "))
        if log:
            ax.set_yscale("log")
        _legend_outside(ax, min(len(lines), MAX_LINES))
        shown = "" if len(lines) <= MAX_LINES else f"; first {MAX_LINES} of {len(lines)} lines"
        ax.set_title(_title(sweep, f"{metric} against {xaxis}{shown}"), fontsize=9)
    else:
        labels = [", ".join(f"{a}={_fmt_param(g.params[a])}" for a in sweep.group_axes) or "all runs" for g in gs]
        y, err = bars(gs)
        pos = np.arange(len(gs))
        ax.errorbar(y, pos, xerr=err, fmt="o", capsize=3)
        ax.set_yticks(pos, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(metric.replace("_", " "))
        if log:
            ax.set_xscale("log")
        ax.set_title(_title(sweep, metric), fontsize=9)
    ax.grid(alpha=0.3)
    return finish(fig)


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


def _turn_off_step(rows: Sequence[dict]) -> float | None:
    """The first logged step where the weight decay ``lam`` is 0 after having been positive (None if never).
    The last row is left out: the engine logs λ = 0 after the final step of every run."""
    seen = False
    for row in rows[:-1]:
        try:
            lam = float(row.get("lam", "nan"))
        except ValueError:
            return None
        if lam > 0:
            seen = True
        elif seen and lam == 0:
            return float(row["step"])
    return None


def curve_figure(sweep: Sweep, gs: Sequence[Group], metric: str):
    """Mean learning curve of ``metric`` per group with its 95% CI band across seeds (t-distribution); a
    positive metric spanning decades gets a log axis and its band on the log scale. A dot marks where
    a group's weight decay was turned off."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    series = []
    for g in gs[:MAX_LINES]:
        curves, offs = [], []
        for r in g.runs:
            p = r.path / METRICS
            if not p.is_file():
                continue
            rows = read_csv(p)
            if not rows or "config" in rows[0]:  # empty, or a run holding several configs: not one curve
                continue
            if metric in rows[0] and "step" in rows[0]:
                curves.append((np.array([float(x["step"]) for x in rows]), np.array([float(x[metric]) for x in rows])))
                offs.append(_turn_off_step(rows))
        if curves:
            n_steps = min(len(c[0]) for c in curves)
            series.append((g, curves[0][0][:n_steps], np.stack([c[1][:n_steps] for c in curves]), offs))
    if not series:
        plt.close(fig)
        return None
    log = spans_decades(float(v) for _, _, Y, _ in series for v in Y.ravel())
    for g, steps, Y, offs in series:
        if log:
            with np.errstate(all="ignore"):
                mean, half, _ = t_interval_columns(np.where(Y > 0, np.log10(np.where(Y > 0, Y, 1.0)), np.nan))
            centre, low, high = 10**mean, 10 ** (mean - half), 10 ** (mean + half)
        else:
            centre, half, _ = t_interval_columns(Y)
            low, high = centre - half, centre + half
        label = ", ".join(f"{a}={_fmt_param(g.params[a])}" for a in sweep.group_axes) or "all runs"
        (line,) = ax.plot(steps, centre, lw=1.4, label=label)
        if np.isfinite(low).any():
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, lw=0)
        off = next((o for o in offs if o is not None), None)
        if off is not None and off in steps:
            i = int(np.nonzero(steps == off)[0][0])
            ax.plot([off], [centre[i]], "o", color=line.get_color(), ms=5, mec="k", mew=0.6)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(_title(sweep, f"{metric} during training; dot = weight decay turned off"), fontsize=9)
    _legend_outside(ax, len(series))
    ax.grid(alpha=0.3)
    return finish(fig)


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
        out.append(
            (
                f"final_{safe}.png",
                f"{m}: mean and 95% CI across seeds (log scale: geometric mean)",
                final_metric_figure(sweep, gs, m),
            )
        )
    for m in curve_metric_names(sweep)[:MAX_CURVE_METRICS]:
        fig = curve_figure(sweep, gs, m)
        if fig is not None:
            out.append(
                (
                    f"curve_{m}.png",
                    f"{m} during training: mean over seeds, band = 95% CI, dot = weight decay turned off",
                    fig,
                )
            )
    return out

"""Figures of a sweep report: final metrics against the main numeric axis, and mean learning curves.

Each group's values are summarized by the mean and the 95 % t-interval across seeds (:mod:`.stats`).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from ..store import METRICS, read_csv
from .collect import Group, Sweep, _fmt_param, _hashable, _number, flatten, groups, metric_names
from .figures import pyplot
from .stats import t_interval, t_interval_columns

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


def _log_ok(values: Iterable[float], ratio: float = 100.0) -> bool:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    return bool(len(v) > 1 and (v > 0).all() and v.max() / v.min() >= ratio)


def final_metric_figure(sweep: Sweep, gs: Sequence[Group], metric: str):
    """Group means ± 95% CI of one summary metric, against the main numeric axis."""
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

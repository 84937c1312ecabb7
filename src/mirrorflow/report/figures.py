"""Figures: the one place that sets up matplotlib (Agg backend, no display) and saves PNGs.

Every figure of mirrorflow is drawn with :func:`pyplot` and written with :func:`png_bytes` /
:func:`save_png` (atomic write, one resolution for all figures). The plot builders here are shared by the
experiments, the sweep report and the ``legendre`` command.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..store import atomic_write  # noqa: E402

DPI = 110
LOG_DECADES = 14  # a log axis shows at most this many decades below the largest value (and says so)
COLORS = [
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
]


def pyplot():
    """``matplotlib.pyplot`` with the Agg backend selected."""
    return plt


def png_bytes(fig, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes (tight bounding box); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_png(fig, path: Path | str, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically; returns the path."""
    return atomic_write(path, png_bytes(fig, dpi))


def finish(fig, title: str | None = None):
    """Lay out ``fig`` (with an optional title above all panels) and release it from pyplot's registry."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig


def legend_outside(ax, n_lines: int) -> None:
    """The legend to the right of the axes (never over the data); none for a single line."""
    if n_lines > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def clip_log_axis(ax, values, decades: int = LOG_DECADES) -> bool:
    """Limit a log axis to ``decades`` below the largest positive value; True (and a note on the axes)
    when some values lie below and are clipped (e.g. a loss at the float64 floor, 1e-30)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0 or v.min() >= v.max() * 10.0**-decades:
        return False
    ax.set_ylim(bottom=v.max() * 10.0**-decades)
    ax.text(
        0.01,
        0.01,
        f"values below {v.max() * 10.0**-decades:.0e} clipped",
        transform=ax.transAxes,
        fontsize=7,
        color="0.4",
        va="bottom",
    )
    return True


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    ylabel: str,
    log: bool = False,
    xlabel: str = "step",
    title: str | None = None,
    hline: float | None = None,
    vline: float | None = None,
    size: tuple[float, float] = (7.6, 4.2),
    vline_label: str = "weight decay turned off",
    range_values: np.ndarray | None = None,
):
    """One line per series ``{label: (x, y)}``; NaNs (diverged runs) are simply not drawn. The legend sits
    outside the axes; ``vline`` marks a step (by default the turn-off); a log axis is clipped at
    :data:`LOG_DECADES` decades below the largest value of ``range_values`` (default: all values)."""
    fig, ax = plt.subplots(figsize=size)
    if len(series) > 10:  # the default cycle repeats after 10 colours
        ax.set_prop_cycle(color=plt.cm.tab20(np.linspace(0, 1, 20)))
    for label, (x, y) in series.items():
        y = np.asarray(y, dtype=float)
        if log:
            y = np.where(y > 0, y, np.nan)
        ax.plot(np.asarray(x), y, label=label, lw=1.4)
    if log:
        ax.set_yscale("log")
        if range_values is None:
            range_values = np.concatenate([np.asarray(y, dtype=float).ravel() for _, y in series.values()])
        clip_log_axis(ax, range_values)
    if hline is not None:
        ax.axhline(hline, color="k", ls=":", lw=1)
    if vline is not None:
        ax.axvline(vline, color="grey", ls="--", lw=1, label=vline_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel.replace("_", " "))
    if title:
        ax.set_title(title, fontsize=9)
    legend_outside(ax, len(series) + (vline is not None))
    ax.grid(alpha=0.3)
    return finish(fig)


def panel_plot(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    log: Mapping[str, bool] | None = None,
    xlabel: str = "step",
    panel_size: tuple[float, float] = (4.0, 3.2),
    title: str | None = None,
    vline: float | None = None,
):
    """One figure, one panel per metric ``{metric: {label: (x, y)}}`` side by side (cheaper than one PNG each);
    ``title`` (e.g. the run's key config) above the panels, ``vline`` marks the turn-off step in each."""
    log = dict(log or {})
    fig, axes = plt.subplots(1, len(panels), figsize=(panel_size[0] * len(panels), panel_size[1]), squeeze=False)
    for ax, (metric, series) in zip(axes[0], panels.items()):
        for label, (x, y) in series.items():
            y = np.asarray(y, dtype=float)
            if log.get(metric):
                y = np.where(y > 0, y, np.nan)
            ax.plot(np.asarray(x), y, label=label, lw=1.4)
        if log.get(metric):
            ax.set_yscale("log")
            clip_log_axis(ax, np.concatenate([np.asarray(y, dtype=float).ravel() for _, y in series.values()]))
        if vline is not None:
            ax.axvline(vline, color="grey", ls="--", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    return finish(fig, title)


def trace_plot(
    trace,
    labels: Sequence[str],
    metric: str,
    ylabel: str,
    log: bool = False,
    xlabel: str = "step",
    title: str | None = None,
    hline: float | None = None,
    vline: float | None = None,
):
    """One line per configuration of a batched trace (``steps``, ``metrics[name]`` (C, L), ``diverged_at``).
    A diverged configuration is labelled with its step,
    and the y-range is set by the finished ones (its last finite values can be orders of magnitude larger)."""
    div = trace.diverged_at
    series = {}
    for c, lab in enumerate(labels):
        if div[c] >= 0:
            lab = f"{lab} (diverged at {xlabel} {div[c]})"
        series[lab] = (trace.steps, trace.metrics[metric][c])
    ok = trace.metrics[metric][div < 0]
    ok = ok[np.isfinite(ok) & ((ok > 0) if log else True)]
    fig = line_plot(
        series,
        ylabel,
        log=log,
        xlabel=xlabel,
        title=title,
        hline=hline,
        vline=vline,
        range_values=ok if (div >= 0).any() and ok.size else None,
    )
    if (div >= 0).any() and ok.size:
        lo, hi = float(ok.min()), float(ok.max())
        ax = fig.axes[0]
        if log:
            ax.set_ylim(max(lo / 1.5, hi * 10.0**-LOG_DECADES), hi * 1.5)
        else:
            pad = 0.05 * (hi - lo or abs(hi) or 1.0)
            ax.set_ylim(lo - pad, hi + pad)
    return fig


@dataclass
class Curve:
    """One line of :func:`curves_figure`: x, mean over seeds, a band half-width, colour and line style."""

    label: str
    x: np.ndarray
    mean: np.ndarray
    band: np.ndarray
    color: str = "tab:blue"
    style: str = "-"


def curves_figure(
    panels: Sequence[tuple[str, Sequence[Curve], Sequence[float], Sequence[tuple[float, float, str]]]],
    ylabel: str | Sequence[str],
    xlabel: str = "step",
    log: bool = False,
):
    """One panel per ``(title, curves, vertical lines, marks)``; marks are ``(x, y, color)`` crosses
    (Fig. 4: ρ for each strength, turned off (dashed) vs constant (solid), intersections marked; the dashed
    vertical lines are the turn-off steps). ``ylabel`` is one label or one per panel; the legend of the
    last panel sits outside it."""
    n = len(panels)
    ylabels = [ylabel] * n if isinstance(ylabel, str) else list(ylabel)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n + 1.6, 3.9), squeeze=False)
    for j, (ax, (title, curves, vlines, marks)) in enumerate(zip(axes[0], panels)):
        for c in curves:
            ax.plot(c.x, c.mean, c.style, color=c.color, lw=1.5, label=c.label)
            if np.any(c.band > 0):
                ax.fill_between(c.x, c.mean - c.band, c.mean + c.band, color=c.color, alpha=0.12, lw=0)
        for v in vlines:
            ax.axvline(v, color="grey", ls="--", lw=0.8)
        for mx, my, col in marks:
            ax.plot([mx], [my], "x", color=col, ms=9, mew=2)
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabels[j])
        ax.grid(alpha=0.3)
        if curves and j == n - 1:
            legend_outside(ax, max(2, len(curves)))
    return finish(fig)


def bars_figure(
    xs: Sequence[float], series: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, title: str = ""
):
    """Final metrics (mean ± spread over seeds) against a categorical x, one panel per metric (Fig. 14 right)."""
    n = len(series)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.6), squeeze=False)
    pos = np.arange(len(xs))
    for ax, (name, (m, s)) in zip(axes[0], series.items()):
        ax.errorbar(pos, m, yerr=s, fmt="o-", capsize=3)
        ax.set_xticks(pos, [f"{x:g}" for x in xs])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    return finish(fig, title)


def legendre_figure(
    reparam, init, a_values: Sequence[float], x_range: tuple[float, float] | None = None, points: int = 400
):
    """R_a and its mirror map ∇R_a for several a (Figs. 2, 10, 12) of a one-dimensional reparameterization.

    Left panel: R_a(x) with its minimiser x*_a marked (type and positional bias). Right panel: the mirror
    map ∇R_a(x) = μ, whose range is the dual domain (range shrinking).
    """
    import torch

    if reparam.n != 1:
        raise ValueError(f"legendre_figure draws one-dimensional R_a; {reparam.name} has n={reparam.n}")
    if x_range is not None:
        lo, hi = x_range
    else:
        centres = [float(reparam.legendre(init, a).minimizer().flatten()[0]) for a in a_values]
        width = 2.0 + 2.0 * max(abs(c) for c in centres)
        lo, hi = min(centres) - width, max(centres) + width
    grid = torch.linspace(lo, hi, points, dtype=torch.float64)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for a in a_values:
        leg = reparam.legendre(init, a)
        pts = reparam.point(grid.reshape(-1, 1))
        ok = leg.in_domain(pts)
        xs = grid[ok]
        if xs.numel() == 0:
            continue
        p_ok = pts[ok]
        (line,) = ax1.plot(xs.numpy(), leg.value(p_ok).numpy(), label=f"a = {a:g}")
        try:
            xm = leg.minimizer()
            ax1.plot([float(xm.flatten()[0])], [float(leg.value(xm))], "o", color=line.get_color())
        except ValueError:
            pass
        ax2.plot(xs.numpy(), leg.grad(p_ok).reshape(-1).numpy(), color=line.get_color(), label=f"a = {a:g}")
    ax1.set_xlabel("x")
    ax1.set_ylabel("R_a(x)")
    ax1.set_title(f"{reparam.name}: R_a (dot: minimiser)")
    ax2.set_xlabel("x")
    ax2.set_ylabel("∇R_a(x) = μ")
    ax2.set_title("mirror map (its range = dual domain)")
    ax1.legend()
    ax2.axhline(0.0, color="0.7", lw=0.8)
    return finish(fig)


def color_cycle(keys: Sequence) -> Callable:
    """``key -> colour`` from :data:`COLORS`, in the order of ``keys``."""
    table = {k: COLORS[i % len(COLORS)] for i, k in enumerate(keys)}
    return table.__getitem__

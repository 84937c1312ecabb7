"""Figures with matplotlib's Agg backend (no display needed)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    ylabel: str,
    log: bool = False,
    xlabel: str = "step",
    title: str | None = None,
    hline: float | None = None,
    vline: float | None = None,
    size: tuple[float, float] = (6.4, 4.2),
):
    """One line per series ``{label: (x, y)}``; NaNs (diverged runs) are simply not drawn."""
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
    if hline is not None:
        ax.axhline(hline, color="k", ls=":", lw=1)
    if vline is not None:
        ax.axvline(vline, color="grey", ls="--", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel.replace("_", " "))
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig


def panel_plot(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    log: Mapping[str, bool] | None = None,
    xlabel: str = "step",
    panel_size: tuple[float, float] = (4.0, 3.2),
):
    """One figure, one panel per metric ``{metric: {label: (x, y)}}`` side by side (cheaper than one PNG each)."""
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
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def trace_plot(trace, labels: Sequence[str], metric: str, ylabel: str, log: bool = False,
               xlabel: str = "step", title: str | None = None, hline: float | None = None,
               vline: float | None = None):
    """One line per configuration of a batched trace (``steps``, ``metrics[name]`` (C, L), ``diverged_at``). A diverged configuration is labelled with its step,
    and the y-range is set by the finished ones (its last finite values can be orders of magnitude larger)."""
    div = trace.diverged_at
    series = {}
    for c, lab in enumerate(labels):
        if div[c] >= 0:
            lab = f"{lab} (diverged at {xlabel} {div[c]})"
        series[lab] = (trace.steps, trace.metrics[metric][c])
    fig = line_plot(series, ylabel, log=log, xlabel=xlabel, title=title, hline=hline, vline=vline)
    ok = trace.metrics[metric][div < 0]
    ok = ok[np.isfinite(ok) & ((ok > 0) if log else True)]
    if (div >= 0).any() and ok.size:
        lo, hi = float(ok.min()), float(ok.max())
        ax = fig.axes[0]
        if log:
            ax.set_ylim(lo / 1.5, hi * 1.5)
        else:
            pad = 0.05 * (hi - lo or abs(hi) or 1.0)
            ax.set_ylim(lo - pad, hi + pad)
    return fig

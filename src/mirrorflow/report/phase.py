"""Heatmaps of a phase diagram: one panel per weight-decay schedule, the turned-off-wins region outlined.

Cells are drawn with ``pcolormesh`` on cell edges half-way between the grid values (geometric means on a
log axis), so each cell is centred on its configuration. Values spanning more than a decade get a log
colour scale; NaN cells (threshold never reached, diverged) are grey.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from . import figures  # noqa: F401  (sets up matplotlib: Agg backend)

NAN_COLOUR = "#bdbdbd"
SCHEDULE_COLOURS = {"constant": "#1f77b4", "turn_off": "#d62728", "none": "#7f7f7f"}


def _edges(v: np.ndarray, log: bool) -> np.ndarray:
    v = np.log10(v) if log else np.asarray(v, dtype=float)
    mid = 0.5 * (v[1:] + v[:-1])
    e = np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
    return 10 ** e if log else e


def _axes(ax, xlabel: str, ylabel: str, log_x: bool, log_y: bool) -> None:
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel.replace("_", " "))
    ax.set_ylabel(ylabel.replace("_", " "))


def _outline(ax, xs, ys, mask, log_x: bool, log_y: bool, label: str | None = None) -> None:
    """Draw the boundary of the cells where ``mask`` holds (cell edges, black)."""
    ex, ey = _edges(xs, log_x), _edges(ys, log_y)
    segs = []
    ny, nx = mask.shape
    for j in range(ny):
        for i in range(nx):
            if not mask[j, i]:
                continue
            if i == 0 or not mask[j, i - 1]:
                segs.append(([ex[i], ex[i]], [ey[j], ey[j + 1]]))
            if i == nx - 1 or not mask[j, i + 1]:
                segs.append(([ex[i + 1], ex[i + 1]], [ey[j], ey[j + 1]]))
            if j == 0 or not mask[j - 1, i]:
                segs.append(([ex[i], ex[i + 1]], [ey[j], ey[j]]))
            if j == ny - 1 or not mask[j + 1, i]:
                segs.append(([ex[i], ex[i + 1]], [ey[j + 1], ey[j + 1]]))
    for k, (sx, sy) in enumerate(segs):
        ax.plot(sx, sy, color="k", lw=1.6, solid_capstyle="butt", label=label if k == 0 else None)


def _colour_scale(finite: np.ndarray):
    """(norm, colorbar extend): log from the 5th percentile to the maximum when that spans more than a
    decade (runs that collapsed to ~0 would otherwise take the whole scale), else linear; clipped values
    get the end colour and an arrow on the colour bar."""
    from matplotlib.colors import LogNorm, Normalize

    if not finite.size:
        return Normalize(0.0, 1.0), "neither"
    lo, hi = float(np.percentile(finite, 5)), float(finite.max())
    if lo > 0 and hi / lo > 10:
        return LogNorm(lo, hi), "min" if finite.min() < lo else "neither"
    lo = float(finite.min()) if finite.min() >= 0 and hi / max(float(finite.min()), 1e-300) <= 10 else lo
    return Normalize(lo, hi if hi > lo else lo + 1.0), "min" if finite.min() < lo else "neither"


def phase_heatmaps(xs, ys, values: Mapping[str, np.ndarray], metric: str, xlabel: str, ylabel: str,
                   log_x: bool, log_y: bool, wins: np.ndarray | None = None):
    """One panel per schedule of ``values[schedule]`` (shape (len(ys), len(xs))), one shared colour scale;
    the cells where turning weight decay off beats both other schedules outlined in every panel."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    norm, extend = _colour_scale(np.concatenate([v[np.isfinite(v)].ravel() for v in values.values()]))
    cmap = plt.get_cmap("viridis").with_extremes(bad=NAN_COLOUR)
    k = len(values)
    fig, axes = plt.subplots(1, k, figsize=(4.3 * k + 1.0, 3.9), squeeze=False, sharey=True)
    ex, ey = _edges(xs, log_x), _edges(ys, log_y)
    mesh = None
    for ax, (s, v) in zip(axes[0], values.items()):
        mesh = ax.pcolormesh(ex, ey, np.ma.masked_invalid(v), norm=norm, cmap=cmap, shading="flat")
        _axes(ax, xlabel, ylabel if ax is axes[0][0] else "", log_x, log_y)
        ax.set_title(s.replace("_", " "), fontsize=10)
        if wins is not None and wins.any():
            _outline(ax, xs, ys, wins, log_x, log_y, label="turned off beats both")
    cb = fig.colorbar(mesh, ax=list(axes[0]), fraction=0.03, pad=0.02, extend=extend)
    cb.set_label(metric.replace("_", " ") + (" (step)" if metric.startswith("time") else ""))
    handles = [Patch(color=NAN_COLOUR, label="never reached / diverged")]
    if wins is not None and wins.any():
        handles.append(Line2D([], [], color="k", lw=1.6, label="turned off beats both"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.45, 0.0), ncol=2, fontsize=8, frameon=False)
    plt.close(fig)
    return fig


def winner_map(xs, ys, values: Mapping[str, np.ndarray], metric: str, xlabel: str, ylabel: str,
               log_x: bool, log_y: bool, wins: np.ndarray | None = None):
    """Which schedule has the lowest ``metric`` in each cell (NaN counts as worst), the turned-off-wins
    region (with margin) outlined."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(values)
    stack = np.stack([np.where(np.isfinite(values[s]), values[s], np.inf) for s in names])
    best = np.argmin(stack, axis=0).astype(float)
    best[~np.isfinite(stack).any(axis=0)] = np.nan
    cmap = ListedColormap([SCHEDULE_COLOURS.get(s, "#2ca02c") for s in names]).with_extremes(bad=NAN_COLOUR)
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    ax.pcolormesh(_edges(xs, log_x), _edges(ys, log_y), np.ma.masked_invalid(best), cmap=cmap,
                  vmin=-0.5, vmax=len(names) - 0.5, shading="flat")
    _axes(ax, xlabel, ylabel, log_x, log_y)
    ax.set_title(f"lowest {metric.replace('_', ' ')}", fontsize=10)
    handles = [Patch(color=SCHEDULE_COLOURS.get(s, "#2ca02c"), label=s.replace("_", " ")) for s in names]
    if wins is not None and wins.any():
        _outline(ax, xs, ys, wins, log_x, log_y)
        handles.append(Patch(facecolor="none", edgecolor="k", label="turned off beats both"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    plt.close(fig)
    return fig

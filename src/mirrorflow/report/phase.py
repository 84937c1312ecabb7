"""Figures and the report of a phase diagram (``mirrorflow phase``; ``mirrorflow report`` on its directory).

Everything is drawn from the run directory's ``summary.json`` (axes, fixed settings, metric, schedules) and
``cells.csv`` (one row per cell and schedule), so ``mirrorflow phase`` and ``mirrorflow report`` draw the
same figures:

* ``phase_<metric>.png`` — one panel per schedule, one colour scale; the cells where turning weight decay
  off beats both other schedules (with margin) are *hatched* in every panel; on a switch-time map (``off``
  an axis) the best fixed switch and the automatic switch-off (``AutoTurnOff``) are drawn as lines;
* ``winner.png`` — which schedule has the lowest mean metric per cell (filled; a cell whose winner is not
  clear — margin below ``margin`` or 95 % intervals over seeds overlapping — is pale), next to the margin
  (runner-up − best)/runner-up on a log scale.

Cells are drawn with ``pcolormesh`` on edges half-way between the grid values (geometric means on a log
axis). Values spanning more than a decade get a log colour scale; NaN cells (threshold never reached,
diverged) are grey. Every title states the question, the experiment's fixed settings, the metric and that
lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from . import figures  # noqa: F401  (sets up matplotlib: Agg backend)

NAN_COLOUR = "#bdbdbd"
SCHEDULE_COLOURS = {
    "constant": "#1f77b4",
    "turn_off": "#d62728",
    "none": "#bcbd22",
    "auto": "#9467bd",
    "linear": "#2ca02c",
    "cosine": "#8c564b",
}
HATCH = "///"
WIN_LABEL = "turned off beats both"
LABELS = {
    "off": "switch point (fraction of the run)",
    "wd": "weight decay λ",
    "lr": "learning rate η",
    "init_scale": "init scale",
    "time_to_train_loss": "time to train loss (step)",
    "dist": "‖x − x*‖₂",
    "l1_l2": "‖x‖₁ / ‖x‖₂",
    "mse": "reconstruction MSE",
}


TEXT_COLUMNS = ("winner", "theory")
# Theorem 3.11 marks: predicted limit = trained point (match), not (mismatch), or why it cannot be checked
THEORY_MARKS = {
    "match": dict(marker="o", mfc="white", mec="black", ms=5),
    "mismatch": dict(marker="X", mfc="#d62728", mec="white", ms=7),
    "not converged": dict(marker="^", mfc="none", mec="white", ms=5),
    "unsolved": dict(marker="d", mfc="none", mec="white", ms=5),
    "λ never off": dict(marker="+", mfc="none", mec="black", ms=6),
}


def label(key: str) -> str:
    return LABELS.get(key, key.replace("_", " "))


def _edges(v: np.ndarray, log: bool) -> np.ndarray:
    v = np.log10(v) if log else np.asarray(v, dtype=float)
    mid = 0.5 * (v[1:] + v[:-1])
    e = np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
    return 10**e if log else e


def _axes(ax, xlabel: str, ylabel: str, log_x: bool, log_y: bool) -> None:
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(label(xlabel))
    ax.set_ylabel(label(ylabel) if ylabel else "")


def _hatch(ax, xs, ys, mask, log_x: bool, log_y: bool) -> None:
    """Hatch the cells where ``mask`` holds: one rectangle per run of such cells along x (no outline can close
    against the frame and make the other side read as the region; runs keep 64 × 64 maps fast to draw)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    ex, ey = _edges(xs, log_x), _edges(ys, log_y)
    rects = []
    for j, row in enumerate(np.asarray(mask, dtype=bool)):
        padded = np.concatenate([[False], row, [False]])
        starts, ends = np.nonzero(padded[1:] & ~padded[:-1])[0], np.nonzero(~padded[1:] & padded[:-1])[0]
        rects += [Rectangle((ex[a], ey[j]), ex[b] - ex[a], ey[j + 1] - ey[j]) for a, b in zip(starts, ends)]
    for colour, hatch in (("white", HATCH), ("black", HATCH.replace("/", "\\"))):  # visible on any colour
        ax.add_collection(PatchCollection(rects, facecolor="none", edgecolor=colour, linewidth=0, hatch=hatch))


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


def _theory_marks(ax, xs, ys, theory: np.ndarray | None) -> list:
    """Mark the cells checked against Theorem 3.11 (``THEORY_MARKS``); returns legend handles."""
    from matplotlib.lines import Line2D

    handles = []
    if theory is None:
        return handles
    for kind, style in THEORY_MARKS.items():
        jj, ii = np.nonzero(theory == kind)
        if len(jj):
            ax.plot(np.asarray(xs)[ii], np.asarray(ys)[jj], ls="none", **style)
            handles.append(
                Line2D(
                    [],
                    [],
                    ls="none",
                    label=f"Thm 3.11: {kind}",
                    **{**style, "mec": "black" if style["mec"] == "white" else style["mec"]},
                )
            )
    return handles


def _switch_lines(ax, lines: Mapping[str, tuple[np.ndarray, np.ndarray]] | None) -> None:
    """The best fixed switch (orange, dashed) and the automatic switch-off (black) of a switch-time map:
    ``lines[name] = (x values, y values)``."""
    for name, (lx, ly) in (lines or {}).items():
        ok = np.isfinite(lx) & np.isfinite(ly)
        style = (
            dict(color="#ff7f0e", ls="--", marker="o", ms=3)
            if name.startswith("best")
            else dict(color="black", ls="-", marker="s", ms=3)
        )
        ax.plot(lx[ok], ly[ok], lw=1.4, label=name, **style)


def _deviation_scale(finite: np.ndarray):
    """A diverging symmetric-log scale for deviations from a reference: linear within the 5th percentile of
    the non-zero |deviations| (so values a thousandth apart still get different colours), log beyond."""
    from matplotlib.colors import SymLogNorm

    mag = np.abs(finite[finite != 0])
    top = float(mag.max()) if mag.size else 1.0
    lin = max(float(np.percentile(mag, 5)) if mag.size else 1.0, top * 1e-6)
    return SymLogNorm(lin, vmin=-top, vmax=top, base=10), "neither"


def phase_heatmaps(
    xs,
    ys,
    values: Mapping[str, np.ndarray],
    metric: str,
    xlabel: str,
    ylabel: str,
    log_x: bool,
    log_y: bool,
    wins: np.ndarray | None = None,
    title: str = "",
    lines: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    lower_better: bool = True,
    reference: float | None = None,
    theory: Mapping[str, np.ndarray] | None = None,
    win_label: str = WIN_LABEL,
):
    """One panel per schedule of ``values[schedule]`` (shape (len(ys), len(xs))), one shared colour scale;
    the cells where turning weight decay off beats both other schedules hatched in its panel; ``lines``
    (switch-time maps) drawn in every panel. With a ``reference`` (a known target such as ‖W*‖_* = 1) the
    panels show the signed deviation from it on a diverging symmetric-log scale. ``theory[schedule]``: the
    cells checked against Theorem 3.11, marked (``THEORY_MARKS``)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if reference is not None:
        values = {s: v - reference for s, v in values.items()}
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values.values()])
    if reference is not None:
        norm, extend = _deviation_scale(finite)
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad=NAN_COLOUR)
    else:
        norm, extend = _colour_scale(finite)
        cmap = plt.get_cmap("viridis").with_extremes(bad=NAN_COLOUR)
    k = len(values)
    fig, axes = plt.subplots(1, k, figsize=(3.9 * k + 1.2, 4.1), squeeze=False, sharey=True)
    ex, ey = _edges(xs, log_x), _edges(ys, log_y)
    mesh = None
    marks: list = []
    for ax, (s, v) in zip(axes[0], values.items()):
        mesh = ax.pcolormesh(ex, ey, np.ma.masked_invalid(v), norm=norm, cmap=cmap, shading="flat")
        _axes(ax, xlabel, ylabel if ax is axes[0][0] else "", log_x, log_y)
        ax.set_title(s.replace("_", " "), fontsize=10)
        if wins is not None and wins.any() and s == "turn_off":  # the region belongs to turning off
            _hatch(ax, xs, ys, wins, log_x, log_y)
        if s in ("turn_off", "auto"):
            _switch_lines(ax, lines)
        for h in _theory_marks(ax, xs, ys, (theory or {}).get(s)):
            if h.get_label() not in [x.get_label() for x in marks]:
                marks.append(h)
        ax.set_xlim(ex[0], ex[-1])
        ax.set_ylim(ey[0], ey[-1])
    cb = fig.colorbar(mesh, ax=list(axes[0]), fraction=0.03, pad=0.02, extend=extend)
    if reference is not None:
        cb.set_label(f"{label(metric)} − {reference:g} (the target)")
    else:
        cb.set_label(label(metric) + (" (lower is better)" if lower_better else ""))
    handles = [Patch(color=NAN_COLOUR, label="never reached / diverged")]
    if wins is not None and wins.any():
        handles.append(Patch(facecolor="#9e9e9e", edgecolor="black", hatch="xxxx", label=win_label))
    for name in lines or {}:
        handles.append(
            Line2D(
                [],
                [],
                color="black" if not name.startswith("best") else "#ff7f0e",
                ls="-" if not name.startswith("best") else "--",
                label=name,
            )
        )
    handles += marks
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.45, 0.0),
        ncol=min(len(handles), 5),
        fontsize=8,
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize=9, y=1.02)
    plt.close(fig)
    return fig


def _winner_panel(
    ax,
    xs,
    ys,
    values: Mapping[str, np.ndarray],
    xlabel: str,
    ylabel: str,
    log_x: bool,
    log_y: bool,
    wins: np.ndarray | None,
    clear: np.ndarray | None,
) -> list:
    """The winner per cell filled with its schedule's colour (pale where not clear), the turned-off-wins
    cells hatched; returns the legend handles."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(values)
    stack = np.stack([np.where(np.isfinite(values[s]), values[s], np.inf) for s in names])
    best = np.argmin(stack, axis=0).astype(float)
    best[~np.isfinite(stack).any(axis=0)] = np.nan
    colours = [SCHEDULE_COLOURS.get(s, "#2ca02c") for s in names]
    cmap = ListedColormap(colours).with_extremes(bad=NAN_COLOUR)
    ex, ey = _edges(xs, log_x), _edges(ys, log_y)
    ax.pcolormesh(ex, ey, np.ma.masked_invalid(best), cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, shading="flat")
    if clear is not None and (~clear).any():
        pale = np.where(~clear & np.isfinite(best), 1.0, np.nan)
        ax.pcolormesh(ex, ey, np.ma.masked_invalid(pale), cmap=ListedColormap(["white"]), alpha=0.6, shading="flat")
    _axes(ax, xlabel, ylabel, log_x, log_y)
    handles = [Patch(color=c, label=s.replace("_", " ")) for s, c in zip(names, colours)]
    if clear is not None and (~clear).any():
        handles.append(Patch(facecolor="#e0e0e0", label="pale: no clear winner"))
    if wins is not None and wins.any():
        _hatch(ax, xs, ys, wins, log_x, log_y)
        handles.append(Patch(facecolor="#d62728", edgecolor="black", hatch="xxxx", label=WIN_LABEL))
    ax.set_xlim(ex[0], ex[-1])
    ax.set_ylim(ey[0], ey[-1])
    return handles


def facet_winners(panels: Sequence[tuple[str, Mapping, Sequence[Mapping]]], title: str = ""):
    """One winner panel (:func:`_winner_panel`) per facet: ``(panel title, summary, cells.csv rows)``."""
    import matplotlib.pyplot as plt

    k = len(panels)
    fig, axes = plt.subplots(1, k, figsize=(4.2 * k + 0.6, 4.3), squeeze=False, sharey=True)
    handles: list = []
    for n, (ax, (name, summary, rows)) in enumerate(zip(axes[0], panels)):
        xs, ys, grids = grids_from_rows(summary, rows)
        first = next(iter(grids.values()))
        wins = (
            first["turn_off_wins"] > 0.5 if np.isfinite(first.get("turn_off_wins", np.array([np.nan]))).all() else None
        )
        ax_, ay_ = summary["axes"]["x"], summary["axes"]["y"]
        names = summary.get("labels", {})
        for h in _winner_panel(
            ax,
            xs,
            ys,
            {s: g[summary["metric"]] for s, g in grids.items()},
            names.get(ax_["key"], ax_["key"]),
            names.get(ay_["key"], ay_["key"]) if n == 0 else "",
            ax_["log"],
            ay_["log"],
            wins,
            first["clear"] > 0.5,
        ):
            if h.get_label() not in [x.get_label() for x in handles]:
                handles.append(h)
        ax.set_title(name, fontsize=10)
    return _finish(fig, handles, 5, title)


def _finish(fig, handles, columns: int, title: str):
    """The shared legend below the panels (at most ``columns`` per row), the title above them; closed."""
    import matplotlib.pyplot as plt

    fig.legend(
        handles=handles,
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(len(handles), columns),
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize=9, y=1.02)
    fig.tight_layout()
    plt.close(fig)
    return fig


def winner_map(
    xs,
    ys,
    values: Mapping[str, np.ndarray],
    metric: str,
    xlabel: str,
    ylabel: str,
    log_x: bool,
    log_y: bool,
    wins: np.ndarray | None = None,
    margin: np.ndarray | None = None,
    clear: np.ndarray | None = None,
    title: str = "",
    lines: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
):
    """Left: which schedule has the lowest ``metric`` in each cell (NaN counts as worst), filled with its
    colour, pale where the win is not clear; the turned-off-wins cells hatched. Right (with ``margin``): the
    winner's relative margin over the runner-up."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    panels = 2 if margin is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels + 1.6, 4.3), squeeze=False)
    ax = axes[0][0]
    ex, ey = _edges(xs, log_x), _edges(ys, log_y)
    handles = _winner_panel(ax, xs, ys, values, xlabel, ylabel, log_x, log_y, wins, clear)
    ax.set_title(f"lowest {label(metric)}", fontsize=10)
    _switch_lines(ax, lines)
    ax.set_xlim(ex[0], ex[-1])
    ax.set_ylim(ey[0], ey[-1])
    if margin is not None:
        ax2 = axes[0][1]
        m = np.where(np.isfinite(margin) & (margin > 0), margin, np.nan)
        fin = m[np.isfinite(m)]
        lo = max(float(fin.min()), 1e-4) if fin.size else 1e-4
        hi = max(float(fin.max()), lo * 10) if fin.size else 1.0
        mesh = ax2.pcolormesh(
            ex,
            ey,
            np.ma.masked_invalid(np.clip(m, lo, None)),
            norm=LogNorm(lo, hi),
            cmap=plt.get_cmap("magma").with_extremes(bad=NAN_COLOUR),
            shading="flat",
        )
        _axes(ax2, xlabel, "", log_x, log_y)
        ax2.set_title("winner's margin over the runner-up", fontsize=10)
        cb = fig.colorbar(mesh, ax=ax2, fraction=0.05, pad=0.02)
        cb.set_label("(runner-up − best) / runner-up")
        _switch_lines(ax2, lines)
    for name in lines or {}:
        from matplotlib.lines import Line2D

        handles.append(
            Line2D(
                [],
                [],
                color="black" if not name.startswith("best") else "#ff7f0e",
                ls="-" if not name.startswith("best") else "--",
                label=name,
            )
        )
    return _finish(fig, handles, 4, title)


# ------------------------------------------------------------------------------ from the store
def _num(v) -> float:
    if v is None or v == "":
        return math.nan
    if v in ("True", "False", True, False):
        return 1.0 if v in ("True", True) else 0.0
    return float(v)


def grids_from_rows(summary: Mapping, rows: Sequence[Mapping]):
    """(xs, ys, {schedule: {column: (ny, nx) array}}) from ``cells.csv`` rows (strings or numbers)."""
    ax, ay = summary["axes"]["x"], summary["axes"]["y"]
    xs, ys = np.asarray(ax["values"], dtype=float), np.asarray(ay["values"], dtype=float)
    xi = {round(float(v), 12): i for i, v in enumerate(xs)}
    yi = {round(float(v), 12): j for j, v in enumerate(ys)}
    grids: dict[str, dict[str, np.ndarray]] = {}
    for r in rows:
        g = grids.setdefault(r["schedule"], {})
        i, j = xi[round(_num(r[ax["key"]]), 12)], yi[round(_num(r[ay["key"]]), 12)]
        for k, v in r.items():
            if k in ("schedule", ax["key"], ay["key"]):
                continue
            if k in TEXT_COLUMNS:
                g.setdefault(k, np.full((len(ys), len(xs)), "", dtype=object))[j, i] = v or ""
            else:
                g.setdefault(k, np.full((len(ys), len(xs)), np.nan))[j, i] = _num(v)
    return xs, ys, grids


def title_of(summary: Mapping, question: str, metric: str | None = None, lower_better: bool = True) -> str:
    """``question`` — experiment and fixed settings — metric (lower is better), seeds."""
    metric = metric or summary["metric"]
    fixed = summary.get("fixed", {})
    symbols = {"wd": "λ", "lr": "η", **summary.get("symbols", {})}
    parts = [f"{symbols.get(k, 'switch at')} {v:g}{' of the run' if k == 'off' else ''}" for k, v in fixed.items()]
    seeds = summary.get("seeds", [])
    mean = f"mean of {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}" if seeds else ""
    return (
        f"{question}\n{summary.get('title', summary.get('experiment', ''))}; {', '.join(parts)}; "
        f"{label(metric)}{', lower is better' if lower_better else ''}; {mean}"
    )


def switch_lines(summary: Mapping) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """On a switch-time map: the best fixed switch and the automatic switch-off per value of the other axis,
    as (x, y) arrays in the figure's coordinates."""
    versus = summary.get("best_switch")
    if not versus:
        return None
    along_x = summary["axes"]["x"]["key"] == "off"
    other = summary["axes"]["y" if along_x else "x"]["key"]
    v = np.array([r[other] for r in versus], dtype=float)
    best = np.array([math.nan if r["best_off"] is None else r["best_off"] for r in versus], dtype=float)
    pairs = {"best fixed switch": best}
    if "auto_off" in versus[0]:
        pairs["automatic switch-off"] = np.array(
            [math.nan if r["auto_off"] is None else r["auto_off"] for r in versus], dtype=float
        )
    return {k: (p, v) if along_x else (v, p) for k, p in pairs.items()}


def draw(out: Path | str, summary: Mapping, rows: Sequence[Mapping]) -> list[tuple[str, str]]:
    """Write ``phase_<metric>.png`` per metric and ``winner.png`` into ``out``; returns (file, caption)."""
    from .figures import save_png

    out = Path(out)
    xs, ys, grids = grids_from_rows(summary, rows)
    ax, ay = summary["axes"]["x"], summary["axes"]["y"]
    metric = summary["metric"]
    first = next(iter(grids.values()))
    wins = first["turn_off_wins"] > 0.5 if np.isfinite(first.get("turn_off_wins", np.array([np.nan]))).all() else None
    lines = switch_lines(summary)
    names = summary.get("labels", {})  # the experiment's own names of the wd / lr axes (sparse coding: α)
    made = []
    refs = summary.get("references", {})
    lower = set(summary.get("lower_better", [metric]))
    for m in summary["metrics"]:
        q = f"{label(m)} per schedule" + (" — when to switch off?" if lines else "")
        if m in refs:
            q = f"{label(m)}: how far from the target {refs[m]:g}, per schedule?"
        fig = phase_heatmaps(
            xs,
            ys,
            {s: g[m] for s, g in grids.items()},
            m,
            names.get(ax["key"], ax["key"]),
            names.get(ay["key"], ay["key"]),
            ax["log"],
            ay["log"],
            wins,
            title_of(summary, q, m, m in lower),
            lines,
            m in lower,
            refs.get(m),
            {s: g["theory"] for s, g in grids.items() if "theory" in g},
            WIN_LABEL if m == metric else f"{WIN_LABEL} on {label(metric)}",
        )
        made.append((save_png(fig, out / f"phase_{m}.png").name, f"{label(m)} per schedule"))
    if len(grids) > 1:
        fig = winner_map(
            xs,
            ys,
            {s: g[metric] for s, g in grids.items()},
            metric,
            names.get(ax["key"], ax["key"]),
            names.get(ay["key"], ay["key"]),
            ax["log"],
            ay["log"],
            wins,
            first["margin"],
            first["clear"] > 0.5,
            title_of(summary, "Which schedule wins, and by how much?"),
            lines,
        )
        made.append((save_png(fig, out / "winner.png").name, "winner per cell and its margin"))
    return made


def is_phase_dir(root: Path | str) -> bool:
    """A finished ``mirrorflow phase`` directory: ``cells.csv`` and a ``summary.json`` with ``axes``, or a
    faceted one (``summary.json`` with ``facet``)."""
    from ..store import SUMMARY, read_summary

    root = Path(root)
    if not (root / SUMMARY).is_file():
        return False
    summary = read_summary(root / SUMMARY)
    return "facet" in summary or ((root / "cells.csv").is_file() and "axes" in summary)


def summary_markdown(summary: Mapping) -> str:
    """The phase report's text: the question, the win fraction and box, winners, the automatic switch-off."""
    ax, ay = summary["axes"]["x"], summary["axes"]["y"]
    lines = [
        f"# Phase diagram: {summary.get('title', summary['experiment'])}",
        "",
        f"{len(ax['values'])} × {len(ay['values'])} cells ({ax['key']} × {ay['key']}) per schedule "
        f"({', '.join(summary['schedules'])}), seeds {', '.join(map(str, summary.get('seeds', [])))}; "
        f"metric {summary['metric']} (lower is better), margin {summary.get('margin', 0):g}; "
        f"fixed: {', '.join(f'{k}={v:g}' for k, v in summary.get('fixed', {}).items())}.",
        "",
    ]
    if "turn_off_wins_fraction" in summary:
        lines.append(
            f"**Turned off beats both** constant and no weight decay in "
            f"{100 * summary['turn_off_wins_fraction']:.1f} % of the cells."
        )
        box = summary.get("turn_off_wins_box")
        if box:
            lines.append("Winning box: " + ", ".join(f"{k} {lo:g} … {hi:g}" for k, (lo, hi) in box.items()) + ".")
        lines.append("")
    wf = summary.get("winner_fraction", {})
    if wf:
        lines += ["| schedule | cells won | best " + summary["metric"] + " |", "|---|---|---|"]
        best = {s: summary.get(f"best_{summary['metric']}_{s}") for s in wf}
        lines += [
            f"| {s} | {100 * f:.1f} % | {'–' if best[s] is None else format(best[s], '.3g')} |" for s, f in wf.items()
        ]
        lines += [
            "",
            f"Clear winner (margin ≥ {summary.get('margin', 0):g}, 95 % intervals apart) in "
            f"{100 * summary.get('clear_fraction', 0):.1f} % of the cells.",
            "",
        ]
    versus = summary.get("best_switch")
    if versus:
        other = next(iter(versus[0]))
        m = summary["metric"]
        auto = "auto_off" in versus[0]
        lines += [
            (
                "Automatic switch-off (" + str(summary.get("auto")) + ") against the best fixed switch"
                if auto
                else "The best fixed switch"
            )
            + " (switch points as fractions of the run; near the "
            "best: the switch points within 2× of the best "
            + m
            + ("; the automatic one is the mean over the seeds where it fired" if auto else "")
            + "):",
            "",
            f"| {other} | best fixed switch | its {m} | near the best |"
            + (f" automatic switch (fired) | its {m} |" if auto else ""),
            "|---|---|---|---|" + ("---|---|" if auto else ""),
        ]
        fmt = lambda v: "never" if v is None else f"{v:.3g}"  # noqa: E731
        band = lambda r: "–" if r["near_best"] is None else f"{r['near_best'][0]:.3g} … {r['near_best'][1]:.3g}"  # noqa: E731
        lines += [
            f"| {r[other]:.3g} | {fmt(r['best_off'])} | {fmt(r[f'best_{m}'])} | {band(r)} |"
            + (f" {fmt(r['auto_off'])} ({r['auto_fired']}) | {fmt(r[f'auto_{m}'])} |" if auto else "")
            for r in versus
        ]
        lines.append("")
    resumed = summary.get("groups_resumed") or 0
    lines.append(
        f"{summary.get('rows')} runs in {summary.get('groups')} batched programs, "
        f"{summary.get('seconds_total')} s wall on {summary.get('device')}"
        + (f" for the {summary.get('groups') - resumed} not resumed from groups/." if resumed else ".")
    )
    return "\n".join(lines) + "\n"


def write_report(root: Path | str, out: Path | str | None = None):
    """``mirrorflow report`` on a phase directory: the heatmaps, the winner map, ``summary.md`` (win
    fraction, winning box, automatic switch-off) and ``index.html`` into ``out`` (default ``root/report``)."""
    from ..store import SUMMARY, atomic_write, read_csv, read_summary
    from .aggregate import Report
    from .html import render_page

    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    summary = read_summary(root / SUMMARY)
    if "facet" in summary:
        return _facets_report(root, out, summary)
    made = draw(out, summary, read_csv(root / "cells.csv"))
    md = summary_markdown(summary)
    files = [atomic_write(out / "summary.md", md)] + [out / name for name, _ in made]
    table = _Table(
        ["schedule", "cells won", f"best {summary['metric']}"],
        [
            [s, f"{100 * f:.1f} %", str(summary.get(f"best_{summary['metric']}_{s}"))]
            for s, f in summary.get("winner_fraction", {}).items()
        ],
    )
    page = render_page(
        f"Phase diagram: {summary.get('title', '')}",
        md.split("\n", 2)[2].strip(),
        table,
        [(cap, (out / name).read_bytes()) for name, cap in made],
        links=[("cells.csv", (root / "cells.csv").read_bytes()), ("summary.md", md.encode())],
    )
    html_path = atomic_write(out / "index.html", page)
    return Report(out, md, files + [html_path], html_path)


def _facets_report(root: Path, out: Path, summary: Mapping):
    """A faceted phase: each facet's report in ``out/<KEY=value>/``, the facets' winner maps side by side,
    and ``summary.md`` with one row per facet."""
    from ..store import atomic_write, read_csv, read_summary
    from .aggregate import Report
    from .figures import save_png
    from .html import render_page

    subs = {name: write_report(root / name, out / name) for name in summary["facets"]}
    panels = [(name, read_summary(root / name / "summary.json"), read_csv(root / name / "cells.csv")) for name in subs]
    first = panels[0][1]
    unfaceted = {**first, "fixed": {k: v for k, v in first.get("fixed", {}).items() if k != summary["facet"]}}
    fig = facet_winners(panels, title_of(unfaceted, f"Which schedule wins, as {summary['facet']} changes?"))
    png = save_png(fig, out / "winner_facets.png")
    m = summary["metric"]
    rows = [
        [
            name,
            f"{100 * f.get('turn_off_wins_fraction', float('nan')):.1f} %",
            ", ".join(f"{s} {100 * v:.0f} %" for s, v in f.get("winner_fraction", {}).items()),
        ]
        for name, f in summary["facets"].items()
    ]
    md = (
        f"# Phase diagram by {summary['facet']}: {panels[0][1].get('title', '')}\n\n"
        f"One phase diagram per value of {summary['facet']} (metric {m}, lower is better); each has its own "
        f"report in its folder.\n\n| facet | turned off beats both | cells won |\n|---|---|---|\n"
        + "".join(f"| {a} | {b} | {c} |\n" for a, b, c in rows)
    )
    files = [atomic_write(out / "summary.md", md), png]
    page = render_page(
        f"Phase diagram by {summary['facet']}",
        md.split("\n", 2)[2].strip(),
        _Table(["facet", "turned off beats both", "cells won"], rows),
        [(f"winner per cell, by {summary['facet']}", png.read_bytes())]
        + [
            (f"{name}: {cap}", (out / name / f).read_bytes())
            for name, r in subs.items()
            for f, cap in (("winner.png", "winner and margin"),)
            if (out / name / f).is_file()
        ],
        links=[("summary.md", md.encode())],
    )
    html_path = atomic_write(out / "index.html", page)
    return Report(out, md, files + [html_path] + [f for r in subs.values() for f in r.files], html_path)


class _Table:
    """What ``render_page`` reads of a table: ``header`` and ``rows``."""

    def __init__(self, header, rows):
        self.header, self.rows, self.more_metrics = header, rows, 0

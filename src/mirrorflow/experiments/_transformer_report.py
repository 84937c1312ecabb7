"""Seeds → mean ± spread, run-group files, and the Fig. 4-style plots of the transformer experiments.

"± spread" everywhere is the sample standard deviation over seeds (ddof = 1; a single seed shows its value).
Curves over seeds are averaged step by step (all seeds share the evaluation grid); a diverged seed is
left out of the average and counted in the tables.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..store import RunDir, read_csv
from ._transformer_train import ArmResult

LINESTYLES = {"constant": "-", "auto": ":"}
COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
          "tab:olive", "tab:cyan"]


# ------------------------------------------------------------------------------------------ numbers
def finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    v = finite(values)
    if not v:
        return math.nan, math.nan, 0
    m = float(np.mean(v))
    s = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return m, s, len(v)


def pm(values: Sequence[float], spec: str = ".3f", scale: float = 1.0) -> str:
    """``"mean ± std"`` over seeds (``"–"`` when nothing finite; one seed: its value)."""
    m, s, n = mean_std([v * scale for v in finite(values)])
    if n == 0:
        return "–"
    if n == 1:
        return format(m, spec)
    return f"{format(m, spec)} ± {format(s, spec.lstrip('+'))}"


def column(arm: ArmResult, key: str) -> np.ndarray:
    return np.asarray([float(r.get(key, math.nan)) for r in arm.rows], dtype=float)


def final(arm: ArmResult, key: str) -> float:
    """Value of ``key`` in the arm's last row (NaN for a diverged arm)."""
    if arm.diverged_at is not None or not arm.rows:
        return math.nan
    return float(arm.rows[-1].get(key, math.nan))


def at_step(arm: ArmResult, key: str, step: float) -> float:
    for r in arm.rows:
        if float(r["step"]) == float(step):
            return float(r.get(key, math.nan))
    return math.nan


def curve(arms: Sequence[ArmResult], key: str, x: str = "step") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step-wise mean and std of ``key`` over seeds (arms of the same name), on the longest grid."""
    ok = [a for a in arms if a.rows]
    if not ok:
        return np.array([]), np.array([]), np.array([])
    n = max(len(a.rows) for a in ok)
    xs = column(max(ok, key=lambda a: len(a.rows)), x)
    Y = np.full((len(ok), n), np.nan)
    for i, a in enumerate(ok):
        c = column(a, key)
        Y[i, : len(c)] = c
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(Y, axis=0)
            std = np.nanstd(Y, axis=0, ddof=1) if len(ok) > 1 else np.zeros(n)
    return xs, mean, np.nan_to_num(std)


# --------------------------------------------------------------------------------- run-group files
def save_group(path: Path | str, config: Mapping, arms: Sequence[ArmResult], seconds: float) -> None:
    """One (weight decay, seed) group: config.yaml, metrics.csv (all arms, column ``arm``), summary.json last."""
    rd = RunDir(path)
    rd.write_config(dict(config))
    rows, cols = [], ["arm", "value"]
    for a in arms:
        for r in a.rows:
            rows.append({"arm": a.name, "value": a.value, **r})
            for k in r:
                if k not in cols:
                    cols.append(k)
    rd.write_metrics(rows, cols)
    rd.finish({
        "arms": [{"name": a.name, "value": a.value, "off_at": a.off_at, "diverged_at": a.diverged_at,
                  "status": "diverged" if a.diverged_at is not None else "finished", **a.info} for a in arms],
        "seconds": round(seconds, 3),
    })


def load_group(path: Path | str) -> list[ArmResult]:
    """The arms of a finished group written by :func:`save_group`."""
    rd = RunDir(path)
    summary = rd.summary()
    rows = read_csv(rd.file("metrics.csv"))
    by_arm: dict[str, list[dict]] = {}
    for r in rows:
        name = r.pop("arm")
        r.pop("value", None)
        by_arm.setdefault(name, []).append({k: _num(v) for k, v in r.items()})
    out = []
    for a in summary["arms"]:
        info = {k: v for k, v in a.items() if k not in ("name", "value", "off_at", "diverged_at", "status")}
        out.append(ArmResult(a["name"], float(a["value"]), by_arm.get(a["name"], []), a["off_at"], a["diverged_at"], info))
    return out


def _num(v: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


VOLATILE = ("workers", "threads", "device")  # do not change the numbers: a finished group is reused across them


def _same_config(rd: RunDir, config: Mapping) -> bool:
    import yaml

    try:
        old = yaml.safe_load(rd.file("config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    new = yaml.safe_load(yaml.safe_dump(dict(config), sort_keys=False))
    strip = lambda d: {k: v for k, v in (d or {}).items() if k not in VOLATILE}  # noqa: E731
    return strip(old) == strip(new)


def run_group(path: Path | str, config: Mapping, compute: Callable[[], list[ArmResult]], is_main: bool = True,
              progress: Callable[[int], None] | None = None, steps: int = 0) -> list[ArmResult]:
    """Load the finished group in ``path`` when its config.yaml equals ``config`` (up to :data:`VOLATILE`
    keys); otherwise compute it (and, on rank 0, write it)."""
    rd = RunDir(path)
    if rd.done and _same_config(rd, config):
        if progress is not None and steps:
            progress(steps)
        return load_group(path)
    t0 = time.perf_counter()
    arms = compute()
    if is_main:
        save_group(path, config, arms, time.perf_counter() - t0)
    return arms


def group_done(path: Path | str, config: Mapping) -> bool:
    rd = RunDir(path)
    return rd.done and _same_config(rd, config)


# ------------------------------------------------------------------------------------------ figures
@dataclass
class Curve:
    label: str
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    color: str = "tab:blue"
    style: str = "-"


def curves_figure(panels: Sequence[tuple[str, Sequence[Curve], Sequence[float], Sequence[tuple[float, float, str]]]],
                  ylabel: str, xlabel: str = "step", log: bool = False):
    """One panel per ``(title, curves, vertical lines, marks)``; marks are ``(x, y, color)`` crosses
    (Fig. 4: ρ for each strength, turned off (dashed) vs constant (solid), intersections marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 3.9), squeeze=False)
    for ax, (title, curves, vlines, marks) in zip(axes[0], panels):
        for c in curves:
            ax.plot(c.x, c.mean, c.style, color=c.color, lw=1.5, label=c.label)
            if np.any(c.std > 0):
                ax.fill_between(c.x, c.mean - c.std, c.mean + c.std, color=c.color, alpha=0.12, lw=0)
        for v in vlines:
            ax.axvline(v, color="grey", ls="--", lw=0.8)
        for (mx, my, col) in marks:
            ax.plot([mx], [my], "x", color=col, ms=9, mew=2)
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    plt.close(fig)
    return fig


def bars_figure(xs: Sequence[float], series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                xlabel: str, title: str = ""):
    """Fig. 14 right: final metrics (mean ± std over seeds) against the weight decay, one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.6), squeeze=False)
    pos = np.arange(len(xs))
    for ax, (name, (m, s)) in zip(axes[0], series.items()):
        ax.errorbar(pos, m, yerr=s, fmt="o-", capsize=3)
        ax.set_xticks(pos, [f"{x:g}" for x in xs])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig


def rho_panel(title: str, by_arm: Mapping[str, Sequence[ArmResult]], key: str, x: str, color_of: Callable[[str], str],
              label_of: Callable[[str], str], ref: str = "constant", step_to_x: Callable[[float], float] = float):
    """Curves of ``key`` for each arm plus the intersections of each turned-off arm with ``ref``."""
    from ._transformer_train import intersection

    curves, vlines, marks = [], [], []
    _, ref_mean, _ = curve(by_arm.get(ref, []), key, x)
    for name, arms in by_arm.items():
        xs, mean, std = curve(arms, key, x)
        style = LINESTYLES.get(name, "--")
        curves.append(Curve(label_of(name), xs, mean, std, color_of(name), style))
        if name == ref or not arms:
            continue
        off = arms[0].off_at
        if off is not None:
            vlines.append(step_to_x(off))
            steps, _, _ = curve(arms, key, "step")
            cross = intersection(steps, ref_mean, mean, off) if len(mean) == len(ref_mean) else None
            if cross is not None:
                i = list(steps).index(cross)
                marks.append((xs[i], mean[i], color_of(name)))
    return title, curves, vlines, marks

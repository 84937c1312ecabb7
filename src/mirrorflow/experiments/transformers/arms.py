"""Reading arms across seeds: final values, curves averaged step by step, and ρ-curve crossings (Fig. 4).

All seeds of an arm share the evaluation grid, so curves over seeds are averaged step by step; a diverged
seed is left out of the average and counted in the tables. The band of a curve is the sample standard
deviation over seeds (ddof = 1).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np

from ...report.figures import Curve
from .train import ArmResult, intersection

LINESTYLES = {"constant": "-", "auto": ":"}


def by_arm(groups: Sequence[Sequence[ArmResult]]) -> dict[str, list[ArmResult]]:
    """Arms of several groups (one per seed) collected by arm name, seeds in order."""
    out: dict[str, list[ArmResult]] = {}
    for arms in groups:
        for a in arms:
            out.setdefault(a.name, []).append(a)
    return out


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
    """Step-wise mean and standard deviation of ``key`` over seeds (arms of one name), on the longest grid."""
    ok = [a for a in arms if a.rows]
    if not ok:
        return np.array([]), np.array([]), np.array([])
    n = max(len(a.rows) for a in ok)
    xs = column(max(ok, key=lambda a: len(a.rows)), x)
    Y = np.full((len(ok), n), np.nan)
    for i, a in enumerate(ok):
        c = column(a, key)
        Y[i, : len(c)] = c
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(Y, axis=0)
        std = np.nanstd(Y, axis=0, ddof=1) if len(ok) > 1 else np.zeros(n)
    return xs, mean, np.nan_to_num(std)


def rho_panel(title: str, arms_by_name: Mapping[str, Sequence[ArmResult]], key: str, x: str,
              color_of: Callable[[str], str], label_of: Callable[[str], str], ref: str = "constant",
              step_to_x: Callable[[float], float] = float):
    """A :func:`~mirrorflow.report.figures.curves_figure` panel: ``key`` for each arm, the turn-off steps,
    and where each turned-off arm's seed-mean curve crosses the ``ref`` arm's (× marks)."""
    curves, vlines, marks = [], [], []
    _, ref_mean, _ = curve(arms_by_name.get(ref, []), key, x)
    for name, arms in arms_by_name.items():
        xs, mean, std = curve(arms, key, x)
        curves.append(Curve(label_of(name), xs, mean, std, color_of(name), LINESTYLES.get(name, "--")))
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

"""Reading arms across seeds: final values, paired differences, curves averaged step by step, and ρ-curve
crossings against every constant-λ curve (Fig. 4).

All seeds of an arm share the evaluation grid, so curves over seeds are averaged step by step; a diverged
seed is left out of the average and counted in the tables. The band of a curve is the sample standard
deviation over seeds (ddof = 1).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ...report.figures import Curve
from ...report.stats import PairedDifference, paired_difference
from ...report.tables import markdown_table
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


def rho_panel(
    title: str,
    arms_by_name: Mapping[str, Sequence[ArmResult]],
    key: str,
    x: str,
    color_of: Callable[[str], str],
    label_of: Callable[[str], str],
    ref: str = "constant",
    step_to_x: Callable[[float], float] = float,
):
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


def paired_final(
    ref: Sequence[ArmResult], other: Sequence[ArmResult], key: str, effect: float | None = None
) -> PairedDifference:
    """Paired difference ``other − ref`` of the final ``key`` over seeds (the i-th arm of each list is the
    same seed; a turned-off arm branches from its seed's constant run). Diverged seeds are left out."""
    n = min(len(ref), len(other))
    return paired_difference([final(a, key) for a in ref[:n]], [final(b, key) for b in other[:n]], effect)


def rho_after_switch(arms: Sequence[ArmResult], key: str = "spectral/rho") -> dict:
    """How the seed-mean ρ of a turned-off arm moves after its switch: ρ at the switch, at the end, its
    minimum and maximum after the switch and the step of the minimum."""
    xs, mean, _ = curve(arms, key)
    off = arms[0].off_at if arms else None
    if off is None or not len(xs):
        return {}
    after = [(x, m) for x, m in zip(xs, mean) if x >= off and math.isfinite(m)]
    if not after:
        return {}
    at = after[0][1]
    lo = min(after, key=lambda t: t[1])
    return {"at_switch": at, "end": after[-1][1], "min": lo[1], "min_step": lo[0], "max": max(m for _, m in after)}


def crossings(
    turned_off: Sequence[ArmResult], constants: Mapping[float, Sequence[ArmResult]], key: str = "spectral/rho"
) -> dict[float, float | None]:
    """For each constant-λ curve (seed means): the first step after the switch where the turned-off arm's
    seed-mean ρ crosses it (:func:`.train.intersection`), None when it does not within the run or when
    the curves are on different evaluation grids."""
    xs, mean, _ = curve(turned_off, key)
    off = turned_off[0].off_at if turned_off else None
    out: dict[float, float | None] = {}
    for lam, arms in constants.items():
        xc, mc, _ = curve(arms, key)
        ok = off is not None and len(xc) == len(xs) and np.array_equal(xc, xs)
        out[lam] = intersection(xs, mc, mean, off) if ok else None
    return out


def crossings_markdown(
    turned_off: Sequence[tuple[str, Sequence[ArmResult]]],
    constants: Mapping[float, Sequence[ArmResult]],
    unit: str = "step",
    per_unit: float = 1.0,
) -> str:
    """Table: for each turned-off arm (label, seeds), ρ at the switch and at the end, its minimum (where) and
    maximum after the switch, and where it first crosses the constant-λ curve of each λ (seed means; in
    ``unit`` = steps / ``per_unit``). Empty when no arm was switched off."""
    lams = sorted(constants)
    rows = []
    for label, arms in turned_off:
        mv = rho_after_switch(arms)
        if not mv:
            continue
        cr = crossings(arms, constants)
        rows.append(
            [
                label,
                f"{mv['at_switch']:.3f}",
                f"{mv['end']:.3f}",
                f"{mv['min']:.3f} ({mv['min_step'] / per_unit:g})",
                f"{mv['max']:.3f}",
                *["no crossing" if cr[v] is None else f"{cr[v] / per_unit:g}" for v in lams],
            ]
        )
    if not rows:
        return ""
    return (
        f"ρ after the switch (seed means; {unit}s): ρ at the switch and at the end, its minimum ({unit}) and "
        f"maximum after the switch, and the {unit} where it first crosses the constant-λ curve of each λ "
        f"(Fig. 4's intersections).\n\n"
        + markdown_table(
            ["arm", "ρ at switch", "ρ at end", f"min ρ ({unit})", "max ρ", *[f"crosses λ={v:g}" for v in lams]], rows
        )
    )

"""From the rows' results to the cells of the diagram: means and 95 % intervals over seeds, the winner of each
cell and its margin, where turning weight decay off beats both, and the best switch point."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .rows import theory_cells
from .spec import AUTO, SCHEDULES, PhaseSpec


def assemble(spec: PhaseSpec, groups, results, index) -> dict[str, dict[str, np.ndarray]]:
    """``{schedule: {metric: (ny, nx) mean over seeds, metric + "_half": 95 % t-interval half-width,
    "diverged": seeds that diverged, "auto_off": the automatic switch point (a fraction of the run, mean
    over the seeds where it fired), "auto_fired": in how many seeds it fired}}``."""
    from ...report.stats import t_interval_columns

    ny, nx, S = spec.y.count, spec.x.count, len(spec.seeds)
    names = list(dict.fromkeys(spec.metrics + (spec.metric,)))
    picked = theory_cells(spec)
    grids = {}
    for s in spec.schedules:
        raw = {m: np.full((S, ny, nx), np.nan) for m in names + ["auto_off"]}
        div = np.zeros((ny, nx), dtype=int)
        theory = np.full((ny, nx), "", dtype=object)
        gap = np.full((ny, nx), np.nan)
        for k, seed in enumerate(spec.seeds):
            for j in range(ny):
                for i in range(nx):
                    gi, r = index[(s, seed, j, i)]
                    row = results[gi][r]
                    for m in names:
                        raw[m][k, j, i] = np.nan if row[m] is None else row[m]  # JSON stores NaN as null
                    if row.get("auto_off") is not None:
                        raw["auto_off"][k, j, i] = row["auto_off"] / spec.program.horizon(groups[gi].cfg)
                    div[j, i] += row["status"] == "diverged"
                    if k == 0 and (j, i) in picked and row.get("theory"):  # one row may fill many cells
                        theory[j, i] = row["theory"]
                        gap[j, i] = np.nan if row.get("theory_gap") is None else row["theory_gap"]
        grid = {"diverged": div, "theory": theory, "theory_gap": gap}
        for m in names:
            mean, half, _ = t_interval_columns(raw[m].reshape(S, -1))
            grid[m], grid[m + "_half"] = mean.reshape(ny, nx), half.reshape(ny, nx)
        if s == AUTO:
            fired = np.isfinite(raw["auto_off"])
            grid["auto_off"] = np.where(
                fired.any(0), np.where(fired, raw["auto_off"], 0).sum(0) / np.maximum(fired.sum(0), 1), np.nan
            )  # mean over the seeds where it fired
            grid["auto_fired"] = np.isfinite(raw["auto_off"]).sum(axis=0)
        grids[s] = grid
    return grids


def turn_off_wins(grids: Mapping[str, Mapping[str, np.ndarray]], metric: str, margin: float) -> np.ndarray | None:
    """Cells where turn_off < (1 − margin)·min(constant, none) on ``metric`` (NaN — never reached or
    diverged — counts as worst). None unless all three schedules were run."""
    if not all(s in grids for s in SCHEDULES):
        return None

    def worst_nan(s):
        v = grids[s][metric]
        return np.where(np.isfinite(v), v, np.inf)

    t, c, n = worst_nan("turn_off"), worst_nan("constant"), worst_nan("none")
    return np.isfinite(t) & (t < (1.0 - margin) * np.minimum(c, n))


def winners(grids: Mapping[str, Mapping[str, np.ndarray]], metric: str, margin: float):
    """Per cell: the index (into ``grids``) of the schedule with the lowest mean ``metric`` (−1 where none is
    finite), its relative margin (runner-up − best)/|runner-up| (inf without a finite runner-up), and whether
    it is clear: margin ≥ ``margin`` and, with seeds, its 95 % interval below the runner-up's."""
    names = list(grids)
    mean = np.stack([np.where(np.isfinite(grids[s][metric]), grids[s][metric], np.inf) for s in names])
    half = np.stack([np.nan_to_num(grids[s][metric + "_half"], nan=0.0) for s in names])
    order = np.argsort(mean, axis=0, kind="stable")
    best = np.take_along_axis(mean, order[:1], 0)[0]
    if len(names) > 1:
        second = np.take_along_axis(mean, order[1:2], 0)[0]
    else:
        second = np.full_like(best, np.inf)
    with np.errstate(all="ignore"):
        rel = np.where(np.isfinite(second), (second - best) / np.abs(second), np.inf)
    hb = np.take_along_axis(half, order[:1], 0)[0]
    hs = np.take_along_axis(half, order[1:2], 0)[0] if len(names) > 1 else np.zeros_like(hb)
    clear = (rel >= margin) & (best + hb < second - hs)
    win = np.where(np.isfinite(best), order[0], -1)
    return win, np.where(np.isfinite(best), rel, np.nan), clear & np.isfinite(best)


NEAR_BEST = 2.0  # a fixed switch is "near the best" when its metric is within this factor of the best one


def best_switch(spec: PhaseSpec, grids) -> list[dict] | None:
    """On a switch-time map (``off`` an axis, ``turn_off`` run): per value of the other axis, the best fixed
    switch (fraction, metric), how flat the optimum is (``near_best``: the range of switch points whose
    metric is within ``NEAR_BEST``× of the best), and with ``auto`` where the automatic switch-off landed
    (fraction, seeds where it fired, metric). None otherwise."""
    if "off" not in (spec.x.key, spec.y.key) or "turn_off" not in grids:
        return None
    along_x = spec.x.key == "off"
    offs, other = (spec.x, spec.y) if along_x else (spec.y, spec.x)
    orient = (lambda a: a) if along_x else (lambda a: a.T)  # noqa: E731
    fixed = orient(grids["turn_off"][spec.metric])
    out = []
    for j, v in enumerate(other.values):
        row = np.where(np.isfinite(fixed[j]), fixed[j], np.inf)
        b = int(np.argmin(row))
        ok = np.isfinite(row[b])
        near = offs.values[row <= NEAR_BEST * row[b]] if ok else []
        r = {
            other.key: float(v),
            "best_off": float(offs.values[b]) if ok else None,
            f"best_{spec.metric}": float(row[b]) if ok else None,
            "near_best": [float(min(near)), float(max(near))] if ok else None,
        }
        if AUTO in grids:
            frac, fired = orient(grids[AUTO]["auto_off"])[j, 0], orient(grids[AUTO]["auto_fired"])[j, 0]
            val = orient(grids[AUTO][spec.metric])[j, 0]
            r.update(
                {
                    "auto_off": float(frac) if np.isfinite(frac) else None,
                    "auto_fired": f"{int(fired)}/{len(spec.seeds)}",
                    f"auto_{spec.metric}": float(val) if np.isfinite(val) else None,
                }
            )
        out.append(r)
    return out

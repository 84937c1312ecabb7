"""Figs. 2, 10, 12: R_a of a one-dimensional reparameterization for several a, and its three effects.

Behind ``mirrorflow legendre REPARAM --a -0.5,-1,-2 [--out R.png]``: a table of the minimiser x*_a
(positional bias), the curvature ratio τ (type of bias) and the width of the dual domain (range) per a
(:mod:`mirrorflow.geometry.effects`), and the two-panel figure of R_a and its mirror map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError


def parse_a(text: str) -> list[float]:
    """``"-0.5,-1"`` → ``[-0.5, -1.0]`` (the ``--a`` option)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--a: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise ConfigError("--a: give at least one value")
    bad = [v for v in values if not (v <= 0)]  # a = −∫λ ≤ 0 (weight decay is non-negative); also rejects nan
    if bad:
        raise ConfigError(f"--a: a = -∫λ must be ≤ 0 (λ ≥ 0), got {bad[0]:g}")
    return values


def effects_table(name: str, a: str, scale: float, x0: float, k: int, data_scale: float):
    """(markdown table of the three effects, reparameterization, w_init, a values)."""
    from .. import geometry as G
    from ..report.tables import markdown_table

    key = name.strip().lower()
    if key not in G.REPARAMETERIZATIONS:
        raise ConfigError(f"unknown reparameterization {name!r} (known: {', '.join(G.REPARAMETERIZATIONS)})")
    a_values = parse_a(a)
    if not (scale > 0 and math.isfinite(scale)):
        raise ConfigError(f"--scale must be positive, got {scale:g}")
    if not (data_scale > 0 and math.isfinite(data_scale)):
        raise ConfigError(f"--data-scale must be positive, got {data_scale:g}")
    if not math.isfinite(x0):
        raise ConfigError(f"--x0 must be finite, got {x0:g}")
    rep, init = G.one_dimensional(key, scale, x0, k)
    rows = G.three_effects(rep, init, a_values, scale=data_scale)
    head = (
        f"{rep.name}: x*_a = argmin R_a (positional bias), tau = curvature ratio R_a''(x* + {data_scale:g})"
        " / R_a''(x*) outwards (1 = L2-like, 0 = L1-like), dual width = range of the mirror map\n"
    )
    cells = [
        [
            f"{r['a']:g}",
            f"{float(r['minimizer'].flatten()[0]):.6g}",
            f"{r['type']:.6g}",
            f"{float(r['dual_width'].flatten()[0]):.6g}",
        ]
        for r in rows
    ]
    return head + markdown_table(["a", "minimiser x*_a", "type tau", "dual width"], cells), rep, init, a_values


def draw(
    rep, init, a_values: Sequence[float], out: Path | str, xmin: float | None = None, xmax: float | None = None
) -> Path:
    """Write the figure of R_a and ∇R_a (report.figures.legendre_figure) to ``out``."""
    from ..report.figures import legendre_figure, save_png

    rng = None
    if xmin is not None or xmax is not None:
        if xmin is None or xmax is None or not xmin < xmax:
            raise ConfigError("--xmin and --xmax must be given together with xmin < xmax")
        rng = (xmin, xmax)
    return save_png(legendre_figure(rep, init, a_values, x_range=rng), out)

"""Draw R_a for several a (the paper's Figs. 2, 10, 12) for a one-dimensional reparameterization.

Left panel: R_a(x) with its minimiser x*_a marked (type and positional bias). Right panel: the mirror
map ∇R_a(x) = μ, whose range is the dual domain (range shrinking). matplotlib (Agg) is imported here only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ._num import F64


def _grid(reparam, init, a_values, x_range, points):
    if x_range is not None:
        lo, hi = x_range
    else:
        legs = [reparam.legendre(init, a) for a in a_values]
        centres = [float(leg.minimizer().flatten()[0]) for leg in legs]
        width = 2.0 + 2.0 * max(abs(c) for c in centres)
        lo, hi = min(centres) - width, max(centres) + width
    grid = torch.linspace(lo, hi, points, dtype=F64)
    return grid


def legendre_figure(reparam, init, a_values: Sequence[float], out, x_range=None, points: int = 400) -> Path:
    """Save the two-panel figure of R_a and ∇R_a for ``a_values`` to ``out`` (PNG); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if reparam.n != 1:
        raise ValueError(f"legendre_figure draws one-dimensional R_a; {reparam.name} has n={reparam.n}")
    grid = _grid(reparam, init, a_values, x_range, points)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for a in a_values:
        leg = reparam.legendre(init, a)
        pts = reparam.point(grid.reshape(-1, 1))
        ok = leg.in_domain(pts)
        xs = grid[ok]
        if xs.numel() == 0:
            continue
        p_ok = pts[ok]
        R = leg.value(p_ok).numpy()
        mu = leg.grad(p_ok).reshape(-1).numpy()
        (line,) = ax1.plot(xs.numpy(), R, label=f"a = {a:g}")
        try:
            xm = leg.minimizer()
            ax1.plot([float(xm.flatten()[0])], [float(leg.value(xm))], "o", color=line.get_color())
        except ValueError:
            pass
        ax2.plot(xs.numpy(), mu, color=line.get_color(), label=f"a = {a:g}")
    ax1.set_xlabel("x")
    ax1.set_ylabel("R_a(x)")
    ax1.set_title(f"{reparam.name}: R_a (dot: minimiser)")
    ax2.set_xlabel("x")
    ax2.set_ylabel("∇R_a(x) = μ")
    ax2.set_title("mirror map (its range = dual domain)")
    ax1.legend()
    ax2.axhline(0.0, color="0.7", lw=0.8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out

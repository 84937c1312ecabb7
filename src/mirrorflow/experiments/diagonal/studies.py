"""Diagonal-network studies over seeds (App. D): ``mirrorflow reproduce diagonal models=mwv seeds=0,1,2,3,4``.

Each seed draws its own Z and x* (``diagonal.make_data``). Per parameterization and λ: the final distance to
x*, the L1/L2 ratio at turn-off and at the end, and x₁/x*₁ as mean ± half-width of the 95 % t-interval over
seeds (``report.stats.t_interval``), and how many seeds end in each regime:

* **recovers x*** — converged (final loss < ``converged_loss``) with ‖x − x*‖ < ``RECOVER_REL``·‖x*‖;
* **interpolant** — converged elsewhere (e.g. the dense interpolant without weight decay);
* **range shrinking** — x ≠ 0 and the fit is stuck: final loss > ``STUCK_LOSS_REL`` × initial loss while the
  distance to x* no longer moves (less than ``STATIONARY_REL``·‖x*‖ over the last 10 % of the run): no
  interpolant is reachable any more (the support froze, Fig. 9c);
* **collapsed** — ‖x‖ < ``COLLAPSED_REL``·‖x*‖ (all factors decayed to (almost) zero);
* **other** — not converged and not stuck (still approaching, e.g. a small λ at the horizon).

The paper's two witnesses for range shrinking are counted separately over all seeds: the L1/L2 ratio stays
constant after turn-off (it moved less than ``RATIO_TOL``, Fig. 9c) and x₁ ends neither at 0 nor at x*₁
(|x₁| > 0.1·|x*₁| and |x₁ − x*₁| > 0.1·|x*₁|).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from ...report.aggregate import fmt_ci
from ...report.stats import interval
from .config import Config
from .problem import final_x, run_sweep
from .report import summarize

RECOVER_REL = 1e-3
STUCK_LOSS_REL = 1e-3
RATIO_TOL = 1e-3
STATIONARY_REL = 1e-6
COLLAPSED_REL = 1e-6
REGIMES = ("recovers x*", "interpolant", "range shrinking", "collapsed", "other")


def classify(row: Mapping, loss0: float, x_norm: float, x_star_norm: float) -> str:
    """The regime of one run (one λ, one seed) from its ``summarize`` row; see the module docstring."""
    if row["status"] == "diverged":
        return "other"
    if x_norm < COLLAPSED_REL * x_star_norm:
        return "collapsed"
    if row["converged"]:
        return "recovers x*" if row["dist_final"] < RECOVER_REL * x_star_norm else "interpolant"
    stuck = row["train_loss_final"] > STUCK_LOSS_REL * loss0
    still = row["dist_change_last10pct"] < STATIONARY_REL * x_star_norm
    return "range shrinking" if stuck and still else "other"


def ratio_constant(row: Mapping) -> bool:
    """The L1/L2 ratio moved less than ``RATIO_TOL`` between turn-off and the end (Fig. 9c's signature)."""
    return abs(row["l1_l2_final"] - row["l1_l2_on"]) < RATIO_TOL


def x1_witness(x1: float, x1_star: float) -> bool:
    """x₁ ends neither at 0 nor at x*₁ (10 % of |x*₁| either way)."""
    return abs(x1) > 0.1 * abs(x1_star) and abs(x1 - x1_star) > 0.1 * abs(x1_star)


def run_seeds(
    base: Config, models: Sequence[str], seeds: Sequence[int], progress: Callable[[int], None] | None = None
) -> dict[str, list[dict]]:
    """Per model, per seed: the ``summarize`` rows with ``regime``, ``x1_rel`` = x₁/x*₁ and ``witness`` added."""
    out: dict[str, list[dict]] = {}
    for m in models:
        per_seed = []
        for s in seeds:
            cfg = replace(base, model=m, seed=s)
            trace, data = run_sweep(cfg, progress)
            rows = summarize(cfg, trace, data)
            xs = final_x(cfg, trace, data)
            x1_star = float(data.x_star[0])
            x_star_norm = float(data.x_star.norm())
            for c, r in enumerate(rows):
                r["x_norm"] = float(xs[c].norm())
                r["regime"] = classify(r, float(trace.metrics["train_loss"][c, 0]), r["x_norm"], x_star_norm)
                r["x1_rel"] = r["x1_final"] / x1_star
                r["witness"] = x1_witness(r["x1_final"], x1_star)
                r["ratio_constant"] = ratio_constant(r)
            per_seed.append({"seed": s, "rows": rows, "ratio_star": data.ratio_star, "x1_star": x1_star})
        out[m] = per_seed
    return out


def _cell(values: Sequence[float]) -> str:
    centre, low, high, n = interval(values)
    return fmt_ci(centre, low, high, n, len(values))


def seeds_table(base: Config, results: Mapping[str, list[dict]], seeds: Sequence[int]) -> str:
    """Markdown: per model and λ, mean ± 95 % t-interval over seeds and the count of seeds per regime."""
    head = (
        f"Diagonal networks over seeds {','.join(map(str, seeds))} (N={base.n_samples}, d={base.dim}, "
        f"‖x*‖₀={base.sparsity}, init scale {base.init_scale:g}, {base.off_step} + {base.steps - base.off_step} steps; "
        "mean ± 95% t-interval over seeds; each seed its own Z and x*; regimes as in "
        "`mirrorflow.experiments.diagonal.studies`)\n\n"
        "| model | λ | dist final | L1/L2 at turn-off | L1/L2 final | L1/L2 of x* | x₁/x*₁ final "
        "| recovers x* | range shrinking | collapsed (x ≈ 0) | interpolant | other "
        "| L1/L2 constant after turn-off | x₁ neither 0 nor x*₁ |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for m, per_seed in results.items():
        n = len(per_seed)
        for c, lam in enumerate(base.weight_decays):
            rows = [p["rows"][c] for p in per_seed]

            def val(k, rows=rows):
                return [float(r[k]) for r in rows]

            counts = {g: sum(r["regime"] == g for r in rows) for g in REGIMES}
            wit = sum(r["witness"] for r in rows)
            const = sum(r["ratio_constant"] for r in rows)
            lines.append(
                f"| {m} | {lam:g} | {_cell(val('dist_final'))} | {_cell(val('l1_l2_on'))} "
                f"| {_cell(val('l1_l2_final'))} "
                f"| {_cell([p['ratio_star'] for p in per_seed])} | {_cell(val('x1_rel'))} | "
                + " | ".join(
                    f"{counts[g]}/{n}" for g in ("recovers x*", "range shrinking", "collapsed", "interpolant", "other")
                )
                + f" | {const}/{n} | {wit}/{n} |"
            )
    return head + "\n".join(lines) + "\n"

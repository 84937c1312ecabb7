"""How far do real optimizers leave the paper's geometry? The LegendreTracker residual per optimizer.

Two commuting problems, trained with torch optimizers on the factors, weight decay turned off half-way
(WeightDecayScheduler, turn_off), every optimizer given the same a_∞ = −Σ η_s λ_s = A:

* diagonal: x = m⊙w, underdetermined regression (N=8, n=20, 3-sparse x*), init m_0 = 0.5, w_0 = 0;
* matrix sensing: W = UUᵀ (n=5) with 3 commuting sensing matrices A_i = Q diag(d_i) Qᵀ, U_0 = 0.5·I.

Optimizers: GD at η and η/2 (the O(η) reference), SGD with momentum β=0.9 at lr η(1−β) (same effective
step), Adam (coupled decay: λw added to the gradient), AdamW (decoupled: w ← (1−ηλ)w), GD with a step
size growing linearly ×4 over the run. μ_t = −Σ η_s ∇_x f(x_s) with the η the optimizer was given.

Printed per case: ρ_T = ‖∇R_{a_T}(x_T) − μ_T‖/‖μ_T‖, the best time-rescaled ρ (min over s of
‖∇R_{s·a_T}(x_T) − s·μ_T‖/‖s·μ_T‖: does *some* gradient-flow clock explain the end point?), the final loss,
and ‖x̂ − x_T‖/‖x̂‖ with x̂ = argmin_{Zx=y} R_{a_T}(x) (Theorem 3.11), also for x̂ at the best clock s·a_T.
One figure: ρ_t over training.

    PYTHONPATH=src python scripts/tracker_residuals.py [--out runs/tracker-residuals]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from mirrorflow import geometry as G
from mirrorflow.schedules import turn_off
from mirrorflow.training.scheduler import WeightDecayScheduler
from mirrorflow.training.tracker import LegendreTracker, identity_residual

D = torch.float64
A_TOTAL = -0.5


def diagonal_problem():
    gen = torch.Generator().manual_seed(0)
    N, n = 8, 20
    Z = torch.randn(N, n, generator=gen, dtype=D)
    x_star = torch.zeros(n, dtype=D)
    x_star[:3] = torch.tensor([1.0, -0.7, 0.5], dtype=D)
    rep = G.get("mw", n)
    return "diagonal m⊙w", rep, rep.init(scale=0.5), Z, Z @ x_star


def sensing_problem():
    gen = torch.Generator().manual_seed(1)
    n, m = 5, 3
    Q = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=D))[0]
    d = torch.linalg.qr(torch.randn(n, m, generator=gen, dtype=D))[0].T * math.sqrt(m)
    A = torch.stack([Q @ torch.diag(d[i]) @ Q.T for i in range(m)])
    W_star = Q @ torch.diag(torch.tensor([0.6, 0.4, 0.0, 0.0, 0.0], dtype=D)) @ Q.T
    rep = G.get("uut", n)
    return "matrix sensing UUᵀ", rep, rep.init(scale=0.5), A.reshape(m, -1), torch.einsum("mij,ij->m", A, W_star)


def optimizers(eta: float, eta_adam: float, T: int):
    """name → (factory(params) → optimizer, lr multiplier per step t (LambdaLR), nominal step sizes η_t)."""
    grow = lambda t: 1.0 + 3.0 * t / T  # noqa: E731
    return {
        "GD": (lambda p: torch.optim.SGD(p, lr=eta), None, T),
        "GD η/2": (lambda p: torch.optim.SGD(p, lr=eta / 2), None, 2 * T),
        "SGD momentum 0.9": (lambda p: torch.optim.SGD(p, lr=eta * 0.1, momentum=0.9), None, T),
        "Adam (coupled)": (lambda p: torch.optim.Adam(p, lr=eta_adam), None, T),
        "AdamW (decoupled)": (lambda p: torch.optim.AdamW(p, lr=eta_adam), None, T),
        "GD growing η (×4)": (lambda p: torch.optim.SGD(p, lr=eta), grow, T),
    }


def train(rep, w0, Z, y, make_opt, lr_mult, T, every):
    parts = {k: torch.nn.Parameter(v.clone()) for k, v in rep.unpack(w0).items()}
    opt = make_opt(list(parts.values()))
    base_lr = opt.param_groups[0]["lr"]
    lrs = [base_lr * (lr_mult(t) if lr_mult else 1.0) for t in range(T)]
    lam = -A_TOTAL / sum(lrs[: T // 2])  # every optimizer gets a_∞ = −Σ η_s λ_s = A_TOTAL
    opt.param_groups[0]["weight_decay"] = lam
    sched = WeightDecayScheduler(opt, turn_off(lam, T // 2))
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_mult) if lr_mult else None
    tracker = LegendreTracker(rep, parts, opt, every=every, data=(Z, y))
    for _ in range(T):
        opt.zero_grad()
        x = tracker.watch(rep.g(torch.cat([p.reshape(-1) for p in parts.values()])))
        r = Z @ x - y
        (0.5 * (r * r).mean()).backward()
        opt.step()
        sched.step()
        if lr_sched:
            lr_sched.step()
    assert abs(tracker.a - sched.a) < 1e-9, (tracker.a, sched.a)
    return tracker


def best_rescaled(rep, init, a, x, mu) -> tuple[float, float]:
    """min over s ∈ [10⁻², 10²] (log grid) of ρ(s·a, x, s·μ) and its argmin s."""
    best = (math.inf, math.nan)
    for s in np.geomspace(1e-2, 1e2, 161):
        rho = identity_residual(rep, init, s * a, x, s * mu)
        if rho < best[0]:
            best = (rho, float(s))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/tracker-residuals")
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    T = args.steps
    rows, curves = [], {}
    for name, rep, w0, Z, y in (diagonal_problem(), sensing_problem()):
        for opt_name, (make, mult, steps) in optimizers(0.05, 0.01, T).items():
            tr = train(rep, w0, Z, y, make, mult, steps, every=max(1, steps // 50))
            last = tr.history[-1]
            x, xp = tr.x(), tr.predicted_limit()
            rho_s, s = best_rescaled(rep, tr.init, tr.a, x, tr.mu)
            xs = tr.predicted_limit(s * tr.a) if math.isfinite(s) else xp * math.nan
            rows.append(
                (
                    name,
                    opt_name,
                    tr.a,
                    last["residual"],
                    rho_s,
                    s,
                    last["loss"],
                    float((xp - x).norm() / xp.norm()),
                    float((xs - x).norm() / xs.norm()),
                )
            )
            curves.setdefault(name, {})[opt_name] = (
                [h["step"] / steps for h in tr.history],
                [h["residual"] for h in tr.history],
            )
    print(f"a_∞ = {A_TOTAL} for every case; T = {T} steps (2T for GD η/2); weight decay off at T/2\n")
    print(
        "| problem | optimizer | a_T | ρ_T = ‖∇R_a(x)−μ‖/‖μ‖ | best rescaled ρ (s) | final loss | ‖x̂−x_T‖/‖x̂‖ "
        "| same at s·a_T |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for prob, opt, a, rho, rho_s, s, loss, dist, dist_s in rows:
        print(
            f"| {prob} | {opt} | {a:.3f} | {rho:.2e} | {rho_s:.2e} ({s:.3g}) | {loss:.1e} | {dist:.2e} | {dist_s:.2e} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig = figure(curves)
    fig.savefig(out / "tracker_residuals.png", dpi=110, bbox_inches="tight")
    print(f"\nfigure: {out / 'tracker_residuals.png'}  ({time.perf_counter() - t0:.1f} s)")


def figure(curves):
    import matplotlib.pyplot as plt

    from mirrorflow.report import figures  # noqa: F401  (Agg backend)

    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 3.8), sharey=True, squeeze=False)
    for ax, (prob, series) in zip(axes[0], curves.items()):
        for opt_name, (t, rho) in series.items():
            rho = np.asarray(rho, dtype=float)
            label = opt_name
            if np.isinf(rho).any():  # x_t reached the boundary of dom R_a (an eigenvalue collapsed to 0)
                label += f" (ρ = ∞ from {t[int(np.argmax(np.isinf(rho)))]:.2f}: eigenvalue → 0)"
            ax.plot(
                t,
                np.where((rho > 0) & np.isfinite(rho), rho, np.nan),
                label=label,
                lw=1.4,
                ls="--" if "η/2" in opt_name else "-",
            )
        ax.axvline(0.5, color="grey", ls=":", lw=1, label="weight decay off")
        ax.set_yscale("log")
        ax.set_xlabel("fraction of training")
        ax.set_title(prob, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(r"$\|\nabla R_{a_t}(x_t) - \mu_t\| \,/\, \|\mu_t\|$")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    plt.close(fig)
    return fig


if __name__ == "__main__":
    main()

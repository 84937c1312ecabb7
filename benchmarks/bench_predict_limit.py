"""Benchmark: Theorem 3.11's predicted limit (Newton on the dual) against training to the same accuracy.

For each problem, gradient descent with a turn-off schedule runs with the batched engine (one configuration,
float64, one thread) in chunks until x_t is within 1e-3 (relative) of the predicted limit; the prediction is
timed with ``geometry.predict_limit`` (default tolerance, i.e. residual ≤ 1e-10, far tighter than 1e-3). The
ratio training time / prediction time is printed (target ≥ 100×). Timings are the best of ``--repeat`` runs
(prediction: of 10·``--repeat``), since the machine may be shared.

    .venv/bin/python benchmarks/bench_predict_limit.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from mirrorflow import geometry as G
from mirrorflow.engine.batched import run_batched, schedule_table
from mirrorflow.engine.reparam_regression import ReparamRegression
from mirrorflow.schedules import turn_off

D = torch.float64


def problem(N: int, n: int, k_nonzero: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    Z = torch.linalg.qr(torch.randn(n, N, generator=gen, dtype=D))[0].T * math.sqrt(N)
    x_star = torch.zeros(n, dtype=D)
    x_star[:k_nonzero] = 0.5 + 0.5 * torch.rand(k_nonzero, generator=gen, dtype=D)
    return Z, Z @ x_star


def time_prediction(rep, w0, sched, Z, y, lr, repeat):
    best, x = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        x = G.predict_limit(rep, w0, sched, Z, y, lr=lr)
        best = min(best, time.perf_counter() - t0)
    return best, x


def time_training(rep, w0, sched, Z, y, lr, x_pred, rel_tol=1e-3, chunk=250, max_steps=200_000):
    """Seconds and steps until ‖x_t − x_pred‖ ≤ rel_tol·‖x_pred‖ (checked every ``chunk`` steps)."""
    prob = ReparamRegression(rep, Z, y, w0)
    state = prob.init_state()
    table = schedule_table([sched], max_steps)
    t0 = time.perf_counter()
    steps = 0
    while steps < max_steps:
        trace = run_batched(prob, table[:, steps : steps + chunk], lr=lr, log_every=chunk, state=state)
        state = trace.final_state
        steps += chunk
        x = prob.x_of(state)[0]
        if float((x - x_pred).norm()) <= rel_tol * float(x_pred.norm()):
            return time.perf_counter() - t0, steps
    return math.nan, steps


CASES = [
    # name, reparameterization, init scale, a_∞, η, decay time (η·steps with λ > 0), (N, n, nonzeros)
    ("m⊙w, Eq. 9", lambda n: G.get("mw", n), 1.0, -1.0, 0.02, 4.0, (20, 60, 4)),
    ("m⊙w coupled, Eq. 10", lambda n: G.get("mw-coupled", n), 1.0, -0.5, 0.01, 4.0, (20, 60, 4)),
    ("u⁴ − v⁴, Eq. 11", lambda n: G.PowerDiff(n, k=2), 1.0, -0.3, 0.005, 4.0, (20, 60, 4)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="best of this many timings")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| problem | N × n | a_∞ | η | predict (s) | train to 1e-3 (s) | steps | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, make, scale, a, lr, t_on, (N, n, k) in CASES:
        Z, y = problem(N, n, k)
        rep = make(n)
        w0 = rep.init(scale=scale)
        on = int(round(t_on / lr))  # u^(2k) uses plain-gradient decay: keep ηλ small (error O(ηλ|a|))
        sched = turn_off(abs(a) / (lr * on), on)
        t_pred, x_pred = time_prediction(rep, w0, sched, Z, y, lr, 10 * args.repeat)  # milliseconds each
        t_train, steps = min(time_training(rep, w0, sched, Z, y, lr, x_pred) for _ in range(args.repeat))
        print(
            f"| {name} | {N} × {n} | {a:g} | {lr:g} | {t_pred:.4f} | {t_train:.3f} | {steps} | "
            f"{t_train / t_pred:.0f}× |"
        )


if __name__ == "__main__":
    main()

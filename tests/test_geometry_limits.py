"""Theorem 3.11 / Corollary C.3: predict_limit against gradient descent trained to convergence with the batched
engine (turn-off schedules), against an independent solver (scipy SLSQP), and its bad-input behaviour."""

import math

import numpy as np
import pytest
import torch

from conftest import commuting_sensing
from mirrorflow import geometry as G
from mirrorflow.engine.batched import run_batched, schedule_table
from mirrorflow.engine.reparam_regression import ReparamRegression
from mirrorflow.schedules import constant, turn_off

torch.set_num_threads(1)
D = torch.float64


def regression(N=4, n=8, seed=0, target=(0.4, 0.25)):
    """Well-conditioned underdetermined problem: Z has orthogonal rows (ZZᵀ = N·I), sparse x*."""
    gen = torch.Generator().manual_seed(seed)
    Z = torch.linalg.qr(torch.randn(n, N, generator=gen, dtype=D))[0].T * math.sqrt(N)
    xs = torch.zeros(n, dtype=D)
    xs[: len(target)] = torch.tensor(target, dtype=D)
    return Z, Z @ xs


def train_and_predict(rep, w0, a_values, Z, y, lr, steps):
    """Train one config per a (decay for the first steps/20 steps, then off) and predict each limit."""
    on = steps // 20
    schedules = [turn_off(abs(a) / (lr * on), on) for a in a_values]
    prob = ReparamRegression(rep, Z, y, w0, n_configs=len(schedules))
    trace = run_batched(prob, schedule_table(schedules, steps), lr=lr, log_every=steps)
    assert np.allclose(trace.final("a"), a_values, atol=1e-12)  # a = −η Σ λ, as predict_limit computes it
    assert (trace.final("residual") < 1e-5).all(), trace.final("residual")  # trained to convergence
    x_train = prob.x_of(trace.final_state)
    errors = []
    for c, s in enumerate(schedules):
        x_pred = G.predict_limit(rep, w0, s, Z, y, lr=lr)
        errors.append(float((x_pred - x_train[c]).norm() / x_pred.norm()))
    return np.array(errors), x_train


@pytest.mark.parametrize(
    "name,make,scale,a_values,lr,steps",
    [
        ("mw", lambda n: G.get("mw", n), 1.0, (0.0, -0.5, -1.0), 0.02, 5000),
        ("mw-coupled", lambda n: G.get("mw-coupled", n), 1.0, (0.0, -0.3, -0.6), 0.01, 6000),
        ("power k=2", lambda n: G.get("power", n, k=2), 1.2, (0.0, -0.5), 0.006, 7000),
        ("log", lambda n: G.get("log", n), 1.0, (0.0, -0.1), 0.02, 5000),
    ],
)
@pytest.mark.slow
def test_predicted_limit_matches_training(name, make, scale, a_values, lr, steps):
    Z, y = regression(target=(0.4, 0.25))
    rep = make(Z.shape[1])
    # log: an unbalanced init (x_0 ≠ 0); with u_0 = v_0 the limit does not depend on a (next test)
    x0 = 0.3 * torch.tensor([1.0, -1.0] * 4, dtype=D) if name == "log" else None
    w0 = rep.init(scale=scale, x0=x0)
    errors, x_train = train_and_predict(rep, w0, a_values, Z, y, lr, steps)
    assert errors.max() < 1e-3, errors
    # the schedules really lead to different limits (the comparison can tell them apart)
    assert float((x_train[0] - x_train[-1]).norm()) > 10 * errors.max() * float(x_train[0].norm())


def test_log_parameterization_balanced_init_limit_ignores_a():
    """App. E: with u_0 = v_0, R_a = ((u_0² + 2a)/2) Σ log cosh x is a vertical rescaling, so the limit of
    Theorem 3.11 is the same for every a (docs/theory.md#legendre-log: the effect is on the dual range only)."""
    Z, y = regression(target=(0.4, 0.25))
    rep = G.get("log", Z.shape[1])
    w0 = rep.init(scale=1.0)
    xs = [G.predict_limit(rep, w0, a, Z, y) for a in (0.0, -0.2, -0.4)]
    assert torch.allclose(xs[0], xs[1], atol=1e-9) and torch.allclose(xs[0], xs[2], atol=1e-9)
    widths = [float(G.dual_range(rep.legendre(w0, a))[0]) for a in (0.0, -0.2, -0.4)]
    assert widths == pytest.approx([1.0, 0.6, 0.2])


def test_matrix_sensing_limit_matches_training():
    """Cor. C.3: W = UUᵀ, commuting symmetric sensing matrices, U_0 = α I, weight decay turned off."""
    n, m = 3, 2
    Q, A = commuting_sensing(n, m, seed=1)
    W_star = Q @ torch.diag(torch.tensor([0.5, 0.3, 0.4], dtype=D)) @ Q.T
    y = torch.einsum("mij,ij->m", A, W_star)
    rep = G.get("uut", n)
    w0 = rep.init(scale=0.6)
    Z = A.reshape(m, -1)
    errors, W_train = train_and_predict(rep, w0, (0.0, -0.5), Z, y, lr=0.02, steps=3000)
    assert errors.max() < 1e-3, errors
    assert float((W_train[0] - W_train[1]).norm()) > 10 * errors.max() * float(W_train[0].norm())
    # matrix input gives the matrix, and ∇R_a(W∞) = Σ ν_i A_i (Lemma C.1)
    res = G.predict_limit("uut", w0, -0.5, Z.reshape(m, n, n), y, full=True)
    assert res.x.shape == (n, n) and res.converged
    assert torch.allclose(torch.einsum("mij,ij->m", Z.reshape(m, n, n), res.x), y, atol=1e-9)
    leg = G.SpectralEntropy(0.36 * torch.eye(n, dtype=D), -0.5)
    assert torch.allclose(leg.grad(res.x), torch.einsum("m,mij->ij", res.nu, Z.reshape(m, n, n)), atol=1e-8)


def test_newton_dual_agrees_with_scipy_slsqp_and_kkt():
    from scipy.optimize import minimize

    Z, y = regression(N=3, n=6, seed=2, target=(0.7, -0.3, 0.2))
    rep = G.get("mw", 6)
    w0 = rep.init(scale=0.5, x0=0.1 * torch.randn(6, generator=torch.Generator().manual_seed(3), dtype=D))
    leg = rep.legendre(w0, -0.6)
    res = G.constrained_argmin(leg, Z, y)
    assert res.converged and res.residual < 1e-10
    # Lemma C.1: ∇R_a(x) = Zᵀν at the optimum
    assert torch.allclose(leg.grad(res.x), Z.T @ res.nu, atol=1e-10)
    Zn, yn = Z.numpy(), y.numpy()
    sol = minimize(
        lambda x: float(leg.value(torch.tensor(x))),
        np.zeros(6),
        jac=lambda x: leg.grad(torch.tensor(x)).numpy(),
        constraints=[{"type": "eq", "fun": lambda x: Zn @ x - yn, "jac": lambda x: Zn}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert np.allclose(sol.x, res.x.numpy(), atol=1e-6)


def test_predict_limit_inputs():
    Z, y = regression()
    n = Z.shape[1]
    rep = G.get("mw", n)
    w0 = rep.init(scale=1.0)
    # the diagonal-network call style: name, dict of numpy parts, numpy data, a schedule already scaled by η
    init = {"m": np.ones(n), "w": np.zeros(n)}
    x1 = G.predict_limit("mw", init, turn_off(0.5, 100).scaled(0.02), Z.numpy(), y.numpy())
    x2 = G.predict_limit(rep, w0, turn_off(0.5, 100), Z, y, lr=0.02)
    x3 = G.predict_limit(rep, w0, -1.0, Z, y)
    assert torch.allclose(x1, x2) and torch.allclose(x2, x3)
    assert G.accumulated_regularization(turn_off(0.5, 100), lr=0.02) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="never switches off"):
        G.predict_limit(rep, w0, constant(0.1), Z, y)
    assert G.accumulated_regularization(constant(0.1), lr=0.5, horizon=20) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="w_init has 3 entries"):
        G.predict_limit(rep, torch.ones(3), -1.0, Z, y)
    with pytest.raises(ValueError, match="unknown parameter part"):
        G.predict_limit(rep, {"m": np.ones(n), "q": np.ones(n)}, -1.0, Z, y)
    # coupled init (x ≥ 0) cannot interpolate x_1 + x_2 = −1: LimitNotConverged with the residual, or the
    # unconverged answer (finite, flagged) when asked for
    args = ("mw-coupled", G.get("mw-coupled", 2).init(1.0), -0.5, torch.ones(1, 2, dtype=D), -torch.ones(1, dtype=D))
    with pytest.raises(G.LimitNotConverged, match="did not converge") as e:
        G.predict_limit(*args, max_iter=50)
    assert e.value.residual > 0.5
    res = G.predict_limit(*args, full=True, max_iter=50, allow_unconverged=True)
    assert not res.converged and res.residual > 0.5 and bool(torch.isfinite(res.x).all())


def test_predict_limit_converges_where_the_capped_newton_stalls():
    """m⊙w with a_∞ = −220 (the limit is then the min-ℓ1 interpolator, checked by its support and ℓ1 norm
    against every other sparse interpolator) and u⁴ − v⁴ from init 0.01: converged answers, residual ≤ tol."""
    g = torch.Generator().manual_seed(0)
    N, n = 3, 8
    Z = torch.randn(N, n, generator=g, dtype=D)
    y = Z @ torch.tensor([1.0, -0.5, 0, 0, 0, 0, 0, 0], dtype=D)
    mw = G.get("mw", n)
    res = G.predict_limit(mw, mw.init(scale=1.0), -220.0, Z, y, full=True)
    assert res.converged and res.residual <= 1e-9
    # min-ℓ1 over Zx = y is attained at a basic solution (N non-zeros): enumerate them
    import itertools

    best = min(
        float(torch.linalg.solve(Z[:, list(S)], y).abs().sum())
        for S in itertools.combinations(range(n), N)
        if abs(float(torch.linalg.det(Z[:, list(S)]))) > 1e-9
    )
    assert float(res.x.abs().sum()) == pytest.approx(best, rel=1e-6)
    p = G.get("power", n)
    res = G.predict_limit(p, p.init(scale=0.01), 0.0, Z, y, full=True)
    assert res.converged and float((Z @ res.x - y).abs().max()) <= 1e-8 and float(res.x.abs().max()) > 0.1


def test_non_commuting_sensing_matrices_are_refused():
    n = 3
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(2, n, n, generator=gen, dtype=D)
    A = A + A.transpose(1, 2)
    with pytest.raises(G.NonCommutingError, match="A_0 and A_1 do not commute"):
        G.predict_limit("uut", G.get("uut", n).init(0.5), -0.1, A, torch.ones(2, dtype=D))

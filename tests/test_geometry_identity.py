"""The identity along training (Eq. 5 integrated): ∇R_{a_t}(x_t) = μ_t = −η Σ_{s<t} ∇f(x_s), up to O(η).

Every reparameterization with a closed-form or numeric R_a is trained with the batched engine (weight decay for
the first half, then off) at step sizes η and η/2 over the same time horizon; the error must be small and
roughly halve (first order in η)."""

import pytest
import torch

from conftest import commuting_sensing
from conftest import sparse_regression as data
from mirrorflow import geometry as G
from mirrorflow.engine.batched import run_batched, schedule_table
from mirrorflow.engine.reparam_regression import ReparamRegression
from mirrorflow.schedules import turn_off

torch.set_num_threads(1)
D = torch.float64


def identity_error(rep, w0, a_total, lr, time_horizon, Z, y, decay="auto"):
    """max |∇R_{a_T}(x_T) − μ_T| after gradient descent for ``time_horizon`` (= steps·η)."""
    steps = int(round(time_horizon / lr))
    on = steps // 2
    sched = turn_off(abs(a_total) / (lr * on), on)
    prob = ReparamRegression(rep, Z, y, w0, decay=decay)
    trace = run_batched(prob, schedule_table([sched], steps), lr=lr, log_every=steps)
    assert trace.diverged_at[0] == -1
    a = float(trace.final("a")[0])
    assert a == pytest.approx(a_total, abs=1e-12)
    x = prob.x_of(trace.final_state)[0]
    mu = trace.final_state["mu"][0]
    leg = rep.legendre(w0, a)
    return float((rep.flat(leg.grad(rep.point(x))) - mu).abs().max()), float(mu.abs().max())


def commuting_quadratic(n=3, d=5, seed=3, B_identity=True):
    gen = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=D))[0]
    A = torch.stack([Q @ torch.diag(torch.randn(d, generator=gen, dtype=D)) @ Q.T for _ in range(n)])
    B = None if B_identity else Q @ torch.diag(torch.rand(d, generator=gen, dtype=D) + 0.5) @ Q.T
    return G.Quadratic(A, B)


CASES = {
    # name: (reparam factory (n → rep), init kwargs, a, η, horizon, tolerance at η/2)
    "mw general (Eq. 9)": (lambda n: G.get("mw", n), dict(scale=1.0, x0=0.2), -1.0, 0.02, 8.0, 5e-3),
    "mw coupled (Eq. 10)": (lambda n: G.get("mw-coupled", n), dict(scale=0.8), -0.8, 0.02, 8.0, 1e-2),
    "u^2 - v^2 (k = 1)": (lambda n: G.PowerDiff(n, k=1), dict(scale=0.8), -0.3, 0.01, 4.0, 5e-3),
    "u^4 - v^4 (Eq. 11)": (lambda n: G.PowerDiff(n, k=2), dict(scale=0.9), -0.3, 0.01, 4.0, 5e-3),
    "u^6 - v^6 (Eq. 11)": (lambda n: G.PowerDiff(n, k=3), dict(scale=0.9), -0.2, 0.01, 4.0, 5e-3),
    "u^2 - v^2, h = ½‖w‖² (hyperbolic at a/2)": (
        lambda n: G.PowerDiff(n, k=1, penalty="l2"),
        dict(scale=0.8),
        -0.6,
        0.01,
        4.0,
        5e-3,
    ),
    "log u - log v (App. E)": (lambda n: G.get("log", n), dict(scale=1.0, x0=0.3), -0.15, 0.02, 8.0, 5e-3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_identity_along_training_closed_forms(name):
    make, init_kw, a, lr, horizon, tol = CASES[name]
    Z, y = data()
    rep = make(Z.shape[1])
    kw = dict(init_kw)
    if "x0" in kw:
        kw["x0"] = kw["x0"] * torch.tensor([1.0, -1.0, 0.5, 0.0, -0.5, 1.0], dtype=D)
    w0 = rep.init(**kw)
    e1, mu_scale = identity_error(rep, w0, a, lr, horizon, Z, y)
    e2, _ = identity_error(rep, w0, a, lr / 2, horizon, Z, y)
    assert mu_scale > 0.05  # the dual variable really moved
    assert e2 < tol, (e1, e2)
    assert 0.3 < e2 / e1 < 0.7, (e1, e2)  # O(η): halves with η


@pytest.mark.parametrize("B_identity", [True, False], ids=["B=I (exact decay)", "B PSD (gradient decay)"])
def test_identity_along_training_quadratic(B_identity):
    """Theorem 3.15: R_a = Q_a* by Newton, for commuting A_i (and B)."""
    rep = commuting_quadratic(B_identity=B_identity)
    gen = torch.Generator().manual_seed(7)
    Z = torch.randn(2, rep.n, generator=gen, dtype=D)
    y = torch.tensor([0.3, -0.2], dtype=D)
    w0 = rep.init(scale=0.7)
    e1, mu_scale = identity_error(rep, w0, -0.4, 0.01, 3.0, Z, y)
    e2, _ = identity_error(rep, w0, -0.4, 0.005, 3.0, Z, y)
    assert mu_scale > 0.05 and e2 < 5e-3
    assert 0.3 < e2 / e1 < 0.7, (e1, e2)


def test_identity_along_training_matrix_sensing():
    """Eq. (17): ∇R_{a_t}(W_t) = M_t = −η Σ ∇f(W_s) for W = UUᵀ with commuting sensing matrices."""
    n, m = 3, 2
    Q, A = commuting_sensing(n, m, seed=1)
    y = torch.einsum("mij,ij->m", A, Q @ torch.diag(torch.tensor([0.5, 0.3, 0.4], dtype=D)) @ Q.T)
    rep = G.get("uut", n)
    w0 = rep.init(scale=0.6)
    Z = A.reshape(m, -1)
    e1, mu_scale = identity_error(rep, w0, -0.5, 0.02, 6.0, Z, y)
    e2, _ = identity_error(rep, w0, -0.5, 0.01, 6.0, Z, y)
    assert mu_scale > 0.05 and e2 < 5e-3
    assert 0.3 < e2 / e1 < 0.7, (e1, e2)


@pytest.mark.slow
def test_identity_along_training_generic_flow_path():
    """A user's (g, h) given as plain callables: R_a from the commuting flows (Theorem B.1), here for
    x = m⊙w written by hand; and depth 3 without weight decay (a = 0, where g alone commutes)."""
    n = 3
    Z, y = data(N=2, n=n, seed=4)

    def g(w):
        return w[..., :n] * w[..., n:]

    def h(w):
        return 0.5 * (w * w).sum(-1)

    rep = G.Custom(g, h, n=n, d=2 * n, name="my m*w")
    w0 = torch.tensor([1.0, 0.8, 1.2, 0.1, -0.2, 0.0], dtype=D)
    e1, mu_scale = identity_error(rep, w0, -0.5, 0.02, 3.0, Z, y)
    e2, _ = identity_error(rep, w0, -0.5, 0.01, 3.0, Z, y)
    assert mu_scale > 0.05 and e2 < 5e-3
    assert 0.3 < e2 / e1 < 0.7, (e1, e2)
    deep = G.DeepProduct(n, 3)
    w0 = deep.init(scale=0.9, x0=torch.tensor([0.2, -0.1, 0.0], dtype=D))
    e1, _ = identity_error(deep, w0, 0.0, 0.02, 3.0, Z, y)
    e2, _ = identity_error(deep, w0, 0.0, 0.01, 3.0, Z, y)
    assert e2 < 5e-3 and 0.3 < e2 / e1 < 0.7, (e1, e2)


def test_identity_is_exact_for_plain_gradient_descent_on_x():
    """g = id, a = 0: R_0 = ½‖x − x_0‖² and x_t − x_0 = μ_t holds exactly for gradient descent."""
    Z, y = data()
    rep = G.get("linear", Z.shape[1])
    w0 = rep.init(x0=0.1)
    err, mu_scale = identity_error(rep, w0, 0.0, 0.05, 2.0, Z, y)
    assert mu_scale > 0.05 and err < 1e-10


def test_identity_along_training_power_with_gradient_decay():
    """u^4 − v^4 trained with decay="gradient" (plain GD on f + λh) instead of the exact matched decay flow."""
    Z, y = data()
    rep = G.PowerDiff(Z.shape[1], k=2)
    w0 = rep.init(scale=0.9)
    e1, mu_scale = identity_error(rep, w0, -0.3, 0.01, 4.0, Z, y, decay="gradient")
    e2, _ = identity_error(rep, w0, -0.3, 0.005, 4.0, Z, y, decay="gradient")
    assert mu_scale > 0.05 and e2 < 5e-3
    assert 0.3 < e2 / e1 < 0.7, (e1, e2)


DECAY_FAMILIES = {
    "mw": lambda: G.get("mw", 3),
    "depth3": lambda: G.DeepProduct(3, 3),
    "uut": lambda: G.get("uut", 2),
    "power k=1": lambda: G.PowerDiff(3, k=1),
    "power k=2": lambda: G.PowerDiff(3, k=2),
    "power k=3": lambda: G.PowerDiff(3, k=3),
    "power k=2, l2": lambda: G.PowerDiff(3, k=2, penalty="l2"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DECAY_FAMILIES))
def test_decay_flow_solves_the_weight_decay_ode(name):
    """decay_flow(w, s) is the solution at time s of dw/dt = −∇h(w) (checked by RK4 on h_grad), per row of
    a batch with its own s, and keeps signs (a negative u stays negative)."""
    rep = DECAY_FAMILIES[name]()
    gen = torch.Generator().manual_seed(2)
    w = 0.5 + torch.rand(2, rep.d, generator=gen, dtype=D)
    w[:, 0] = -w[:, 0]
    s = torch.tensor([[0.05], [0.4]], dtype=D)
    assert rep.has_exact_decay
    out = rep.decay_flow(w, s)
    ref = w.clone()
    n_sub = 2000
    h = s / n_sub
    for _ in range(n_sub):
        k1 = -rep.h_grad(ref)
        k2 = -rep.h_grad(ref + 0.5 * h * k1)
        k3 = -rep.h_grad(ref + 0.5 * h * k2)
        k4 = -rep.h_grad(ref + h * k3)
        ref = ref + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-12)
    assert bool((out[:, 0] < 0).all())


def test_families_without_a_closed_form_decay_and_the_l2_power_penalty():
    log = G.get("log", 3)
    assert not log.has_exact_decay and log.decay_flow(torch.ones(1, 6, dtype=D), torch.ones(1, 1, dtype=D)) is None
    Z, y = data()
    with pytest.raises(ValueError, match="closed-form decay flow"):
        ReparamRegression(log, Z, y, log.init(), decay="exact")
    # u^4 − v^4 with plain weight decay ½‖w‖²: h = ½‖w‖², not commuting, so no R_a
    rep = G.get("power", 3, k=2, penalty="l2")
    w = rep.init(scale=0.9)
    assert rep.weight_decay_l2 and float(rep.h(w)) == pytest.approx(0.5 * float((w * w).sum()))
    with pytest.raises(G.NonCommutingError, match="2 − 2k"):
        rep.legendre(w, -0.1)
    with pytest.raises(ValueError, match="penalty must be one of"):
        G.PowerDiff(3, k=2, penalty="l1")

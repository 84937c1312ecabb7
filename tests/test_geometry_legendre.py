"""Legendre functions R_a: closed forms (Eq. 9, 10, 11, 17, log-cosh, Thm 3.15), their internal consistency,
extreme inputs, float32, and domain errors."""

import math

import numpy as np
import pytest
import torch

from mirrorflow import geometry as G

torch.set_num_threads(1)
D = torch.float64


def rnd(*shape, seed=0, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


# ---- one factory per family: (legendre, a point x in the domain) -------------------------------------------------
def mw_general():
    rep = G.get("mw", 3)
    w0 = rep.init(scale=0.8, x0=torch.tensor([0.3, -0.5, 0.0], dtype=D))
    return rep.legendre(w0, -0.7), torch.tensor([0.4, -0.2, 1.3], dtype=D)


def mw_coupled():
    rep = G.get("mw-coupled", 3)
    return rep.legendre(rep.init(scale=0.9), -0.4), torch.tensor([0.4, 0.2, 1.3], dtype=D)


def u2v2():
    rep = G.PowerDiff(3, k=1)
    return rep.legendre(rep.init(scale=0.7, x0=torch.tensor([0.2, 0.0, -0.3], dtype=D)), -0.3), torch.tensor(
        [0.1, -0.4, 0.7], dtype=D
    )


def power2():
    rep = G.PowerDiff(3, k=2)
    return rep.legendre(rep.init(scale=0.9, x0=torch.tensor([0.2, 0.0, -0.3], dtype=D)), -0.6), torch.tensor(
        [0.1, -0.4, 0.7], dtype=D
    )


def power3():
    rep = G.PowerDiff(2, k=3)
    return rep.legendre(rep.init(scale=1.1), -0.2), torch.tensor([0.3, -0.05], dtype=D)


def logcosh():
    rep = G.LogDiff(3)
    return rep.legendre(rep.init(scale=1.0, x0=torch.tensor([0.5, 0.0, -1.0], dtype=D)), -0.1), torch.tensor(
        [0.3, -0.8, 0.1], dtype=D
    )


def quadratic():
    d, n = 5, 3
    Q, _ = torch.linalg.qr(rnd(d, d, seed=3))
    A = torch.stack([Q @ torch.diag(rnd(d, seed=10 + i)) @ Q.T for i in range(n)])
    B = Q @ torch.diag(torch.rand(d, generator=torch.Generator().manual_seed(4), dtype=D) + 0.5) @ Q.T
    rep = G.Quadratic(A, B)
    w0 = rep.init(scale=0.8)
    leg = rep.legendre(w0, -0.3)
    return leg, leg.grad_inverse(torch.tensor([0.1, -0.2, 0.05], dtype=D))


def spectral():
    n = 3
    U0 = torch.eye(n, dtype=D) + 0.2 * rnd(n, n, seed=5)
    leg = G.SpectralEntropy(U0 @ U0.T, -0.5)
    M = rnd(n, n, seed=6, scale=0.3)
    return leg, leg.grad_inverse(0.5 * (M + M.T))


FAMILIES = [mw_general, mw_coupled, u2v2, power2, power3, logcosh, quadratic, spectral]
IDS = [f.__name__ for f in FAMILIES]


def _dirs(x):
    """Unit perturbation directions (symmetric ones for matrices)."""
    m = x.numel()
    E = torch.eye(m, dtype=D).reshape(m, *x.shape)
    if x.dim() == 2:
        E = 0.5 * (E + E.transpose(-1, -2))
    return E


@pytest.mark.parametrize("make", FAMILIES, ids=IDS)
def test_grad_is_derivative_of_value_and_inverse_of_grad_inverse(make):
    leg, x = make()
    g = leg.grad(x)
    # grad_inverse ∘ grad = id and grad ∘ grad_inverse = id
    assert torch.allclose(leg.grad_inverse(g), x, rtol=1e-8, atol=1e-10)
    # directional derivatives of R_a match ⟨∇R_a, e⟩ (central differences)
    h = 1e-5
    for e in _dirs(x):
        fd = (leg.value(x + h * e) - leg.value(x - h * e)) / (2 * h)
        assert float(fd) == pytest.approx(float((g * e).sum()), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("make", FAMILIES, ids=IDS)
def test_hessian_and_dual_hessian(make):
    leg, x = make()
    H = leg.hess(x)
    h = 1e-6
    m = x.numel()
    Hm = H.reshape(m, m)
    for _j, e in enumerate(_dirs(x)):
        fd = (leg.grad(x + h * e) - leg.grad(x - h * e)) / (2 * h)
        got = (H.reshape(*x.shape, *x.shape) * e).sum(tuple(range(-x.dim(), 0))) if x.dim() == 2 else Hm @ e
        assert torch.allclose(got, fd, rtol=1e-5, atol=1e-6)
    mu = leg.grad(x)
    Dq = leg.dual_hess(mu)
    if leg.separable:
        assert torch.allclose(Dq * torch.diagonal(Hm), torch.ones(m, dtype=D), rtol=1e-8)
    elif x.dim() == 1:
        assert torch.allclose(Dq @ Hm, torch.eye(m, dtype=D), atol=1e-8)
    # strict convexity: positive definite metric (symmetric directions for matrices)
    E = _dirs(x).reshape(m, m)
    assert float(torch.linalg.eigvalsh(E @ Hm @ E.T + 1e-12 * torch.eye(m, dtype=D)).max()) > 0
    assert float(torch.linalg.eigvalsh(0.5 * (Hm + Hm.T)).min()) >= -1e-10


@pytest.mark.parametrize("make", FAMILIES, ids=IDS)
def test_conjugate_quadrature_and_bregman(make):
    leg, x = make()
    mu = leg.grad(x)
    dims = tuple(range(-x.dim(), 0))
    # Fenchel–Young equality R(x) + Q(μ) = ⟨μ, x⟩ at μ = ∇R(x)
    assert float(leg.value(x) + leg.conjugate(mu)) == pytest.approx(float((mu * x).sum(dims)), rel=1e-9, abs=1e-10)
    # R_a from the mirror map alone (quadrature) agrees with value
    assert float(leg.value_by_quadrature(x)) == pytest.approx(float(leg.value(x)), rel=1e-7, abs=1e-9)
    # the minimiser has zero gradient and is the smallest value
    xs = leg.minimizer()
    assert torch.allclose(leg.grad(xs), torch.zeros_like(xs), atol=1e-9)
    assert float(leg.value(xs)) < float(leg.value(x))
    # Bregman divergence: ≥ 0, zero on the diagonal, D(x, x*) = R(x) − R(x*)
    assert float(leg.bregman(x, x)) == pytest.approx(0.0, abs=1e-10)
    assert float(leg.bregman(xs, x)) > 0
    assert float(leg.bregman(x, xs)) == pytest.approx(float(leg.value(x) - leg.value(xs)), rel=1e-8, abs=1e-10)


def test_eq9_closed_form_values():
    m0 = torch.tensor([1.0, 0.3, 0.0], dtype=D)
    w0 = torch.tensor([0.2, -0.9, 0.7], dtype=D)
    a = -0.8
    leg = G.HyperbolicEntropy.from_mw(m0, w0, a)
    x0 = (m0 * w0).numpy()
    g0 = 0.5 * np.abs(m0.numpy() ** 2 - w0.numpy() ** 2)
    ga = np.exp(2 * a) * g0
    x = np.array([0.5, -1.5, 0.05])
    R = 0.5 * np.sum(x * np.arcsinh(x / ga) - np.sqrt(x**2 + ga**2) - x * np.arcsinh(x0 / g0))
    assert float(leg.value(torch.tensor(x, dtype=D))) == pytest.approx(R, rel=1e-12)
    # positional bias x*_a = e^{2a} x_0 and R_a(x*_a) = −e^{2a}(m_0² + w_0²)/4
    assert np.allclose(leg.minimizer().numpy(), np.exp(2 * a) * x0, rtol=1e-12, atol=1e-15)
    assert float(leg.value(leg.minimizer())) == pytest.approx(
        float(-np.exp(2 * a) / 4 * (m0**2 + w0**2).sum()), rel=1e-12
    )
    # contracting: ∂_a R_a(x) = −Σ sqrt(x² + γ_a²) ≤ 0
    h = 1e-6
    xt = torch.tensor(x, dtype=D)
    da = (
        G.HyperbolicEntropy.from_mw(m0, w0, a + h).value(xt) - G.HyperbolicEntropy.from_mw(m0, w0, a - h).value(xt)
    ) / (2 * h)
    assert float(da) == pytest.approx(-np.sum(np.sqrt(x**2 + ga**2)), rel=1e-6)


def test_eq10_and_eq17_closed_forms():
    x0 = torch.tensor([0.5, 2.0], dtype=D)
    a = -0.6
    leg = G.CoupledEntropy(x0, a)  # m0 = w0 = sqrt(x0)
    x = torch.tensor([0.3, 1.7], dtype=D)
    R = 0.5 * (x * torch.log(x) - x - x * torch.log(x0) - 2 * a * x).sum()
    assert float(leg.value(x)) == pytest.approx(float(R), rel=1e-12)
    assert torch.allclose(leg.minimizer(), math.exp(2 * a) * x0)
    # Eq. (17) in the eigenbasis of W_0, and its nuclear-norm form for W_0 = α_0 I
    Q, _ = torch.linalg.qr(rnd(3, 3, seed=1))
    lam0 = torch.tensor([0.5, 1.0, 2.0], dtype=D)
    lam = torch.tensor([0.2, 1.5, 0.7], dtype=D)
    sp = G.SpectralEntropy(Q @ torch.diag(lam0) @ Q.T, a)
    W = Q @ torch.diag(lam) @ Q.T
    R17 = 0.25 * (lam * torch.log(lam) - lam - lam * torch.log(lam0) - 2 * a * lam).sum()
    assert float(sp.value(W)) == pytest.approx(float(R17), rel=1e-10)
    M = Q @ torch.diag(torch.tensor([0.1, -0.3, 0.2], dtype=D)) @ Q.T
    lam_t = torch.linalg.eigvalsh(sp.grad_inverse(M))
    expected = torch.sort(lam0 * math.exp(2 * a) * torch.exp(4 * torch.tensor([0.1, -0.3, 0.2], dtype=D)))[0]
    assert torch.allclose(lam_t, expected, rtol=1e-10)
    iso = G.SpectralEntropy(0.3 * torch.eye(3, dtype=D), a)
    nuc = -0.25 * (math.log(0.3) + 2 * a) * float(lam.sum())
    assert float(iso.value(W)) == pytest.approx(float(0.25 * (lam * torch.log(lam) - lam).sum()) + nuc, rel=1e-10)
    assert iso.nuclear_coefficient() == pytest.approx(-0.25 * (math.log(0.3) + 2 * a))


def test_eq11_matches_its_literal_formula_and_the_flow():
    k, a = 2, -0.5
    rep = G.PowerDiff(2, k=k)
    w0 = rep.init(scale=0.9, x0=torch.tensor([0.3, -0.1], dtype=D))
    p = rep.unpack(w0)
    leg = rep.legendre(w0, a)
    mu = torch.tensor([0.2, -0.35], dtype=D)
    kap = 4 * k * (k - 1)
    cu, cv = p["u"] ** (2 - 2 * k), p["v"] ** (2 - 2 * k)
    x_lit = (cu - kap * (mu + a)) ** (-k / (k - 1)) - (cv + kap * (mu - a)) ** (-k / (k - 1))  # Eq. (11)
    assert torch.allclose(leg.grad_inverse(mu), x_lit, rtol=1e-12)
    lo, hi = leg.dual_domain()
    assert torch.allclose(lo, a - cv / kap) and torch.allclose(hi, cu / kap - a)
    # the generic commuting-flow path (RK4 + Newton) gives the same mirror map
    flow = rep.generic_legendre(w0, a)
    x = torch.tensor([0.25, -0.4], dtype=D)
    assert torch.allclose(flow.grad(x), leg.grad(x), rtol=1e-7, atol=1e-9)


def test_logcosh_closed_form():
    u0 = torch.tensor([1.2, 0.7], dtype=D)
    v0 = torch.tensor([0.9, 0.7], dtype=D)
    a = -0.1
    leg = G.LogCoshLegendre(u0, v0, a)
    x = torch.tensor([0.4, -2.0], dtype=D)
    A = (u0**2 + v0**2 + 4 * a) / 4
    B = (v0**2 - u0**2) / 4
    assert float(leg.value(x)) == pytest.approx(float((A * torch.log(torch.cosh(x)) + B * x).sum()), rel=1e-12)
    xs = leg.minimizer()
    assert torch.allclose(torch.tanh(xs), (u0**2 - v0**2) / (u0**2 + v0**2 + 4 * a))
    lo, hi = leg.dual_domain()
    assert torch.allclose(hi - lo, (u0**2 + v0**2) / 2 + 2 * a)
    with pytest.raises(ValueError, match="left its domain"):
        G.LogCoshLegendre(u0, v0, -1.0)


@pytest.mark.slow
def test_quadratic_and_flow_paths_reproduce_eq9():
    n = 3
    rep = G.get("mw", n)
    w0 = rep.init(scale=0.9, x0=torch.tensor([0.2, -0.4, 0.0], dtype=D))
    a = -0.4
    eq9 = rep.legendre(w0, a)
    quad = G.Quadratic.from_mw(n).legendre(w0, a)
    x = torch.tensor([0.5, -0.1, 0.3], dtype=D)
    assert torch.allclose(quad.grad(x), eq9.grad(x), rtol=1e-9)
    assert float(quad.value(x)) == pytest.approx(float(eq9.value(x)), rel=1e-9)  # same normalisation Q = ¼‖w‖²
    assert torch.allclose(quad.minimizer(), eq9.minimizer(), atol=1e-12)
    flow = G.legendre((rep.g, rep.h), w0, a)
    assert torch.allclose(flow.grad(x), eq9.grad(x), rtol=1e-7, atol=1e-9)
    # the flow path is normalised to R_a(x*) = 0
    assert float(flow.value(x)) == pytest.approx(float(eq9.value(x) - eq9.value(eq9.minimizer())), rel=1e-6)


@pytest.mark.parametrize("a", [0.0, -1.0, -10.0, -50.0])
@pytest.mark.parametrize("scale", [1e-12, 1.0])
def test_extremes_stay_finite(a, scale):
    xs = torch.tensor([0.0, 1e-30, -1e-8, 1.0, -3.0, 1e6, -1e6], dtype=D)
    n = xs.numel()
    for rep in (G.get("mw", n), G.PowerDiff(n, k=2), G.PowerDiff(n, k=3), G.PowerDiff(n, k=1)):
        leg = rep.legendre(rep.init(scale=scale), a)
        for out in (leg.value(xs), leg.grad(xs), leg.hess_diag(xs)):
            assert bool(torch.isfinite(out).all()), (rep.name, a, scale, out)
        if scale == 1.0 or isinstance(leg, G.HyperbolicEntropy):
            # (for u^(2k) with a 1e-12 init, μ sits within rounding of the dual boundary: x(μ) is ill-posed)
            back = leg.grad_inverse(leg.grad(xs))
            big = xs.abs() >= 1e-8
            assert torch.allclose(back[big], xs[big], rtol=1e-6), (rep.name, a, scale)
    pos = xs.abs()[1:]
    cp = G.get("mw-coupled", pos.numel())
    leg = cp.legendre(cp.init(scale=scale), a)
    for out in (leg.value(pos), leg.grad(pos), leg.hess_diag(pos), leg.grad_inverse(leg.grad(pos))):
        assert bool(torch.isfinite(out).all())
    q = G.Quadratic.from_mw(3).legendre(
        G.get("mw", 3).init(scale=scale, x0=torch.tensor([0.0, 0.5, -1.0]) * scale**2), a
    )
    xq = torch.tensor([1e6, -1e6, 0.0], dtype=D)
    for out in (q.value(xq), q.grad(xq), q.hess(xq)):
        assert bool(torch.isfinite(out).all())
    sp = G.SpectralEntropy(scale**2 * torch.eye(2, dtype=D), a)
    W = torch.tensor([[1e6, 1.0], [1.0, 1e-3]], dtype=D)
    assert bool(torch.isfinite(sp.value(W))) and bool(torch.isfinite(sp.grad(W)).all())
    assert torch.allclose(sp.grad_inverse(sp.grad(W)), W, rtol=1e-8)


def test_logcosh_extremes_within_its_range():
    rep = G.LogDiff(3)
    w0 = rep.init(scale=10.0)  # u0 = v0 = 10: R_a defined for a > −50
    for a in (0.0, -10.0, -49.9):
        leg = rep.legendre(w0, a)
        x = torch.tensor([0.0, 1e6, -1e6], dtype=D)
        for out in (leg.value(x), leg.grad(x), leg.hess_diag(x)):
            assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("make", FAMILIES, ids=IDS)
def test_float32_in_float32_out(make):
    leg, x = make()
    x32 = x.to(torch.float32)
    assert leg.value(x32).dtype == torch.float32
    g32 = leg.grad(x32)
    assert g32.dtype == torch.float32 and leg.hess(x32).dtype == torch.float32
    assert torch.allclose(g32.double(), leg.grad(x32.double()), rtol=1e-5, atol=1e-6)
    assert leg.grad_inverse(g32).dtype == torch.float32


def test_outside_the_domain():
    leg, _ = mw_coupled()
    bad = torch.tensor([0.5, -0.1, 0.2], dtype=D)
    assert float(leg.value(bad)) == math.inf
    vals = leg.value(torch.stack([bad, torch.tensor([0.5, 0.1, 0.2], dtype=D)]))
    assert vals[0] == math.inf and torch.isfinite(vals[1])
    with pytest.raises(G.OutsideDomainError, match="outside the domain.*sign of x_0"):
        leg.grad(bad)
    with pytest.raises(ValueError, match="outside the domain"):
        leg.hess(bad)
    sp = G.SpectralEntropy(torch.eye(2, dtype=D), -0.1)
    notpd = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=D)
    assert float(sp.value(notpd)) == math.inf
    with pytest.raises(G.OutsideDomainError, match="positive definite"):
        sp.grad(notpd)
    pw, _ = power2()
    lo, hi = pw.dual_domain()
    with pytest.raises(G.OutsideDomainError, match="dual variable"):
        pw.grad_inverse(hi + 0.1)
    assert float(pw.conjugate(hi + 0.1)) == math.inf
    # m⊙w as a quadratic parameterization with a coupled init: dom R_a is the open cone x > 0
    q = G.Quadratic.from_mw(2).legendre(torch.ones(4, dtype=D), -0.3)
    assert torch.isfinite(q.value(torch.tensor([0.3, 2.0], dtype=D)))
    far = torch.tensor([0.3, -0.5], dtype=D)
    assert float(q.value(far)) == math.inf
    with pytest.raises(G.OutsideDomainError, match="open cone"):
        q.grad(far)
    mixed = G.get("mw", 2)
    with pytest.raises(ValueError, match="some coordinates"):
        mixed.legendre(mixed.pack(m=[1.0, 1.0], w=[1.0, 0.0]), -0.1)
    with pytest.raises(ValueError, match="a must be finite"):
        G.get("mw", 1).legendre(G.get("mw", 1).init(), float("nan"))


def test_float32_results_that_overflow_say_so():
    """R_a is evaluated in float64; a value that does not fit the caller's float32 raises instead of inf."""
    rep = G.get("mw", 1)
    leg = rep.legendre(rep.init(scale=1.0), -1.0)
    x64 = torch.tensor([1e37], dtype=torch.float64)
    assert float(leg.value(x64)) > torch.finfo(torch.float32).max  # fits float64
    with pytest.raises(G.PrecisionOverflow, match="overflows torch.float32"):
        leg.value(x64.float())
    assert torch.isfinite(leg.grad(x64.float())).all()  # ∇R_a(x) ≈ log x fits: returned in float32
    assert leg.value(torch.tensor([-1e3, 2.0], dtype=torch.float32)).dtype == torch.float32

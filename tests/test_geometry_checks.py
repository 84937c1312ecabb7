"""Lie brackets, commuting and regular checks (Def. 3.1–3.3), Corollary 3.12, Corollary D.1, Theorem D.2."""

import pytest
import sympy as sp
import torch

from mirrorflow import geometry as G
from mirrorflow.geometry.checks import gradient_field

torch.set_num_threads(1)
D = torch.float64


def rnd(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def test_lie_bracket_of_simple_fields():
    X = lambda w: torch.stack([torch.ones_like(w[0]), torch.zeros_like(w[0])])  # noqa: E731  ∂_x
    Y = lambda w: torch.stack([torch.zeros_like(w[0]), w[0]])  # noqa: E731  x ∂_y
    w = torch.tensor([0.7, -1.3], dtype=D)
    assert torch.allclose(G.lie_bracket(X, Y, w), torch.tensor([0.0, 1.0], dtype=D))
    assert torch.allclose(G.lie_bracket(Y, X, w), torch.tensor([0.0, -1.0], dtype=D))


@pytest.mark.parametrize("depth", [3, 4])
def test_theorem_d2_numerically(depth):
    """[∇g_i, ∇h] = (2 − D)∇g_i for g = w_1⊙⋯⊙w_D and h = ½Σ‖w_k‖²."""
    rep = G.DeepProduct(2, depth)
    w = rnd(rep.d, seed=depth)
    for i in range(2):
        gi = gradient_field(lambda v, i=i: rep.g(v)[i])
        br = G.lie_bracket(gi, gradient_field(rep.h), w)
        assert torch.allclose(br, (2 - depth) * gi(w).detach(), atol=1e-12)


def test_builtin_parameterizations_commute_with_their_regularizer():
    for rep in (G.get("mw", 3), G.PowerDiff(3, k=2), G.PowerDiff(2, k=3), G.get("log", 3)):
        w0 = rep.init(scale=0.9, x0=torch.tensor([0.2, -0.1, 0.3][: rep.n], dtype=D))
        rep_ = G.check_commuting(rep.g, rep.h, w0=w0)
        assert rep_.commuting and max(rep_.worst.values()) < 1e-12, (rep.name, rep_.worst)
        assert G.is_regular(rep.g, w0)


def test_negative_cases_name_the_bracket():
    deep = G.get("depth3", 2)
    w0 = deep.init(scale=1.0, x0=0.3)
    report = G.check_commuting(deep.g, deep.h, w0=w0)
    assert not report.commuting
    assert report.first_nonzero == "[∇g_0, ∇h]"
    assert report.worst["[∇g_0, ∇h]"] == pytest.approx(1 / 3)  # ‖−∇g‖ / (‖∇g‖ + ‖2∇g‖)
    assert G.is_commuting(deep.g, None, w0=w0)  # without weight decay depth 3 commutes
    with pytest.raises(G.NonCommutingError, match=r"\[∇g_0, ∇h\] ≠ 0.*Theorem D.2"):
        deep.legendre(w0, -0.5)
    assert isinstance(deep.legendre(w0, 0.0), G.FlowLegendre)
    lin = G.get("linear", 2)
    with pytest.raises(G.NonCommutingError, match=r"\[∇g_0, ∇h\] ≠ 0.*Cor. D.1"):
        lin.legendre(lin.init(), -0.1)
    # the generic path with user callables
    g = lambda w: w[..., :2] * w[..., 2:4] * w[..., 4:]  # noqa: E731
    h = lambda w: 0.5 * (w * w).sum(-1)  # noqa: E731
    with pytest.raises(G.NonCommutingError, match=r"\[∇g_0, ∇h\]"):
        G.legendre((g, h), torch.ones(6, dtype=D), -0.2)


def test_quadratic_commuting_matrices():
    d = 4
    Q = torch.linalg.qr(rnd(d, d))[0]
    A = torch.stack([Q @ torch.diag(rnd(d, seed=i + 1)) @ Q.T for i in range(2)])
    rep = G.Quadratic(A)
    w0 = rep.init(scale=1.0)
    assert G.is_commuting(rep.g, rep.h, w0=w0)
    S = rnd(d, d, seed=9)
    bad = G.Quadratic(torch.stack([A[0], S + S.T]))
    assert not G.is_commuting(bad.g, bad.h, w0=w0)
    with pytest.raises(G.NonCommutingError, match=r"\[∇g_0, ∇g_1\] ≠ 0"):
        bad.legendre(w0, -0.1)
    badB = G.Quadratic(A, S @ S.T + torch.eye(d, dtype=D))
    with pytest.raises(G.NonCommutingError, match=r"\[∇g_0, ∇h\] ≠ 0"):
        badB.legendre(w0, -0.1)
    with pytest.raises(ValueError, match="linearly independent"):
        G.Quadratic(torch.stack([A[0], 2 * A[0]])).legendre(w0, -0.1)


def test_matrix_sensing_commutes_only_for_commuting_sensing_matrices():
    n = 3
    Q = torch.linalg.qr(rnd(n, n, seed=2))[0]
    good = torch.stack([Q @ torch.diag(rnd(n, seed=i + 3)) @ Q.T for i in range(2)])
    S = rnd(2, n, n, seed=5)
    bad = S + S.transpose(1, 2)
    uut = G.get("uut", n)
    U0 = torch.eye(n, dtype=D) + 0.1 * rnd(n, n, seed=6)
    for A, expect in ((good, True), (bad, False)):
        g = lambda w, A=A: torch.einsum("mij,...ij->...m", A, uut.point(uut.g(w)))  # noqa: E731
        assert G.is_commuting(g, uut.h, w0=U0.reshape(-1)) is expect
    # all n² entries of UUᵀ as outputs: symmetric duplicates make ∂g rank-deficient (not regular, Def. 3.1)
    assert not G.is_regular(uut.g, U0.reshape(-1))


def test_regularity():
    mw = G.get("mw", 2)
    assert G.is_regular(mw.g, mw.pack(m=[1.0, 0.5], w=[0.0, 0.3]))
    assert not G.is_regular(mw.g, mw.pack(m=[1.0, 0.0], w=[0.3, 0.0]))  # m_1 = w_1 = 0: stuck coordinate
    assert G.jacobian_rank(mw.g, mw.pack(m=[1.0, 0.0], w=[0.3, 0.0])) == 1


def test_corollary_3_12_symbolic():
    u = sp.Symbol("u", positive=True)
    k = 3
    assert G.separable_admissible(u ** (2 * k), u ** (2 * k), u) == (True, 1)  # Example 3.14
    assert G.separable_admissible(-(u**2), u**2, u) == (True, -1)  # Example 3.13: h = u² + v² for −v²
    assert G.separable_admissible(sp.log(u), sp.log(u), u) == (True, 1)  # App. E
    ok, W = G.separable_admissible(u**2, u**4, u)
    assert not ok and sp.simplify(W - 16 * u**3) == 0
    ok, W = G.separable_admissible(u**2, sp.exp(u), u)
    assert not ok and W != 0
    assert G.wronskian(sp.exp(2 * u), 5 * sp.exp(2 * u) + 7, u) == 0


@pytest.mark.parametrize("D_", [1, 2, 3, 4, 5])
def test_theorem_d2_symbolic(D_):
    bracket, factor = G.depth_bracket(D_)
    assert factor == 2 - D_


def test_verdict_for_user_input():
    m1, w1, m2, w2 = sp.symbols("m1 w1 m2 w2")
    v = sp.Rational(1, 2) * (m1**2 + w1**2 + m2**2 + w2**2)
    ok = G.verdict([m1 * w1, m2 * w2], v, variables=[m1, w1, m2, w2])
    assert ok.commuting and ok.regular and "Theorem 3.6 applies" in ok.message
    m, w, q = sp.symbols("m w q")
    bad = G.verdict([m * w * q], sp.Rational(1, 2) * (m**2 + w**2 + q**2), variables=[m, w, q])
    assert not bad.commuting and "[∇g_0, ∇h]" in bad.message
    assert sp.simplify(bad.nonzero["[∇g_0, ∇h]"] + sp.Matrix([w * q, m * q, m * w])) == sp.zeros(3, 1)
    x1, x2 = sp.symbols("x1 x2")
    lin = G.verdict([x1, x2], (x1**2 + x2**2) / 2, variables=[x1, x2])
    assert not lin.commuting  # Cor. D.1
    u, vv = sp.symbols("u v", positive=True)
    adm = G.verdict([u**2 - vv**2], u**2 + 2 * vv**2, variables=[u, vv])  # c = (1, −2): admissible
    assert adm.commuting
    notadm = G.verdict([u**2 - vv**2], u**4 + vv**2, variables=[u, vv])
    assert not notadm.commuting
    # callables, checked numerically near w0
    num = G.verdict(
        lambda t: t[:1] ** 2 - t[1:] ** 2, lambda t: t[0] ** 4 + t[1] ** 2, w0=torch.tensor([0.8, 0.6], dtype=D)
    )
    assert not num.commuting and "[∇g_0, ∇h]" in num.message
    num_ok = G.verdict(
        lambda t: t[:1] ** 2 - t[1:] ** 2, lambda t: t[0] ** 2 + 2 * t[1] ** 2, w0=torch.tensor([0.8, 0.6], dtype=D)
    )
    assert num_ok.commuting and num_ok.regular


def test_commuting_check_samples_away_from_w0():
    """h = ½‖w‖² + relu(m₁ − 1.5)³ with g = m⊙w commutes near w₀ = (1, 1, 0, 0) but not where m₁ > 1.5:
    the check samples far points too and rejects it, naming the bracket; ½‖w‖² alone passes."""
    import torch

    from mirrorflow.geometry import check_commuting

    n = 2

    def g(p):
        return p[:n] * p[n:]

    w0 = torch.cat([torch.ones(n), torch.zeros(n)]).double()
    kinked = check_commuting(g, lambda p: 0.5 * (p * p).sum() + torch.relu(p[0] - 1.5) ** 3, w0=w0)
    assert not kinked.commuting and kinked.first_nonzero == "[∇g_0, ∇h]" and float(kinked.at[0]) > 1.5
    smooth = check_commuting(g, lambda p: 0.5 * (p * p).sum(), w0=w0)
    assert smooth.commuting and smooth.n_points > 10

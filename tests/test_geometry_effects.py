"""The three effects as functions of a (positional bias, type of bias, range) and the ``mirrorflow legendre`` CLI."""

import math

import pytest
import torch

from mirrorflow import geometry as G
from mirrorflow.cli import main

torch.set_num_threads(1)
D = torch.float64
A_VALUES = (0.0, -0.5, -1.0, -2.0)


def test_mw_positional_bias_and_l2_to_l1():
    """Eq. (9), Fig. 2: x*_a = e^{2a}x_0 slides to 0; τ(a) = γ_a/sqrt(s² + γ_a²) falls (L2 → L1)."""
    rep = G.get("mw", 1)
    w0 = rep.init(scale=1.0, x0=0.8)
    rows = G.three_effects(rep, w0, A_VALUES, scale=1.0)
    for r in rows:
        assert float(r["minimizer"][0]) == pytest.approx(0.8 * math.exp(2 * r["a"]), rel=1e-12)
        assert math.isinf(float(r["dual_width"][0]))
    taus = [r["type"] for r in rows]
    assert all(t1 > t2 for t1, t2 in zip(taus, taus[1:]))
    zero = G.get("mw", 1)
    for a in A_VALUES:
        leg = zero.legendre(zero.init(scale=1.0), a)  # x_0 = 0, γ_0 = ½
        ga = 0.5 * math.exp(2 * a)
        assert G.type_of_bias(leg, 1.0) == pytest.approx(ga / math.hypot(1.0, ga), rel=1e-10)
        assert float(G.positional_bias(leg)[0]) == 0.0


def test_coupled_entropy_and_spectral_effects():
    rep = G.get("mw-coupled", 2)
    rows = G.three_effects(rep, rep.init(scale=1.0), A_VALUES, scale=0.5)
    taus = [r["type"] for r in rows]
    assert all(t1 > t2 for t1, t2 in zip(taus, taus[1:])) and taus[-1] < 0.1
    assert torch.allclose(rows[2]["minimizer"], torch.full((2,), math.exp(-2.0), dtype=D))
    sp = G.get("uut", 2)
    leg = sp.legendre(sp.init(scale=0.5), -1.0)
    assert torch.allclose(G.positional_bias(leg), 0.25 * math.exp(-2.0) * torch.eye(2, dtype=D))
    assert 0 < G.type_of_bias(leg, 0.1) < 1


def test_log_range_shrinks_and_type_is_unchanged():
    """App. E: the dual interval (width (u_0² + v_0²)/2 + 2a) shrinks; balanced init is a pure rescaling."""
    rep = G.get("log", 1)
    w0 = rep.init(scale=1.5)
    rows = G.three_effects(rep, w0, (0.0, -0.3, -0.6), scale=1.0)
    widths = [float(r["dual_width"][0]) for r in rows]
    assert widths == pytest.approx([2.25, 1.65, 1.05])
    assert [r["type"] for r in rows] == pytest.approx([1 / math.cosh(1.0) ** 2] * 3)


def test_power_effects():
    """u^(2k) − v^(2k): R_a develops walls ≈ |a||x| (τ falls); the dual interval widens in our sign convention."""
    rep = G.PowerDiff(1, k=2)
    rows = G.three_effects(rep, rep.init(scale=1.0), A_VALUES, scale=1.0)
    taus = [r["type"] for r in rows]
    widths = [float(r["dual_width"][0]) for r in rows]
    assert all(t1 > t2 for t1, t2 in zip(taus, taus[1:]))
    assert widths == pytest.approx([2 / 8 - 2 * a for a in A_VALUES])
    leg = rep.legendre(rep.init(scale=1.0), -2.0)
    slope = float(leg.grad(torch.tensor([1.0], dtype=D))[0])
    assert slope == pytest.approx(2.0, rel=0.05)  # ∇R_a ≈ |a| sign(x) away from 0


def test_cli_legendre_prints_the_three_effects_and_draws(tmp_path, capsys):
    out = tmp_path / "fig" / "R.png"
    main(["legendre", "mw", "--a", "-0.5,-1,-2", "--x0", "0.8", "--out", str(out)])
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| -")]
    assert len(rows) == 3
    expected = G.three_effects(G.get("mw", 1), G.get("mw", 1).init(scale=1.0, x0=0.8), (-0.5, -1.0, -2.0))
    for line, r in zip(rows, expected):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[0]) == r["a"]
        assert float(cells[1]) == pytest.approx(float(r["minimizer"][0]), rel=1e-5)
        assert float(cells[2]) == pytest.approx(r["type"], rel=1e-5)
        assert cells[3] == "inf"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["legendre", "foo"],
            "unknown reparameterization 'foo' (known: mw, mw-coupled, uut, power, log, linear, depth3)",
        ),
        (["legendre", "mw", "--a", "x,1"], "--a: expected comma-separated numbers"),
        (["legendre", "linear"], "[∇g_0, ∇h] ≠ 0"),
        (["legendre", "depth3", "--a", "-1"], "Theorem D.2"),
        (["legendre", "log", "--a", "-2"], "left its domain"),
    ],
)
def test_cli_legendre_bad_input_is_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_docs_examples_run():
    """The python blocks of docs/geometry.md run, and the predicted limit matches training (Theorem 3.11)."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "geometry.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    ns: dict = {}
    exec(blocks[0], ns)
    gap = float((ns["x_train"] - ns["x_pred"]).norm() / ns["x_pred"].norm())
    assert gap < 1e-3
    exec(blocks[1], {})

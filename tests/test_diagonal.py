"""Diagonal linear networks (App. D, Figs. 8/9): batching, theory checks, and the paper's claims at small size.

Small setting used throughout: N = 20, d = 40, 3 non-zeros, init scale 1, η = 0.05, 1000 steps with
weight decay then 4000 without (a few seconds for all tests together).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from mirrorflow.config import build
from mirrorflow.engine.batched import run_batched, schedule_table
from mirrorflow.errors import ConfigError
from mirrorflow.experiments import diagonal as D
from mirrorflow.runtime import torch_threads
from mirrorflow.schedules import turn_off

SMALL = dict(n_samples=20, dim=40, sparsity=3, steps=5000, off_at=1000, log_every=50)


def small(model: str, wds) -> D.Config:
    return build(D.Config, {**SMALL, "model": model, "weight_decays": wds})


@pytest.fixture(scope="module")
def sweeps():
    """One batched weight-decay sweep per parameterization (shared by the claim tests)."""
    out = {}
    for model, wds in (("linear", (0.0, 0.1, 0.5, 2.0)), ("mw", (0.0, 0.03, 0.1, 0.3)), ("mwv", (0.0, 0.03, 0.1, 0.3))):
        cfg = small(model, wds)
        trace, data = D.run_sweep(cfg)
        out[model] = (cfg, trace, data, D.summarize(cfg, trace, data))
    return out


def test_data_is_underdetermined_sparse_and_exactly_labelled():
    data = D.make_data(20, 40, 3, seed=0)
    assert data.Z.shape == (20, 40) and data.Z.dtype == torch.float64
    nz = torch.nonzero(data.x_star).flatten().tolist()
    assert nz == [0, 1, 2]
    mags = data.x_star[:3].abs()
    assert bool((mags[:-1] >= mags[1:]).all()) and float(mags.min()) >= 0.5  # x_1 is the largest
    assert torch.allclose(data.Z @ data.x_star, data.y)
    assert data.ratio_star == pytest.approx(float(mags.sum() / mags.norm()))
    again = D.make_data(20, 40, 3, seed=0)
    assert torch.equal(again.Z, data.Z)


def test_all_parameterizations_start_at_zero_with_the_same_scale():
    data = D.make_data(20, 40, 3, seed=0)
    for model in D.MODELS:
        p = D.DiagonalNetwork(data, model, n_configs=2, init_scale=0.7)
        s = p.init_state()
        assert torch.count_nonzero(p.x_of(s)) == 0
        assert max(float(v.abs().max()) for v in s.values()) == (0.0 if model == "linear" else 0.7)


def test_batched_sweep_equals_a_loop_over_single_configs():
    cfg = replace(small("mw", (0.0, 0.05, 0.4)), steps=600, off_at=300)
    trace, data = D.run_sweep(cfg)
    for c, lam in enumerate(cfg.weight_decays):
        one, _ = D.run_sweep(replace(cfg, weight_decays=(lam,)), data=data)
        for name in ("dist", "l1_l2", "train_loss", "x1", "a"):
            np.testing.assert_allclose(trace.metrics[name][c], one.metrics[name][0], rtol=1e-12, atol=1e-14)


def test_explicit_gradients_match_autograd():
    data = D.make_data(6, 10, 2, seed=3)
    for model in D.MODELS:
        p = D.DiagonalNetwork(data, model, n_configs=1, init_scale=0.9, k=2)
        g = torch.Generator().manual_seed(1)
        state = {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in p.init_state().items()}
        lr = torch.tensor([1e-3], dtype=torch.float64)
        new = p.step(state, torch.zeros(1, dtype=torch.float64), lr, 0)
        params = {k: v.clone().requires_grad_(True) for k, v in state.items()}
        x = p.x_of(params)
        loss = 0.5 * ((x @ data.Z.T - data.y) ** 2).mean()
        grads = torch.autograd.grad(loss, list(params.values()))
        for (k, v), gk in zip(state.items(), grads):
            torch.testing.assert_close(new[k], v - 1e-3 * gk, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("model, penalty, k", [("mwv", "l2", 2), ("power", "matched", 3), ("power", "matched", 1)])
def test_step_is_a_gradient_step_then_the_exact_decay_flow(model, penalty, k):
    """θ ← e^{−ηλ}θ' for h = ½‖θ‖²; u ← sign(u')(|u'|^{2−2k} + 4k(k−1)ηλ)^{−1/(2k−2)} for h = Σu^{2k} + v^{2k}
    (e^{−2ηλ} for k = 1), with θ' the gradient step."""
    data = D.make_data(6, 10, 2, seed=3)
    p = D.DiagonalNetwork(data, model, n_configs=2, init_scale=0.8, k=k, power_penalty=penalty)
    s = p.init_state()
    lr = torch.tensor([0.01, 0.01], dtype=torch.float64)
    plain = p.step(s, torch.zeros(2, dtype=torch.float64), lr, 0)["w"]
    decayed = p.step(s, torch.tensor([0.0, 3.0], dtype=torch.float64), lr, 0)["w"]
    torch.testing.assert_close(decayed[0], plain[0], rtol=0, atol=0)
    if penalty == "l2":
        expected = plain[1] * np.exp(-0.03)
    elif k == 1:
        expected = plain[1] * np.exp(-0.06)
    else:
        expected = torch.sign(plain[1]) * (plain[1].abs() ** (2 - 2 * k) + 4 * k * (k - 1) * 0.03) ** (-1 / (2 * k - 2))
    torch.testing.assert_close(decayed[1], expected, rtol=1e-13, atol=0)
    assert p.reparam is not None and p.exact


def test_mw_conserved_quantity_tracks_accumulated_regularization():
    """docs/theory.md#legendre-mw: m² − w² = e^{2a_t}(m_0² − w_0²) along the flow; GD's error is O(η) (halves
    with η)."""
    errors = []
    for lr, steps in ((0.01, 300), (0.005, 600)):
        cfg = replace(small("mw", (0.0, 0.1, 0.3)), steps=2 * steps, off_at=steps, lr=lr)
        trace, data = D.run_sweep(cfg)
        s = D.reparameterization("mw", cfg.dim).unpack(trace.final_state["w"])
        a = torch.as_tensor(trace.final("a")).view(-1, 1)
        assert trace.final("a") == pytest.approx([0.0, -0.3, -0.9])
        lhs = s["m"] ** 2 - s["w"] ** 2
        rhs = torch.exp(2 * a) * cfg.init_scale**2
        errors.append(float(((lhs - rhs).abs() / rhs).max()))
    assert errors[0] < 2e-2
    assert errors[1] < 0.6 * errors[0]


@pytest.mark.parametrize(
    "model, name, options",
    [("linear", "linear", {}), ("mw", "mw", {}), ("mwv", "depth3", {}), ("power", "power", {"k": 2, "penalty": "l2"})],
)
def test_models_are_the_geometry_families(model, name, options):
    """Each model is the registry's family (same g and pullback), and the exact-decay run agrees with plain
    gradient descent on f + λh (``decay="gradient"``) to first order: the gap halves with η at equal time."""
    from mirrorflow import geometry
    from mirrorflow.engine.reparam_regression import ReparamRegression

    data = D.make_data(8, 12, 2, seed=1)
    ours = D.DiagonalNetwork(data, model, 2, 0.9, k=options.get("k", 2), power_penalty=options.get("penalty", "l2"))
    rep = geometry.get(name, 12, **options)
    w = ours.init_state()["w"] + 0.1
    torch.testing.assert_close(ours.reparam.g(w), rep.g(w), rtol=0, atol=0)
    gaps = []
    for lr in (0.005, 0.0025) if model == "power" else (0.02, 0.01):
        steps = round(2.0 / lr)
        sched = [turn_off(0.0, 0), turn_off(1.0, steps // 2)]
        lam = schedule_table(sched, steps)
        with torch_threads(1):
            a = run_batched(ours, lam, lr, log_every=steps)
            plain = ReparamRegression(rep, data.Z, data.y, ours.w0, n_configs=2, decay="gradient")
            b = run_batched(plain, lam, lr, log_every=steps)
        xa, xb = ours.x_of(a.final_state), plain.x_of(b.final_state)
        assert float((xa[0] - xb[0]).abs().max()) < 1e-12  # λ = 0: the same step
        gaps.append(float((xa[1] - xb[1]).norm()))
    assert 0 < gaps[1] < 0.6 * gaps[0], gaps


@pytest.mark.slow
def test_theorem_3_11_prediction_matches_the_trained_mw_limit():
    """Theorem 3.11 via ``geometry.predict_limit``: x_∞ = argmin_{Zx=y} R_{a_∞}(x); the gap between the
    trained and the predicted limit is discretisation error, O(η) (it shrinks with η at equal a_∞)."""
    gaps = []
    for lr in (0.05, 0.02):  # same a_∞ = −1 and the same flow time after turn-off (160)
        cfg = replace(small("mw", (0.0, 0.05)), steps=round(20 / lr) + round(160 / lr), off_at=round(20 / lr), lr=lr)
        trace, data = D.run_sweep(cfg)
        rows = D.summarize(cfg, trace, data)
        preds = D.predicted_limits(cfg, trace, data)
        assert preds is not None
        for r, p in zip(rows, preds):
            assert r["converged"] and p["pred_converged"]
            assert p["pred_gap"] < 5e-3
        assert trace.final("a") == pytest.approx([0.0, -1.0])
        assert preds[0]["pred_dist"] > preds[1]["pred_dist"] + 0.2  # weight decay moved the limit towards x*
        gaps.append(max(p["pred_gap"] for p in preds))
    assert gaps[1] < 0.6 * gaps[0]


@pytest.mark.slow
def test_claim_a_linear_weight_decay_is_not_stored(sweeps):
    """(a): after turn-off every λ ends at the same min-L2-norm interpolant; its L1/L2 ratio is above x*'s."""
    cfg, trace, data, rows = sweeps["linear"]
    final = np.array([r["dist_final"] for r in rows])
    assert np.ptp(final) < 1e-8
    assert final[0] > 0.5
    assert all(r["train_loss_final"] < 1e-12 for r in rows)
    assert all(r["l1_l2_final"] > data.ratio_star + 1.0 for r in rows)
    # the minimum-norm solution: x = Z⁺y
    x_mn = torch.linalg.pinv(data.Z) @ data.y
    assert final[0] == pytest.approx(float((x_mn - data.x_star).norm()), rel=1e-8)


def test_claim_b_mw_larger_weight_decay_gets_closer_after_turn_off(sweeps):
    """(b): distance to x* after turn-off decreases with λ; the L1/L2 ratio approaches x*'s only after turn-off."""
    cfg, trace, data, rows = sweeps["mw"]
    final = [r["dist_final"] for r in rows]
    assert all(f1 > f2 for f1, f2 in zip(final, final[1:]))
    assert final[0] > 1.0 and final[-1] < 0.05
    big = rows[-1]  # λ = 0.3: far from x* at turn-off, close after
    assert big["dist_on"] > 0.5
    assert abs(big["l1_l2_final"] - data.ratio_star) < 0.2 * abs(big["l1_l2_on"] - data.ratio_star)
    assert rows[0]["l1_l2_final"] > data.ratio_star + 1.0  # no weight decay: L2-like, not sparse


def test_claim_c_depth3_small_decay_like_mw_large_decay_range_shrinking(sweeps):
    """(c): small λ ends near x*; large λ freezes the support: the ratio no longer changes after turn-off and
    x_1 ends neither at 0 nor at x*_1 (App. D)."""
    cfg, trace, data, rows = sweeps["mwv"]
    assert rows[0]["dist_final"] > 1.0
    assert rows[2]["dist_final"] < 1e-3  # λ = 0.1
    shrunk = rows[3]  # λ = 0.3
    assert shrunk["dist_final"] > 0.5 and shrunk["train_loss_final"] > 1e-2
    assert abs(shrunk["l1_l2_final"] - shrunk["l1_l2_on"]) < 1e-3
    x1, x1_star = shrunk["x1_final"], float(data.x_star[0])
    assert abs(x1) > 0.1 and abs(x1 - x1_star) > 0.1
    assert not shrunk["converged"]
    # the support froze: a true coordinate stays at 0 although the fit is not exact
    x = D.final_x(cfg, trace, data)[3]
    support = set(torch.nonzero(x.abs() > 1e-6).flatten().tolist())
    assert support < set(torch.nonzero(data.x_star).flatten().tolist())


def test_a_diverging_config_is_recorded_and_the_others_continue():
    cfg = replace(small("mw", (0.0, 0.1)), steps=400, off_at=200)
    data = D.make_data(cfg.n_samples, cfg.dim, cfg.sparsity, cfg.seed)
    problem = D.DiagonalNetwork(data, "mw", 2, cfg.init_scale)
    lam = schedule_table(cfg.schedules(), cfg.steps)
    with torch_threads(1):
        trace = run_batched(problem, lam, torch.tensor([0.05, 5.0], dtype=torch.float64), log_every=50)
    rows = D.summarize(cfg, trace, data)
    assert rows[1]["status"] == "diverged" and rows[1]["diverged_at"] is not None
    assert np.isnan(rows[1]["dist_final"])
    assert rows[0]["status"] == "finished" and np.isfinite(rows[0]["dist_final"])
    alone, _ = D.run_sweep(replace(cfg, weight_decays=(0.0,)), data=data)
    assert rows[0]["dist_final"] == pytest.approx(float(alone.final("dist")[0]), rel=1e-12)


def test_power_model_runs_and_default_step_size_is_per_model():
    cfg = build(D.Config, {**SMALL, "model": "power", "k": 2, "weight_decays": (0.0, 0.3), "steps": 600, "off_at": 300})
    assert cfg.step_size == 0.005 and small("mw", (0.0,)).step_size == 0.05
    trace, data = D.run_sweep(cfg)
    assert (trace.diverged_at < 0).all()
    assert trace.final("train_loss")[0] < trace.metrics["train_loss"][0, 0]


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"model": "deep"}, "model must be one of"),
        ({"dim": 10, "n_samples": 20}, "dim must exceed n_samples"),
        ({"weight_decays": "0.1,-1"}, "weight_decays must be non-negative"),
        ({"steps": 0}, "steps must be positive"),
        ({"steps": 100, "off_at": 101}, "off_at must be a step in 1..100 or a fraction"),
        ({"steps": 100, "off_at": 0}, "off_at=0.0 is step 0 of 100 steps: it must fall in 1..100"),
        ({"off_at": 1.5}, "off_at must be a step"),
        ({"steps_on": 0, "steps_off": 0}, "steps must be positive"),
        ({"steps_on": 10, "steps": 20}, "steps_on and steps: steps_on/steps_off are the old way"),
        ({"power_penalty": "l3"}, "power_penalty"),
        ({"bogus": 1}, "unknown config key 'bogus'"),
    ],
)
def test_bad_config_values_name_the_key(bad, match):
    with pytest.raises(ConfigError, match=match):
        build(D.Config, bad)


@pytest.mark.slow
def test_cli_run_and_reproduce_write_run_directories(tmp_path, capsys):
    from mirrorflow.cli import main

    out = tmp_path / "run"
    main(
        [
            "run",
            "diagonal",
            "model=mw",
            "n_samples=10",
            "dim=20",
            "sparsity=2",
            "steps=200",
            "off_at=100",
            "weight_decays=0,0.1",
            "--out",
            str(out),
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "mw" and len(summary["weight_decays"]) == 2
    assert {"config.yaml", "metrics.csv", "dist.png", "l1_l2.png", "train_loss.png", "x1.png"} <= {
        p.name for p in out.iterdir()
    }
    rep = tmp_path / "rep"
    main(
        [
            "reproduce",
            "diagonal",
            "n_samples=10",
            "dim=20",
            "sparsity=2",
            "steps=200",
            "off_at=0.5",
            "weight_decays=0,0.1",
            "--out",
            str(rep),
        ]
    )
    printed = capsys.readouterr().out
    assert "| mwv | 0.1 |" in printed and "| linear | 0 |" in printed
    names = {p.name for p in rep.iterdir()}
    assert {f"fig8{c}_dist.png" for c in "abc"} <= names and {f"fig9{c}_l1_l2.png" for c in "abc"} <= names
    assert (rep / "table.md").read_text() in printed


def test_cli_bad_override_is_one_line_error(tmp_path, capsys):
    from mirrorflow.cli import main

    with pytest.raises(SystemExit) as e:
        main(["reproduce", "diagonal", "models=linear,cubic", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cubic" in err[0]


# ----------------------------------------------------------------------------------- over seeds
def test_regimes_of_one_run():
    from mirrorflow.experiments.diagonal.studies import classify, ratio_constant, x1_witness

    row = dict(
        status="finished",
        converged=True,
        dist_final=1e-9,
        train_loss_final=1e-20,
        l1_l2_on=2.0,
        l1_l2_final=2.2,
        dist_change_last10pct=0.0,
    )
    assert classify(row, loss0=2.0, x_norm=1.5, x_star_norm=1.6) == "recovers x*"
    assert classify({**row, "dist_final": 1.7}, 2.0, 1.5, 1.6) == "interpolant"
    stuck = {**row, "converged": False, "train_loss_final": 1.6, "dist_final": 1.9}
    assert classify(stuck, 2.0, 1.5, 1.6) == "range shrinking"
    assert classify({**stuck, "dist_change_last10pct": 1e-3}, 2.0, 1.5, 1.6) == "other"  # still moving
    assert classify({**stuck, "train_loss_final": 1e-7}, 2.0, 1.5, 1.6) == "other"  # slowly fitting, not stuck
    assert classify(stuck, 2.0, 1e-40, 1.6) == "collapsed"
    assert classify({**row, "status": "diverged"}, 2.0, 1.5, 1.6) == "other"
    assert ratio_constant({"l1_l2_on": 1.0, "l1_l2_final": 1.0004}) and not ratio_constant(row)
    assert x1_witness(1.588, 1.395) and not x1_witness(1e-60, 1.395) and not x1_witness(1.39, 1.395)


@pytest.mark.slow
def test_reproduce_with_seeds_keeps_the_seed_table_first_and_counts_regimes(tmp_path):
    import json

    ov = {
        **{k: str(v) for k, v in SMALL.items()},
        "models": "mwv",
        "weight_decays": "0,0.1,1",
        "steps": "900",
        "off_at": "300",
    }
    plain = D.reproduce(tmp_path / "a", ov, progress=lambda k: None)
    both = D.reproduce(tmp_path / "b", {**ov, "seeds": "0,1,2"}, progress=lambda k: None)
    assert both.startswith(plain)
    seeds_md = (tmp_path / "b" / "seeds.md").read_text()
    assert seeds_md in both
    rows = [ln for ln in seeds_md.splitlines() if ln.startswith("| mwv |")]
    assert len(rows) == 3
    for ln in rows:  # the five regime counts of each λ add up to the number of seeds
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert sum(int(c.split("/")[0]) for c in cells[7:12]) == 3 and all(c.endswith("/3") for c in cells[7:14])
    data = json.loads((tmp_path / "b" / "seeds.json").read_text())
    per_seed = data["models"]["mwv"]
    assert [p["seed"] for p in per_seed] == [0, 1, 2]
    assert len({p["x1_star"] for p in per_seed}) == 3  # each seed its own x*
    assert per_seed[0]["rows"][0]["regime"] == "interpolant"  # λ = 0 at init scale 1: the dense interpolant


def test_bad_seeds_option_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match="seeds must be integers or ranges A..B, comma-separated"):
        D.reproduce(tmp_path / "x", {"seeds": "0,a"})


def test_track_logs_the_legendre_identity_residual_and_needs_a_commuting_model():
    """track=true: ‖∇R_{a_t}(x_t) − μ_t‖/‖μ_t‖ along the run (Theorem 3.6) is logged; it is O(η) for m⊙w."""
    from mirrorflow.errors import ConfigError

    cfg = build(
        D.Config,
        {
            "model": "mw",
            "n_samples": 10,
            "dim": 20,
            "sparsity": 2,
            "weight_decays": "0,0.1",
            "steps": 200,
            "off_at": 100,
            "log_every": 50,
            "track": "true",
            "device": "cpu",
        },
    )
    trace, _ = D.run_sweep(cfg)
    res = trace.metrics["identity_residual"][:, 1:]
    assert np.isfinite(res).all() and res.max() < 0.05 and res.max() > 0
    with pytest.raises(ConfigError, match="track=true needs a commuting reparameterization"):
        build(D.Config, {"model": "mwv", "track": "true"})

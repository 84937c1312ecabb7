"""Matrix sensing (Table 2) at a small size: the paper's claim, the batched engine, divergence, Cor. C.3."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from mirrorflow.engine.batched import schedule_table
from mirrorflow.experiments import matrix_sensing as ms
from mirrorflow.schedules import from_spec

SMALL = ms.Config(n=10, r=2, steps=1500, log_every=50)


@pytest.fixture(scope="module")
def table2():
    arms = ms.table2_arms(SMALL)
    res = ms.run_many([c for _, c in arms])
    return {lab: ms.summarize(c, r) for (lab, c), r in zip(arms, res)}


@pytest.mark.slow
def test_turn_off_recovers_ground_truth_better_than_constant_and_no_decay(table2):
    const = table2["Constant 0.01, no t-o"]
    none = table2["No weight decay"]
    for lab in (
        "Linear decay",
        "Cosine decay",
        "Constant 0.02, t-o",
        "Constant 0.2, t-o",
        "Constant 2, t-o",
        "Constant 20, t-o",
    ):
        s = table2[lab]
        assert s["status"] == "finished"
        assert s["rec_error"] < 0.1 * const["rec_error"], lab
        assert s["rec_error"] < 0.1 * none["rec_error"], lab
        assert abs(s["nuclear_norm"] - 1.0) < 0.01, lab  # ‖W*‖_* = 1
        assert s["a_final"] == pytest.approx(const["a_final"], rel=1e-9)  # equal total regularization
        assert s["time_to_train_loss"] is not None
    assert const["nuclear_norm"] < 0.99  # constant weight decay trades fit for norm
    assert const["time_to_train_loss"] is None


def test_linear_parameterization_does_not_recover(table2):
    best_uu = table2["Constant 0.02, t-o"]["rec_error"]
    for lab in ("Linear param., nuclear 0.01", "Linear param., nuclear 0.02, t-o", "Linear param., no reg."):
        assert table2[lab]["rec_error"] > 10 * best_uu, lab


def test_batched_equals_one_by_one():
    cfgs = [
        replace(SMALL, steps=200, schedule=s, wd=w, off_at=0.25, init_scale=i)
        for s, w, i in (("constant", 0.01, 0.1), ("turn_off", 0.2, 0.05), ("none", 0.0, 0.1))
    ]
    batched = ms.run_many(cfgs)
    for c, b in zip(cfgs, batched):
        single = ms.run_many([c])[0]
        for k in ("train_loss", "rec_error", "nuclear_norm", "a"):
            np.testing.assert_allclose(b["metrics"][k], single["metrics"][k], rtol=1e-10, atol=1e-14)


def _corollary_c3_error(eta: float, horizon: float = 4.0) -> float:
    """Max relative gap between λ_i(W_T) and λ_0 e^{2a_T} e^{4μ_T,i} for diagonal (commuting) A_i."""
    n, m = 6, 3
    steps = int(round(horizon / eta))
    g = torch.Generator().manual_seed(0)
    A = torch.stack([torch.diag(torch.randn(n, generator=g, dtype=torch.float64)) for _ in range(m)])
    W_star = torch.diag(torch.tensor([0.6, 0.4, 0, 0, 0, 0], dtype=torch.float64))
    data = ms.SensingData(A.reshape(m, -1), torch.einsum("kij,ij->k", A, W_star), W_star)
    prob = ms.MatrixSensing(data, [0.1], "uu", "exact")
    state = prob.init_state()
    lam = schedule_table([from_spec("turn_off", 0.5, steps // 2, steps)], steps)
    lr = torch.tensor([eta], dtype=torch.float64)
    mu = torch.zeros(n, dtype=torch.float64)
    for t in range(steps):
        r = prob.residual(prob.W(state["X"]))
        mu -= eta * torch.diagonal(((r @ data.A) / m).view(n, n))  # μ_t = -η Σ ∇f(W_s)
        state = prob.step(state, lam[:, t], lr, t)
    a = -eta * float(lam.sum())
    eig = torch.diagonal(prob.W(state["X"])[0])
    predicted = 0.1 * np.exp(2 * a) * torch.exp(4 * mu)
    return float(((eig - predicted).abs() / predicted).max())


def test_eigenvalues_follow_corollary_c3_with_commuting_sensing():
    """Cor. C.3: λ_i(W_t) = λ_0 e^{2a_t} e^{4μ_t,i}; the gap is discretisation error O(η)."""
    e1, e2 = _corollary_c3_error(0.01), _corollary_c3_error(0.005)
    assert e1 < 0.05
    assert 0.35 < e2 / e1 < 0.65  # halves with η


def test_diverging_config_is_marked_and_others_continue():
    base = replace(SMALL, steps=300, decay="gradient")
    cfgs = [replace(base, schedule="constant", wd=20.0), replace(base, schedule="constant", wd=0.01)]
    res = ms.run_many(cfgs)
    assert 0 <= res[0]["diverged_at"] < 300
    assert np.isnan(res[0]["metrics"]["rec_error"][-1])
    assert res[1]["diverged_at"] == -1
    assert np.isfinite(res[1]["metrics"]["rec_error"]).all()
    assert ms.summarize(cfgs[0], res[0])["status"] == "diverged"
    exact = ms.run_many([replace(cfgs[0], decay="exact")])[0]  # exact decay splitting stays stable
    assert exact["diverged_at"] == -1


# ----------------------------------------------------------------------------- penalty convention
def test_full_penalty_is_half_penalty_at_twice_lambda_and_a_stays_minus_eta_sum_lambda():
    """penalty=full (λ‖U‖²) decays U by e^{−2ηλ}: the same run as penalty=half at 2λ; a_t = −ηΣλ in both."""
    base = replace(SMALL, steps=200, schedule="turn_off", off_at=0.5)
    full, half2 = ms.run_many([replace(base, wd=0.05, penalty="full"), replace(base, wd=0.1, penalty="half")])
    for k in ("train_loss", "rec_error", "nuclear_norm"):
        np.testing.assert_allclose(full["metrics"][k], half2["metrics"][k], rtol=1e-12, atol=1e-15)
    assert full["metrics"]["a"][-1] == pytest.approx(-0.25 * 0.05 * 100)
    assert half2["metrics"]["a"][-1] == pytest.approx(2 * full["metrics"]["a"][-1])
    grad = ms.run_many(
        [
            replace(base, wd=0.05, penalty="full", decay="gradient"),
            replace(base, wd=0.1, penalty="half", decay="gradient"),
        ]
    )
    np.testing.assert_allclose(grad[0]["metrics"]["rec_error"], grad[1]["metrics"]["rec_error"], rtol=1e-12)


def test_full_penalty_lowers_the_constant_arms_nuclear_norm():
    """Constant λ: stationary point of f + λ‖W‖_* (full) has a smaller nuclear norm than f + (λ/2)‖W‖_* (half)."""
    base = replace(SMALL, steps=600, schedule="constant", wd=0.01)
    half, full = ms.run_many([base, replace(base, penalty="full")])
    nh, nf = half["metrics"]["nuclear_norm"][-1], full["metrics"]["nuclear_norm"][-1]
    assert nf < nh - 0.01


# ----------------------------------------------------------------------------- studies over seeds
def test_paired_difference_is_per_seed_log10_with_a_t_interval():
    from mirrorflow.experiments.matrix_sensing.studies import paired

    p = paired([1.0, 10.0, 100.0], [0.1, 1.0, 10.0])
    assert p["mean"] == pytest.approx(-1.0) and p["half"] == pytest.approx(0.0, abs=1e-12)
    assert p["below_zero"] == 3 and p["n"] == 3
    q = paired([1.0, 2.0, 3.0, float("nan")], [2.0, 2.0, 5.0, 1.0], log=False)
    assert q["n"] == 3 and q["total"] == 4 and q["mean"] == pytest.approx(1.0)
    assert q["half"] == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)  # t_{0.975,2}·s/√n, s = 1


def test_linear_schedule_arms_spend_the_same_budget():
    from mirrorflow.experiments.matrix_sensing.studies import linear_schedule_arms

    arms = linear_schedule_arms(SMALL)
    budgets = {lab: c.lam_schedule().integral(c.steps) for lab, c in arms}
    spent = [b for lab, b in budgets.items() if "no reg" not in lab]
    assert np.allclose(spent, SMALL.wd * SMALL.steps)
    params = {lab: c.param for lab, c in arms}
    assert params["Linear param., linear decay"] == "linear" and params["UUᵀ, linear decay"] == "uu"
    kinds = {c.schedule for lab, c in arms if c.param == "linear"}
    assert {"constant", "turn_off", "linear", "cosine", "none"} == kinds


def test_init_scale_preset_runs_seeds_and_writes_a_run_directory(tmp_path):
    import json

    out = tmp_path / "init"
    text = ms.reproduce(
        out, {"preset": "init-scale", "n": "8", "r": "2", "steps": "100", "seeds": "0,1"}, progress=lambda k: None
    )
    assert text.count("| no weight decay |") == 5 and text.count("| constant 0.02, t-o |") == 5
    assert "α=0.001: log10 rec error, t-o − no weight decay" in text
    summary = json.loads((out / "summary.json").read_text())
    arm = summary["arms"]["α=0.001, no weight decay"]
    assert arm["seeds"] == [0, 1] and len(arm["per_seed"]) == 2
    assert arm["config"]["init_scale"] == 0.001
    # each seed is its own data: the two seeds' results differ
    assert arm["per_seed"][0]["rec_error"] != arm["per_seed"][1]["rec_error"]
    assert {"init-scale.md", "init_scale_rec_error.png", "metrics.csv", "config.yaml"} <= {
        p.name for p in out.iterdir()
    }


@pytest.mark.slow
def test_default_reproduce_with_seeds_keeps_the_single_seed_table_first(tmp_path):
    ov = {"n": "8", "r": "2", "steps": "60", "log_every": "20"}
    plain = ms.reproduce(tmp_path / "a", ov, progress=lambda k: None)
    both = ms.reproduce(tmp_path / "b", {**ov, "seeds": "0,1"}, progress=lambda k: None)
    assert both.startswith(plain)
    assert "Table 2 over seeds" in both[len(plain) :]
    assert (tmp_path / "b" / "seeds" / "table2.md").exists()


def test_paper_horizon_preset_sets_the_horizon_and_both_penalties(tmp_path):
    from mirrorflow.experiments.matrix_sensing.studies import preset_overrides

    assert preset_overrides("paper-horizon", {"n": "8"}) == {"steps": "1200", "n": "8"}
    assert preset_overrides("paper-horizon", {"steps": "300"})["steps"] == "300"  # the user's value wins
    assert "steps" not in preset_overrides("init-scale", {})
    text = ms.reproduce(
        tmp_path / "ph",
        {"preset": "paper-horizon", "n": "8", "r": "2", "seeds": "0", "steps": "100", "log_every": "50"},
        progress=lambda k: None,
    )
    assert "T=100," in text
    assert "| Constant 0.01, no t-o | half |" in text and "| Constant 0.01, no t-o | full |" in text
    assert text.count("| No weight decay |") == 1
    assert "| 661 |" in text  # the paper's time for linear decay, side by side


@pytest.mark.parametrize(
    "ov, match",
    [
        ({"preset": "bogus"}, "preset must be one of"),
        ({"seeds": "0,x"}, "seeds must be"),
        ({"seeds": "1,1"}, "seeds must list distinct"),
        ({"penalty": "double"}, "penalty must be one of"),
    ],
)
def test_bad_reproduce_options_name_the_key(tmp_path, ov, match):
    from mirrorflow.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        ms.reproduce(tmp_path / "x", {"n": "8", "r": "2", "steps": "10", **ov}, progress=lambda k: None)


# ----------------------------------------------------------------------------- when λ switches off
def test_off_at_is_a_step_or_a_fraction_and_off_is_its_old_name(capsys):
    """off_at=0.25 of 400 steps and off_at=100 are one run; the old key ``off`` still works, with a note."""
    from mirrorflow.config import build

    frac = build(ms.Config, {"schedule": "turn_off", "steps": "400", "off_at": "0.25"})
    step = build(ms.Config, {"schedule": "turn_off", "steps": "400", "off_at": "100"})
    assert frac.lam_schedule().integral(400) == step.lam_schedule().integral(400) == pytest.approx(0.01 * 100)
    capsys.readouterr()
    old = build(ms.Config, {"schedule": "turn_off", "steps": "400", "off": "0.25"})
    assert old == frac
    assert capsys.readouterr().err.strip() == "note: off is now called off_at"


def test_table2_arms_have_names_and_equal_budgets():
    """The arms are looked up by name (Figs. 3 and 7 pick theirs so); every arm with weight decay on U spends
    the same Σλ = wd·steps, fractional switch-off points included (off_at = 1/2000 of 1500 steps = 0.75 step)."""
    named = ms.table2_named(SMALL)
    assert [lab for lab, _ in named.values()] == [lab for lab, _ in ms.table2_arms(SMALL)]
    assert named["turn_off_x2"][0] == "Constant 0.02, t-o" and named["linear_param_none"][1].param == "linear"
    budget = SMALL.wd * SMALL.steps
    for name in ("constant", "linear", "cosine", "turn_off_x2", "turn_off_x20", "turn_off_x200", "turn_off_x2000"):
        cfg = named[name][1]
        assert cfg.lam_schedule().integral(cfg.steps) == pytest.approx(budget, rel=1e-12), name


def test_a_decay_may_reach_zero_at_the_end_of_the_run_a_turn_off_may_not():
    from mirrorflow.config import build
    from mirrorflow.errors import ConfigError

    cfg = build(ms.Config, {"n": "6", "r": "1", "steps": "40", "schedule": "linear", "off_at": "40"})
    assert cfg.lam_schedule().integral(40) == pytest.approx(cfg.wd * 40 / 2, rel=0.05)
    with pytest.raises(ConfigError, match=r"^off_at must be a step in 1\.\.39 .* got 40$"):
        build(ms.Config, {"n": "6", "r": "1", "steps": "40", "schedule": "turn_off", "off_at": "40"})


def test_off_at_one_point_zero_is_the_whole_run_for_the_schedule_as_for_its_check():
    """``off_at=1.0`` is a fraction (the end of the run) both where the config is checked and where λ_t is
    built; ``off_at=1`` is step 1."""
    from mirrorflow.config import build

    lin = build(ms.Config, {"n": "6", "r": "1", "steps": "40", "schedule": "linear", "off_at": "1.0"})
    assert lin.lam_schedule().integral(40) == pytest.approx(lin.wd * 20.5)
    step1 = build(ms.Config, {"n": "6", "r": "1", "steps": "40", "schedule": "turn_off", "off_at": "1"})
    assert step1.lam_schedule().integral(40) == pytest.approx(step1.wd)

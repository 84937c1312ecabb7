"""SpectralMonitor, AutoTurnOff and the LoRA decay check in a plain PyTorch loop."""

import math
import warnings

import numpy as np
import pytest
import torch

from mirrorflow.schedules import constant, linear_decay
from mirrorflow.store import read_csv
from mirrorflow.training import (
    AutoTurnOff,
    FactorPair,
    LoRADecayWarning,
    SpectralMonitor,
    WeightDecayScheduler,
    check_lora_decay,
    format_lora_decay_report,
    lora_decay_report,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(name, L, R, kind="user", scale=1.0):
    return FactorPair(name, lambda: L, lambda: R, scale=scale, kind=kind)


def _svd_norms(W):
    s = torch.linalg.svdvals(W)
    return float(s.sum()), float(s.norm())


# --- SpectralMonitor ----------------------------------------------------------------------------------


def test_monitor_aggregates_are_the_papers_rho_and_the_mean_of_ratios():
    g = torch.Generator().manual_seed(0)
    factors = [
        (torch.randn(20, r, generator=g, dtype=torch.float64), torch.randn(r, 15, generator=g, dtype=torch.float64))
        for r in (2, 3, 3)
    ]
    pairs = [_pair(f"p{i}", L, R, scale=0.5 * (i + 1)) for i, (L, R) in enumerate(factors)]
    mon = SpectralMonitor(pairs=pairs, every=1)
    m = mon.compute()
    nucs, fros = [], []
    for i, (L, R) in enumerate(factors):
        nuc, fro = _svd_norms(0.5 * (i + 1) * L @ R)
        nucs.append(nuc)
        fros.append(fro)
        assert m[f"spectral/p{i}/nuclear"] == pytest.approx(nuc, rel=1e-12)
        assert m[f"spectral/p{i}/frobenius"] == pytest.approx(fro, rel=1e-12)
        assert m[f"spectral/p{i}/rho"] == pytest.approx(nuc / fro, rel=1e-12)
    assert m["spectral/rho"] == pytest.approx((sum(nucs) / 3) / (sum(fros) / 3), rel=1e-12)
    assert m["spectral/rho_mean"] == pytest.approx(sum(n / f for n, f in zip(nucs, fros)) / 3, rel=1e-12)
    assert m["spectral/rho"] != pytest.approx(m["spectral/rho_mean"], rel=1e-6)  # the two definitions differ


def test_monitor_measures_every_nth_call_including_the_first():
    L = torch.randn(8, 2)
    mon = SpectralMonitor(pairs=[_pair("w", L, L.T)], every=3)
    got = [bool(mon.step()) for _ in range(7)]
    assert got == [True, False, False, True, False, False, True]
    assert [r["step"] for r in mon.history] == [0, 3, 6]
    # an explicit step decides by itself
    assert mon.step(9) and not mon.step(10)


def test_monitor_follows_the_current_weights_and_skips_zero_products_in_rho_mean():
    A = torch.nn.Parameter(torch.randn(2, 10))
    B = torch.nn.Parameter(torch.zeros(12, 2))  # LoRA init: B = 0
    C = torch.randn(12, 3, dtype=torch.float32)
    D = torch.randn(3, 10)
    mon = SpectralMonitor(pairs=[FactorPair("lora", lambda: B, lambda: A, kind="lora"), _pair("other", C, D)], every=1)
    m0 = mon.compute()
    assert math.isnan(m0["spectral/lora/rho"]) and m0["spectral/lora/nuclear"] == 0.0
    nuc, fro = _svd_norms(C @ D)
    assert m0["spectral/rho_mean"] == pytest.approx(nuc / fro, rel=1e-5)  # NaN left out
    assert m0["spectral/rho"] == pytest.approx((nuc / 2) / (fro / 2), rel=1e-5)
    # per-kind aggregates when kinds are mixed
    assert math.isnan(m0["spectral/lora/rho"])
    assert m0["spectral/user/rho"] == pytest.approx(nuc / fro, rel=1e-5)
    with torch.no_grad():
        B.normal_()
    m1 = mon.compute()
    nuc1, fro1 = _svd_norms((B @ A).detach())
    assert m1["spectral/lora/nuclear"] == pytest.approx(nuc1, rel=1e-5)
    assert m1["spectral/lora/rho"] == pytest.approx(nuc1 / fro1, rel=1e-5)


def test_monitor_csv_round_trip_repair_and_resume(tmp_path):
    path = tmp_path / "run" / "spectral.csv"
    L = torch.randn(6, 2, dtype=torch.float64)
    R = torch.randn(2, 5, dtype=torch.float64)
    mon = SpectralMonitor(pairs=[_pair("w", L, R)], every=2, csv_path=path)
    for _ in range(5):
        mon.step()
    rows = read_csv(path)
    assert [int(r["step"]) for r in rows] == [0, 2, 4]
    assert list(rows[0].keys())[0] == "step"
    assert float(rows[0]["spectral/w/rho"]) == mon.history[0]["spectral/w/rho"]  # repr round-trips exactly
    # a crash in the middle of a line: the next monitor drops the partial line and appends
    with open(path, "a") as fh:
        fh.write("6,1.23")
    mon2 = SpectralMonitor(pairs=[_pair("w", L, R)], every=2, csv_path=path)
    mon2.step(6)
    rows = read_csv(path)
    assert [int(r["step"]) for r in rows] == [0, 2, 4, 6]
    assert float(rows[-1]["spectral/rho"]) == mon2.history[0]["spectral/rho"]
    # different columns: refuse to mix
    mon3 = SpectralMonitor(pairs=[_pair("v", L, R)], every=1, csv_path=path)
    with pytest.raises(ValueError, match="different columns"):
        mon3.step()


def test_monitor_writes_into_a_run_directory(tmp_path):
    from mirrorflow.store import RunDir

    run = RunDir(tmp_path / "r")
    L = torch.randn(5, 2)
    mon = SpectralMonitor(pairs=[_pair("w", L, L.T)], every=1, csv_path=run)
    mon.step()
    rows = read_csv(run.file("spectral.csv"))
    assert len(rows) == 1 and float(rows[0]["spectral/w/nuclear"]) == mon.last["spectral/w/nuclear"]


def test_monitor_writes_tensorboard_events(tmp_path):
    import tensorboard  # noqa: F401  (the HF extra is installed by make test)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    L = torch.randn(6, 2)
    with SpectralMonitor(pairs=[_pair("w", L, L.T)], every=1, tensorboard_dir=tmp_path / "tb", per_pair=False) as mon:
        mon.step()
        mon.step()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {
        "spectral/rho",
        "spectral/rho_mean",
        "spectral/nuclear_mean",
        "spectral/frobenius_mean",
    }
    ev = acc.Scalars("spectral/rho")
    assert [e.step for e in ev] == [0, 1]
    assert ev[0].value == pytest.approx(mon.history[0]["spectral/rho"], rel=1e-6)


def test_monitor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="every"):
        SpectralMonitor(pairs=[_pair("w", torch.ones(2, 1), torch.ones(1, 2))], every=0)
    with pytest.raises(ValueError, match="model or a list of pairs"):
        SpectralMonitor()


# --- AutoTurnOff --------------------------------------------------------------------------------------


def test_plateau_trigger_on_a_decaying_signal():
    # ρ_t = 2 + exp(-t/10): relative range over a window of 5 observations (10 steps apart) falls below 1%
    s = AutoTurnOff(0.05, mode="plateau", tol=0.01, window=5)
    fired = None
    for t in range(0, 400, 10):
        s.observe(t, {"spectral/rho": 2 + math.exp(-t / 10)})
        if s.triggered and fired is None:
            fired = t
    # expected: first t (multiple of 10) with (v(t-50) - v(t)) / v(t) ≤ 0.01
    expected = next(
        t
        for t in range(50, 400, 10)
        if (math.exp(-(t - 50) / 10) - math.exp(-t / 10)) / (2 + math.exp(-t / 10)) <= 0.01
    )
    assert s.triggered_at == fired == expected
    assert s(expected) == 0.05 and s(expected + 1) == 0.0
    assert s.integral(1000) == pytest.approx(0.05 * (expected + 1), rel=1e-12)
    assert s.table(expected + 3).tolist()[-3:] == [0.05, 0.0, 0.0]


def test_threshold_trigger_skips_nan_and_honours_min_step_and_direction():
    s = AutoTurnOff(linear_decay(1.0, until=100), signal="loss", mode="threshold", threshold=0.5, min_step=3)
    for t, v in enumerate([0.4, float("nan"), 0.9, 0.6, 0.45, 0.3]):
        s.observe(t, {"loss": v})
    assert s.triggered_at == 4 and s.trigger_value == 0.45  # step 0 < min_step, step 1 NaN
    assert s(4) == pytest.approx(linear_decay(1.0, until=100)(4)) and s(5) == 0.0
    assert s.integral(50) == pytest.approx(linear_decay(1.0, until=100).integral(5), rel=1e-12)
    up = AutoTurnOff(0.1, signal="acc", mode="threshold", threshold=0.9, direction="above")
    up.observe(0, {"acc": 0.5})
    up.observe(1, {"other": 1.0})
    assert not up.triggered
    up.observe(2, {"acc": 0.95})
    assert up.triggered_at == 2


def test_max_step_fallback_and_bad_arguments():
    s = AutoTurnOff(0.2, max_step=7)
    assert s(6) == 0.2 and s(7) == 0.0 and s.integral(20) == pytest.approx(1.4)
    assert not s.triggered
    with pytest.raises(ValueError, match="mode"):
        AutoTurnOff(0.1, mode="slope")
    with pytest.raises(ValueError, match="threshold"):
        AutoTurnOff(0.1, mode="threshold")
    with pytest.raises(ValueError, match="window"):
        AutoTurnOff(0.1, window=0)
    with pytest.raises(ValueError, match="value"):
        AutoTurnOff(-1.0)


def test_state_dict_round_trip_through_weight_decay_scheduler():
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1, weight_decay=0.3)
    auto = AutoTurnOff(0.3, mode="plateau", tol=1e-3, window=3)
    sched = WeightDecayScheduler(opt, auto)
    for t in range(3):  # three observations: not enough for the window yet
        opt.step()
        auto.observe(t, {"spectral/rho": 1.5})
        sched.step()
    state = sched.state_dict()
    # a fresh process: new optimizer, schedule and scheduler, then load
    w2 = torch.nn.Parameter(torch.ones(3))
    opt2 = torch.optim.SGD([w2], lr=0.1, weight_decay=0.3)
    auto2 = AutoTurnOff(0.3, mode="plateau", tol=1e-3, window=3)
    sched2 = WeightDecayScheduler(opt2, auto2)
    sched2.load_state_dict(state)
    assert sched2.a == pytest.approx(-0.09) and sched2.last_epoch == 3
    assert not auto2.triggered
    for s, a in ((sched, auto), (sched2, auto2)):  # one more equal value completes the window in both
        s.optimizer.step()
        a.observe(3, {"spectral/rho": 1.5})
        s.step()
    assert auto.triggered_at == auto2.triggered_at == 3
    assert sched2.get_last_wd() == [0.0] and opt2.param_groups[0]["weight_decay"] == 0.0
    # triggered state round-trips too
    auto3 = AutoTurnOff(0.3, mode="plateau", tol=1e-3, window=3)
    auto3.load_state_dict(auto2.state_dict())
    assert auto3.triggered_at == 3 and auto3(4) == 0.0
    with pytest.raises(ValueError, match="signal"):
        AutoTurnOff(0.3, signal="loss").load_state_dict(auto2.state_dict())


def test_plain_loop_auto_turn_off_on_rho_plateau():
    """Monitor + AutoTurnOff + WeightDecayScheduler in a plain SGD loop on a factorized model."""
    torch.manual_seed(0)
    d, r = 12, 4
    U = torch.nn.Parameter(0.3 * torch.randn(d, r, dtype=torch.float64))
    V = torch.nn.Parameter(0.3 * torch.randn(r, d, dtype=torch.float64))
    target = torch.randn(d, 1, dtype=torch.float64) @ torch.randn(1, d, dtype=torch.float64)
    opt = torch.optim.SGD([U, V], lr=0.05, weight_decay=0.0)
    auto = AutoTurnOff(0.05, signal="spectral/rho", mode="plateau", tol=2e-3, window=4)
    wd = WeightDecayScheduler(opt, auto)
    mon = SpectralMonitor(pairs=[FactorPair("UV", lambda: U, lambda: V)], every=5)
    a_at_trigger = None
    for t in range(400):
        opt.zero_grad()
        loss = ((U @ V - target) ** 2).mean()
        loss.backward()
        opt.step()
        m = mon.step()
        auto.observe(t, m)
        if auto.triggered and a_at_trigger is None:
            a_at_trigger = wd.a
        wd.step()
    t_star = auto.triggered_at
    assert t_star is not None and t_star % 5 == 0 and t_star >= 20
    assert wd.a == pytest.approx(-0.05 * 0.05 * (t_star + 1), rel=1e-12)  # no decay after t*
    assert a_at_trigger == wd.a
    assert opt.param_groups[0]["weight_decay"] == 0.0
    rhos = [h["spectral/rho"] for h in mon.history if h["step"] <= t_star][-5:]
    assert (max(rhos) - min(rhos)) / rhos[-1] <= 2e-3


# --- LoRA decay check ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_model():
    import peft
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=30
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(
            transformers.BertModel(cfg), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"])
        )


def test_lora_check_warns_when_a_no_decay_group_catches_the_factors(lora_model):
    lora = [p for n, p in lora_model.named_parameters() if "lora_" in n]
    # a common mistake: a "no decay" group built by a name pattern that also matches lora_*
    opt = torch.optim.AdamW([{"params": [], "weight_decay": 0.01}, {"params": lora, "weight_decay": 0.0}], lr=1e-3)
    with pytest.warns(LoRADecayWarning, match=r"asked for, but 8 trainable LoRA factor\(s\) get none") as rec:
        report = check_lora_decay(lora_model, opt)
    assert "param group 1 has weight_decay=0" in str(rec[0].message)
    assert len(report) == 4 and all(r.A.group == 1 and r.A.weight_decay == 0.0 for r in report)
    assert report[0].name == "encoder.layer.0.attention.self.query" and report[0].A.decoupled


def test_lora_check_reports_and_stays_quiet_on_a_correct_setup(lora_model):
    A = [p for n, p in lora_model.named_parameters() if "lora_A" in n]
    B = [p for n, p in lora_model.named_parameters() if "lora_B" in n]
    opt = torch.optim.AdamW([{"params": A + B, "weight_decay": 0.1}], lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoRADecayWarning)
        report = check_lora_decay(lora_model, opt)
    assert all(r.A.weight_decay == r.B.weight_decay == 0.1 and r.A.lr == 1e-3 for r in report)
    table = format_lora_decay_report(report)
    assert (
        table.count("\n") == 2 + 3
        and "| encoder.layer.1.attention.self.value | 0 | 0.1 | 0.001 | 0 | 0.1 | 0.001 | yes |" in table
    )
    # nothing asked for: no warning even with zero decay
    opt0 = torch.optim.SGD([{"params": A + B, "weight_decay": 0.0}], lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoRADecayWarning)
        check_lora_decay(lora_model, opt0, requested=0.0)
    # after a scheduled turn-off λ = 0 is not "no decay"
    sched = WeightDecayScheduler(opt0, constant(0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoRADecayWarning)
        check_lora_decay(lora_model, opt0, requested=0.1, scheduler=sched)
    sched.close()


def test_lora_check_flags_missing_and_unequal_decay(lora_model):
    A = [p for n, p in lora_model.named_parameters() if "lora_A" in n]
    B = [p for n, p in lora_model.named_parameters() if "lora_B" in n]
    opt = torch.optim.SGD([{"params": A, "weight_decay": 0.1}], lr=1e-2)  # B not in the optimizer
    with pytest.warns(LoRADecayWarning, match="B \\(not in the optimizer\\)"):
        report = check_lora_decay(lora_model, opt)
    assert all(r.B.group is None and r.A.group == 0 for r in report)
    opt2 = torch.optim.SGD([{"params": A, "weight_decay": 0.1}, {"params": B, "weight_decay": 0.2}], lr=1e-2)
    with pytest.warns(LoRADecayWarning, match="different decay on A and B"):
        check_lora_decay(lora_model, opt2)
    assert lora_decay_report(torch.nn.Linear(2, 2), opt2) == []


def test_auto_turn_off_takes_lambda_from_the_optimizer_when_value_is_none():
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1, weight_decay=0.3)
    auto = AutoTurnOff(signal="loss", mode="threshold", threshold=0.5)
    with pytest.raises(ValueError, match="value=None takes λ from the optimizer"):
        auto(0)
    sched = WeightDecayScheduler(opt, auto)
    assert sched.get_last_wd() == [0.3]
    for t, loss in enumerate([1.0, 0.4, 0.3]):
        w.grad = torch.zeros(2)
        opt.step()
        auto.observe(t, {"loss": loss})
        sched.step()
    assert auto.triggered_at == 1 and sched.get_last_wd() == [0.0]
    assert sched.a == pytest.approx(-0.1 * 0.3 * 2)


@pytest.mark.parametrize(
    "metrics, match",
    [
        ({"loss": "abc"}, r"metrics\['loss'\] must be a number"),
        ({"loss": [1.0]}, r"metrics\['loss'\] must be a number"),
        ([("loss", 1.0)], "metrics must be a mapping"),
    ],
)
def test_auto_turn_off_refuses_a_non_numeric_signal(metrics, match):
    auto = AutoTurnOff(0.1, signal="loss", mode="threshold", threshold=0.5)
    with pytest.raises((TypeError, ValueError), match=match):
        auto.observe(0, metrics)
    auto.observe(0, {"loss": np.float32(0.4)})  # NumPy / torch scalars are numbers
    assert auto.triggered_at == 0 and auto.trigger_value == pytest.approx(0.4)

"""WeightDecayCallback with a real transformers.Trainer on a tiny GPT-2 (CPU, a few steps)."""

import math
import os
import warnings

import peft
import pytest
import torch
import transformers

from mirrorflow.schedules import cosine_decay, linear_decay, turn_off, with_budget  # noqa: E402
from mirrorflow.training import AutoTurnOff, LoRADecayWarning, SpectralMonitor  # noqa: E402
from mirrorflow.training.hf import STATE_FILE, WeightDecayCallback  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
STEPS, LR = 8, 1e-2

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


def _data(n=64):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (n, 16), generator=g)
    return [{"input_ids": x, "labels": x} for x in ids]


def _trainer(tmp_path, model, cb, optimizers=(None, None), **kw):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=STEPS,
        per_device_train_batch_size=8,
        learning_rate=LR,
        weight_decay=0.1,
        logging_steps=kw.pop("logging_steps", 2),
        report_to=kw.pop("report_to", []),
        use_cpu=True,
        save_strategy=kw.pop("save_strategy", "no"),
        disable_tqdm=True,
        seed=0,
        **kw,
    )
    return transformers.Trainer(model=model, args=args, train_dataset=_data(), callbacks=[cb], optimizers=optimizers)


def _lr(t):  # the Trainer's default schedule: linear from LR to 0 over STEPS, no warm-up
    return LR * (1 - t / STEPS)


def _expected_a(lam, until=STEPS):
    return -sum(_lr(t) * lam(t) for t in range(until))


@pytest.mark.parametrize(
    "schedule",
    [
        turn_off(0.1, at=4),
        linear_decay(0.2, until=STEPS),
        cosine_decay(0.2, until=STEPS),
        with_budget(cosine_decay(1.0, until=6), budget=0.4, horizon=STEPS),
    ],
    ids=["turn_off", "linear", "cosine", "equal_budget"],
)
def test_trainer_applies_schedule_and_logs_lambda_a_and_rho(tmp_path, schedule):
    model = _model()
    cb = WeightDecayCallback(schedule, monitor_every=2)
    tr = _trainer(tmp_path, model, cb)
    tr.train()
    logs = [h for h in tr.state.log_history if "loss" in h]
    assert [h["step"] for h in logs] == [2, 4, 6, 8]
    for h in logs:
        T = h["step"]
        assert h["wd/lambda"] == pytest.approx(schedule(T - 1), abs=1e-12)  # λ of the last step taken
        assert h["wd/a"] == pytest.approx(_expected_a(schedule, T), rel=1e-9, abs=1e-15)
        assert {"spectral/rho", "spectral/rho_mean", "spectral/nuclear_mean"} <= h.keys()
    # only the decay group (matrices) is driven; the Trainer's no-decay group stays at 0
    groups = tr.optimizer.param_groups
    assert cb.scheduler.group_indices == [0]
    assert groups[0]["weight_decay"] == pytest.approx(schedule(STEPS)) and groups[1]["weight_decay"] == 0.0
    # the logged ρ at step 8 is the final model's
    final = SpectralMonitor(model, every=1).compute()
    assert logs[-1]["spectral/rho"] == pytest.approx(final["spectral/rho"], rel=1e-6)
    assert len(cb.monitor.pairs) == 2 and cb.monitor.history[0]["step"] == 0


def test_auto_turn_off_on_loss_in_the_trainer(tmp_path):
    """A loss threshold fires in on_log (after λ_{t+1} was set): λ_{t+1} must be reset to 0."""
    auto = AutoTurnOff(0.1, signal="loss", mode="threshold", threshold=1e9)  # the first loss fires it
    cb = WeightDecayCallback(auto)
    tr = _trainer(tmp_path, _model(), cb, logging_steps=1)
    tr.train()
    assert auto.triggered_at == 0
    assert cb.scheduler.a == pytest.approx(-_lr(0) * 0.1, rel=1e-12)
    assert all(h["wd/triggered_at"] == 0.0 for h in tr.state.log_history if "loss" in h)
    assert [h["wd/lambda"] for h in tr.state.log_history if "loss" in h] == [0.1] + [0.0] * (STEPS - 1)


def _plateau():
    # ρ is measured at steps 2, 4, 6, 8 (observations t = 1, 3, 5, 7); tol = 1 makes 3 observations enough
    return AutoTurnOff(0.1, signal="spectral/rho", mode="plateau", tol=1.0, window=2)


class _StopAt(transformers.TrainerCallback):
    """Interrupt training after `step` optimizer steps (the LR schedule still spans STEPS)."""

    def __init__(self, step):
        self.stop = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.stop:
            control.should_training_stop = True
        return control


@pytest.mark.slow
def test_auto_turn_off_on_rho_survives_checkpoint_resume(tmp_path):
    ref_auto = _plateau()
    ref = WeightDecayCallback(ref_auto, monitor_every=2)
    _trainer(tmp_path / "ref", _model(), ref).train()
    assert ref_auto.triggered_at == 5
    assert ref.scheduler.a == pytest.approx(_expected_a(lambda t: 0.1 if t <= 5 else 0.0), rel=1e-12)

    # interrupted run: stop at step 4 (checkpoint), then resume in a fresh Trainer with fresh objects
    first = WeightDecayCallback(_plateau(), monitor_every=2)
    tr = _trainer(tmp_path / "run", _model(), first, save_strategy="steps", save_steps=4)
    tr.add_callback(_StopAt(4))
    tr.train()
    ckpt = tmp_path / "run" / "out" / "checkpoint-4"
    assert (ckpt / STATE_FILE).is_file()
    auto2 = _plateau()
    second = WeightDecayCallback(auto2, monitor_every=2)
    tr2 = _trainer(tmp_path / "run", _model(seed=5), second, save_strategy="steps", save_steps=4)
    tr2.train(resume_from_checkpoint=str(ckpt))
    assert auto2.triggered_at == 5
    assert second.scheduler.a == pytest.approx(ref.scheduler.a, rel=1e-12)
    assert second.scheduler.last_epoch == STEPS


def test_trainer_warns_when_lora_factors_get_no_decay(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(
            _model(), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True)
        )
    A = [p for n, p in model.named_parameters() if "lora_A" in n]
    B = [p for n, p in model.named_parameters() if "lora_B" in n]
    opt = torch.optim.AdamW([{"params": A, "weight_decay": 0.1}, {"params": B, "weight_decay": 0.0}], lr=LR)
    cb = WeightDecayCallback(turn_off(0.1, at=4), monitor_every=4)
    tr = _trainer(tmp_path, model, cb, optimizers=(opt, None))
    with pytest.warns(LoRADecayWarning, match="lora|LoRA"):
        tr.train()
    assert [(r.A.weight_decay, r.B.weight_decay) for r in cb.lora_report] == [(0.1, 0.0), (0.1, 0.0)]
    # LoRA pairs are monitored (auto: B A with scaling 2); ρ is NaN at init (B = 0) and finite after training
    assert {p.kind for p in cb.monitor.pairs} == {"lora"}
    hist = cb.monitor.history
    assert hist[0]["step"] == 0 and hist[0]["spectral/transformer.h.0.attn.c_attn/nuclear"] == 0.0
    assert math.isnan(hist[0]["spectral/rho"]) and hist[-1]["step"] == STEPS and hist[-1]["spectral/rho"] >= 1.0


def _tb_scalars(root):
    """{tag: [(step, value), ...]} of every TensorBoard event file under root."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for ev in sorted(root.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(ev.parent), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_metrics_reach_the_trainers_report_to_integration(tmp_path):
    """report_to="tensorboard": λ, a_t and ρ arrive in the Trainer's own event file, at the logged steps."""
    schedule = turn_off(0.1, at=4)
    cb = WeightDecayCallback(schedule, monitor_every=2)
    tr = _trainer(tmp_path, _model(), cb, report_to=["tensorboard"])
    tr.train()
    tags = _tb_scalars(tmp_path / "out")
    assert {
        "train/loss",
        "train/wd/lambda",
        "train/wd/a",
        "train/spectral/rho",
        "train/spectral/rho_mean",
    } <= tags.keys()
    assert [s for s, _ in tags["train/wd/lambda"]] == [2, 4, 6, 8]
    assert [v for _, v in tags["train/wd/lambda"]] == pytest.approx([schedule(T - 1) for T in (2, 4, 6, 8)])
    assert [v for _, v in tags["train/wd/a"]] == pytest.approx(
        [_expected_a(schedule, T) for T in (2, 4, 6, 8)], rel=1e-5
    )
    logged = [h["spectral/rho"] for h in tr.state.log_history if "loss" in h]
    assert [v for _, v in tags["train/spectral/rho"]] == pytest.approx(logged, rel=1e-6)


def test_logged_spectral_values_carry_the_step_they_were_measured_at(tmp_path):
    """logging_steps=2, monitor_every=3: ρ is measured at global steps 0, 3, 6 and the latest measurement rides
    along with each log; spectral/step says which one it is."""
    cb = WeightDecayCallback(turn_off(0.1, at=4), monitor_every=3)
    tr = _trainer(tmp_path, _model(), cb)
    tr.train()
    logs = [h for h in tr.state.log_history if "loss" in h]
    assert [(h["step"], h["spectral/step"]) for h in logs] == [(2, 0), (4, 3), (6, 6), (8, 6)]
    measured = {h["step"]: h["spectral/rho"] for h in cb.monitor.history}
    assert sorted(measured) == [0, 3, 6]
    for h in logs:
        assert h["spectral/rho"] == pytest.approx(measured[h["spectral/step"]], rel=1e-12)


def test_fractions_of_max_steps_and_lambda_from_the_optimizer(tmp_path):
    """turn_off(at=0.5) in the Trainer: horizon = max_steps, λ = TrainingArguments.weight_decay (0.1)."""
    cb = WeightDecayCallback(turn_off(at=0.5))
    tr = _trainer(tmp_path, _model(), cb)
    tr.train()
    lams = [h["wd/lambda"] for h in tr.state.log_history if "loss" in h]
    assert lams == [0.1, 0.1, 0.0, 0.0]  # λ of steps 1, 3, 5, 7: off from step 4 = 0.5 · 8
    assert cb.scheduler.a == pytest.approx(_expected_a(lambda t: 0.1 if t < 4 else 0.0), rel=1e-12)
    full = WeightDecayCallback(turn_off(0.2, at=1.0))  # 1.0 = the whole run, not step 1
    _trainer(tmp_path / "full", _model(), full).train()
    assert full.scheduler.a == pytest.approx(_expected_a(lambda t: 0.2), rel=1e-12)


def test_a_too_small_to_matter_warns_and_a_large_one_does_not(tmp_path):
    from mirrorflow.training.scheduler import SmallRegularizationWarning

    with pytest.warns(SmallRegularizationWarning, match=r"a_∞ = -0.0045"):  # Σ η_t λ_t = 0.1 · 0.045
        _trainer(tmp_path / "small", _model(), WeightDecayCallback(turn_off(0.1, at=1.0))).train()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallRegularizationWarning)
        _trainer(tmp_path / "large", _model(), WeightDecayCallback(turn_off(2.0, at=1.0))).train()  # a_∞ = −0.09


def test_auto_turn_off_that_never_fires_is_logged_and_warned(tmp_path):
    auto = AutoTurnOff(0.1, signal="loss", mode="threshold", threshold=-1.0)
    cb = WeightDecayCallback(auto)
    tr = _trainer(tmp_path, _model(), cb)
    with pytest.warns(UserWarning, match="never fired in 8 steps"):
        tr.train()
    logs = [h for h in tr.state.log_history if "loss" in h]
    assert [h["wd/auto_off"] for h in logs] == [0.0] * 4 and not any("wd/triggered_at" in h for h in logs)


def test_resume_writes_each_step_of_spectral_csv_once(tmp_path):
    """Stopped at step 6 after a checkpoint at 4, resumed from 4: steps 4 and 6 are not written twice."""
    from mirrorflow.store import read_csv

    csv = tmp_path / "spectral.csv"
    m1 = _model()
    first = WeightDecayCallback(turn_off(0.1, at=4), monitor=SpectralMonitor(m1, every=2, csv_path=csv))
    tr = _trainer(tmp_path / "run", m1, first, save_strategy="steps", save_steps=4)
    tr.add_callback(_StopAt(6))
    tr.train()
    assert [int(r["step"]) for r in read_csv(csv)] == [0, 2, 4, 6]
    m2 = _model(seed=5)
    second = WeightDecayCallback(turn_off(0.1, at=4), monitor=SpectralMonitor(m2, every=2, csv_path=csv))
    tr2 = _trainer(tmp_path / "run", m2, second, save_strategy="steps", save_steps=4)
    tr2.train(resume_from_checkpoint=str(tmp_path / "run" / "out" / "checkpoint-4"))
    rows = read_csv(csv)
    assert [int(r["step"]) for r in rows] == [0, 2, 4, 6, 8]
    assert float(rows[-1]["spectral/rho"]) == pytest.approx(second.monitor.last["spectral/rho"], rel=1e-12)

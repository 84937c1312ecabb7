"""precision=f32|bf16|auto for the transformer experiments: what is bfloat16, what stays float32, and the
numbers a bfloat16 run gives next to float32 on the same seed."""

from __future__ import annotations

import math

import pytest
import torch

from mirrorflow import runtime as P
from mirrorflow.config import build
from mirrorflow.errors import ConfigError
from mirrorflow.experiments import attention, lora
from mirrorflow.experiments.transformer_kit.distributed import dist_env
from mirrorflow.experiments.transformer_kit.train import Trainer
from mirrorflow.training.monitor import SpectralMonitor

LM = {
    "task": "lm",
    "model": "tiny-gpt2",
    "steps": "8",
    "off_at": "4",
    "eval_every": "4",
    "batch_size": "4",
    "block_size": "16",
    "val_windows": "8",
    "lr": "0.1",
    "weight_decays": "0.5",
    "seeds": "0",
    "workers": "1",
}


def test_resolution_auto_follows_the_hardware_and_bad_values_are_refused(capsys):
    native = P.native_bf16("cpu")
    assert P.resolve_precision("auto", "cpu") == ("bf16" if native else "f32")
    assert P.resolve_precision("f32", "cpu") == "f32"
    P._WARNED.clear()
    assert P.resolve_precision("bf16", "cpu") == "bf16"
    err = capsys.readouterr().err
    assert ("emulated" in err) == (not native)
    with pytest.raises(ConfigError, match="precision must be one of f32, bf16, auto, got 'fp8'"):
        P.resolve_precision("fp8", "cpu")
    with pytest.raises(ConfigError, match="precision must be one of"):
        build(lora.Config, {**LM, "precision": "half"})
    with pytest.raises(ConfigError, match="precision must be one of"):
        build(attention.Config, {"precision": "half"})


def _lm_run(precision: str):
    cfg = build(lora.Config, {**LM, "precision": precision})
    task = lora.make_task(cfg)
    model = lora.make_model(cfg, task, 0)
    tr = Trainer(model, task, cfg.train_spec(0), 0.5, dist_env("cpu"), SpectralMonitor(model, every=1, include="lora"))
    tr.advance(cfg.train.steps)
    return cfg, model, tr


def test_lora_bf16_keeps_the_factors_optimizer_and_decay_in_float32(capsys):
    cfg, model, tr = _lm_run("bf16")
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trained = [p for n, p in model.named_parameters() if p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert trained and all(p.dtype == torch.float32 for p in trained)
    assert all(s["momentum_buffer"].dtype == torch.float32 for s in tr.opt.state.values())
    assert tr.spec.precision == "bf16" and tr.diverged_at is None
    _, _, ref = _lm_run("f32")
    # same seed, same batches: a = −Σ η λ is the same number; losses agree to bfloat16's resolution
    assert tr.rows[-1]["a"] == pytest.approx(ref.rows[-1]["a"], rel=1e-12)
    assert [r["step"] for r in tr.rows] == [r["step"] for r in ref.rows] == [0, 4, 8]
    for r, q in zip(tr.rows[1:], ref.rows[1:]):
        assert math.isfinite(r["train_loss"]) and r["train_loss"] == pytest.approx(q["train_loss"], abs=0.05)
    assert tr.rows[-1]["val_loss"] == pytest.approx(ref.rows[-1]["val_loss"], abs=0.05)
    assert tr.rows[-1]["spectral/rho"] == pytest.approx(ref.rows[-1]["spectral/rho"], rel=0.05)
    assert tr.rows[-1]["val_loss"] != ref.rows[-1]["val_loss"]  # bfloat16 did run


def test_group_config_records_bf16_and_keeps_f32_groups_as_before(tmp_path):
    f32 = lora.group_job(build(lora.Config, LM), tmp_path, 0.5, 0).config
    bf16 = lora.group_job(build(lora.Config, {**LM, "precision": "bf16"}), tmp_path, 0.5, 0).config
    assert "precision" not in f32 and bf16["precision"] == "bf16"
    assert {k: v for k, v in bf16.items() if k != "precision"} == f32
    auto = lora.group_job(build(lora.Config, {**LM, "precision": "auto"}), tmp_path, 0.5, 0).config
    assert auto.get("precision", "f32") == P.resolve_precision("auto", "cpu")


def test_attention_bf16_autocast_trains_float32_weights():
    cfg = build(attention.Config, {"epochs": "1", "parts": "sweep", "precision": "bf16", "seeds": "0"})
    from mirrorflow.experiments.transformer_kit.tasks import DigitsTask

    task = DigitsTask()
    spe = task.n_train // cfg.digits.batch_size
    rows = {}
    for prec in ("bf16", "f32"):
        c = build(attention.Config, {"epochs": "1", "parts": "sweep", "precision": prec, "seeds": "0"})
        model = attention.make_vit(c, 0)
        spec = c.vit_spec(0, spe)
        assert spec.precision == prec
        tr = Trainer(model, task, spec, 3.0, dist_env("cpu"), SpectralMonitor(model, every=1, include="attention"))
        for _ in range(3):
            tr.train_step()  # no evaluation: the training steps alone
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert len(tr.losses) == 3 and all(math.isfinite(x) for x in tr.losses)
        rows[prec] = tr.losses
    assert cfg.vit_spec(0, spe).precision == "bf16"
    assert rows["bf16"] == pytest.approx(rows["f32"], abs=0.05)
    assert rows["bf16"] != rows["f32"]  # bfloat16 did run

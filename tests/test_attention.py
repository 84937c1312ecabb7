"""Attention experiment (ViT on digits, pretrained MiniLM): ρ of W_Q W_Kᵀ, turn-off arms, CLI, errors, DDP."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mirrorflow.cli import main
from mirrorflow.config import build
from mirrorflow.experiments import attention
from mirrorflow.experiments.transformer_kit.distributed import dist_env
from mirrorflow.experiments.transformer_kit.tasks import DigitsTask
from mirrorflow.experiments.transformer_kit.train import Trainer, intersection, run_arms
from mirrorflow.schedules import turn_off
from mirrorflow.store import read_csv
from mirrorflow.training.monitor import SpectralMonitor

TINY = {"hidden": "32", "layers": "2", "mlp": "64", "heads": "4", "lr": "3e-3", "warmup_epochs": "0"}


@pytest.fixture(scope="module")
def digits():
    return DigitsTask()


def _trainer(cfg, digits, value, seed=0, schedule=None, epochs=None, eval_every=None):
    spe = digits.n_train // cfg.digits.batch_size
    spec = cfg.vit_spec(seed, spe)
    spec = replace(spec, steps=epochs * spe if epochs else spec.steps, eval_every=eval_every or spec.eval_every)
    model = attention.make_vit(cfg, seed)
    return Trainer(
        model,
        digits,
        spec,
        value,
        dist_env("cpu"),
        SpectralMonitor(model, every=1, include="attention"),
        schedule=schedule,
    )


def test_intersection_finds_the_crossing_after_the_turn_off():
    steps = [0, 10, 20, 30, 40, 50]
    const = [5.0, 4.0, 3.0, 2.5, 2.2, 2.0]
    off = [5.0, 4.0, 3.2, 2.6, 2.1, 1.8]  # above the constant curve after step 10, below from step 40
    assert intersection(steps, const, off, start=10) == 40
    assert intersection(steps, const, [5.0, 4.0, 3.2, 2.8, 2.5, 2.3], start=10) is None
    assert intersection(steps, const, [5, 4, 3.2, math.nan, 2.1, 1.8], start=10) == 40


@pytest.mark.slow
def test_stronger_weight_decay_gives_lower_rho(digits):
    """Fig. 14's claim on a small run: with AdamW, higher weight decay keeps ρ(W_Q W_Kᵀ) lower."""
    cfg = build(attention.Config, {**TINY, "epochs": "6", "parts": "sweep"})
    finals = {}
    for value in (0.0, 10.0):
        tr = _trainer(cfg, digits, value)
        tr.advance(tr.spec.steps)
        finals[value] = tr.rows[-1]
        tr.close()
    assert finals[0.0]["val_acc"] > 0.5  # it learns
    assert finals[10.0]["spectral/rho"] < 0.85 * finals[0.0]["spectral/rho"]
    # the nuclear norm shrinks relative to the Frobenius norm in every layer, not only on average
    for layer in (0, 1):
        key = f"spectral/vit.layers.{layer}.attention/rho"
        assert finals[10.0][key] < finals[0.0][key]


@pytest.mark.slow
def test_turn_off_bookkeeping_and_forks_equal_runs_from_scratch(digits):
    """λ = 0 from the switch on, a_t frozen at −η·λ·t_off, and the arm continued from the constant run's
    snapshot gives the same numbers as a fresh run with the turn-off schedule."""
    cfg = build(attention.Config, TINY)
    lam, T_off = 2.0, 10
    tr = _trainer(cfg, digits, lam, epochs=2, eval_every=5)
    arms = {
        a.name: a
        for a in run_arms(
            tr, lam, [T_off], {"signal": "spectral/rho", "mode": "threshold", "threshold": 1e9, "direction": "below"}
        )
    }
    assert set(arms) == {"constant", f"off@{T_off}", "auto"}
    eta = cfg.digits.lr
    for r in arms["constant"].rows:
        assert r["wd"] == lam and r["a"] == pytest.approx(-eta * lam * r["step"], rel=1e-12)
    off = arms[f"off@{T_off}"]
    for r in off.rows:
        if r["step"] < T_off:
            assert r["wd"] == lam
        else:
            assert r["wd"] == 0.0
            assert r["a"] == pytest.approx(-eta * lam * T_off, rel=1e-12)
    # the automatic arm fired at its first observation (step 5 measures update 4): off from step 5
    auto = arms["auto"]
    assert auto.off_at == 5 and auto.info["triggered"]
    assert all(r["wd"] == 0.0 and r["a"] == pytest.approx(-eta * lam * 5) for r in auto.rows if r["step"] >= 5)
    # fork == from scratch
    fresh = _trainer(cfg, digits, lam, epochs=2, eval_every=5, schedule=turn_off(lam, at=T_off))
    fresh.advance(fresh.spec.steps)
    assert len(fresh.rows) == len(off.rows)
    for a, b in zip(off.rows, fresh.rows):
        for k in ("val_loss", "val_acc", "train_loss", "spectral/rho", "a", "wd"):
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12, nan_ok=True), k
    # weight decay was really off: the turned-off arm keeps larger attention weights than the constant one
    assert off.rows[-1]["spectral/frobenius_mean"] > arms["constant"].rows[-1]["spectral/frobenius_mean"]


@pytest.mark.slow
def test_auto_arm_firing_at_a_fixed_switch_reuses_that_arm_and_equals_its_own_run(digits):
    """When the automatic switch-off fires at a fixed arm's switch step, run_arms reuses that arm's rows; they
    are exactly the rows the automatic arm gives when computed on its own."""
    cfg = build(attention.Config, TINY)
    lam = 2.0
    auto = {"signal": "spectral/rho", "mode": "threshold", "threshold": 1e9, "direction": "below"}  # fires at 5
    both = {a.name: a for a in run_arms(_trainer(cfg, digits, lam, epochs=2, eval_every=5), lam, [5], auto)}
    alone = {a.name: a for a in run_arms(_trainer(cfg, digits, lam, epochs=2, eval_every=5), lam, [], auto)}
    assert both["auto"].off_at == alone["auto"].off_at == 5 and both["auto"].info == alone["auto"].info
    assert both["auto"].rows == both["off@5"].rows
    assert len(alone["auto"].rows) == len(both["auto"].rows)
    for a, b in zip(both["auto"].rows, alone["auto"].rows):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-15, nan_ok=True), k


def _tiny_overrides(out: Path, **extra) -> list[str]:
    ov = {
        **TINY,
        "epochs": "3",
        "sweep_weight_decays": "0,1",
        "ablation_weight_decay": "3",
        "ablation_off_epochs": "1,2",
        "seeds": "0,1",
        "finetune_steps": "4",
        "finetune_off_at": "2",
        "finetune_eval_every": "2",
        "finetune_batch_size": "4",
        "finetune_weight_decays": "1",
        "val_size": "8",
        "lrs_adamw_weight_decays": "1",
        "lrs_sgd_weight_decays": "0.01",
        "restart_epochs": "1",
        **extra,
    }
    return ["reproduce", "attention", *[f"{k}={v}" for k, v in ov.items()], "--out", str(out)]


@pytest.mark.slow
def test_reproduce_cli_writes_tables_and_figures_and_reuses_finished_groups(tmp_path, capsys):
    out = tmp_path / "att"
    main(_tiny_overrides(out))
    printed = capsys.readouterr().out
    for title in ("Fig. 14 analog", "Table 3 analog", "Table 4 analog", "App. G analog"):
        assert title in printed
    for f in (
        "table3.md",
        "table4.md",
        "fig14_sweep.md",
        "appG_lr_schedule.md",
        "fig4_attention_rho.png",
        "fig14_sweep_curves.png",
        "fig14_sweep_final.png",
        "fig15_lr_schedule_adamw.png",
        "fig16_lr_schedule_sgd.png",
        "table4_finetune_curves.png",
        "summary.json",
    ):
        assert (out / f).is_file(), f
    t3 = (out / "table3.md").read_text()
    assert "| 1 |" in t3 and "| 2 |" in t3 and "auto" in t3
    # paired differences (2 seeds) and crossings against the sweep's constant curves (λ = 0, 1) and λ = 3
    assert "| 3 | off at epoch 1 | val acc (points) |" in t3 and "| 3 | off at epoch 2 | val loss |" in t3
    assert "| crosses λ=0 | crosses λ=1 | crosses λ=3 |" in t3
    for name in ("table4.md", "appG_lr_schedule.md"):
        assert "| mean [95 % CI] | signs −/+ | n | seeds needed |" in (out / name).read_text()
    t4 = (out / "table4.md").read_text()
    assert "minilm (pretrained) / speakers" in t4 and "ViT (scratch) / digits" in t4
    # every group finished; the MiniLM rows carry a finite ρ of W_Q W_Kᵀ for its 6 layers
    groups = sorted((out / "groups").rglob("summary.json"))
    assert len(groups) == 4 + 2 + 2 + 8  # sweep, ablation, finetune, lr-schedule (2 seeds each)
    ft = read_csv(out / "groups" / "finetune" / "wd1-seed0" / "metrics.csv")
    layers = {k.split("/")[1] for k in ft[0] if k.startswith("spectral/") and k.endswith("/rho") and "layer" in k}
    assert len(layers) == 6 and all(math.isfinite(float(r["spectral/rho"])) for r in ft)
    # a re-run finds the finished groups and does not recompute them
    mtimes = {p: p.stat().st_mtime_ns for p in groups}
    main(_tiny_overrides(out))
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    assert "Fig. 14 analog" in capsys.readouterr().out


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_differs(tmp_path):
    """Same seed → identical metrics.csv, also when the groups run in 2 worker processes; seeds differ."""

    def run(name, workers):
        cfg = build(
            attention.Config,
            {**TINY, "epochs": "1", "parts": "sweep", "sweep_weight_decays": "1", "seeds": "0,1", "workers": workers},
        )
        attention.run(cfg, tmp_path / name)
        return [
            (tmp_path / name / "groups" / "sweep" / f"adamw-constant-wd1-seed{s}" / "metrics.csv").read_text()
            for s in (0, 1)
        ]

    a, b = run("a", "1"), run("b", "2")
    assert a == b
    assert a[0] != a[1]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["parts=finetune", "finetune_model=no-such-org/no-such-model"], "unknown model 'no-such-org/no-such-model'"),
        (["parts=sweep", "vit=./no/such/dir"], "'./no/such/dir': no such directory"),
        (["parts=sweep,imagenet"], "parts must be among"),
        (["ablation_off_epochs=5,40", "epochs=30"], "ablation_off_epochs must be a step in 1..29 or a fraction"),
        (["ablation_off_epochs=0.99", "epochs=30"], "ablation_off_epochs=0.99 is step 30 of 30 epochs"),
        (["parts=finetune", "finetune_off_at=0"], "finetune_off_at must be a step in 1..99 or a fraction"),
        (["device=gpu"], "device must be one of auto, cpu, cuda"),
        (["patch_size=3"], "patch_size must divide 8"),
        (["finetune_train=values"], "finetune_train must be one of"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "attention", *args, "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path):
    """torchrun with 2 CPU processes (Gloo): each rank trains on half of every batch; the recorded rows
    match a single-process run up to float rounding."""
    args = ["parts=sweep", "sweep_weight_decays=1", "seeds=0", "epochs=1", *[f"{k}={v}" for k, v in TINY.items()]]
    single = tmp_path / "single"
    cfg = build(attention.Config, dict(a.split("=", 1) for a in args))
    attention.run(cfg, single)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "-m",
        "mirrorflow.cli",
        "run",
        "attention",
        *args,
        "--out",
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rel = Path("groups/sweep/adamw-constant-wd1-seed0/metrics.csv")
    one, two = read_csv(single / rel), read_csv(tmp_path / "ddp" / rel)
    assert len(one) == len(two) > 1
    for r1, r2 in zip(one, two):
        for k in ("val_loss", "train_loss", "spectral/rho", "a"):
            if r1[k] != "nan":
                assert float(r2[k]) == pytest.approx(float(r1[k]), rel=1e-4), k


def test_finetune_accepts_a_vit_checkpoint_directory(tmp_path):
    """Table 4's `any ViT checkpoint`: a saved ViT (16×16 RGB inputs, other head) is fine-tuned on the digits
    resized to its input size, with a new 10-class head; only W_Q, W_K and the head train."""
    from transformers import ViTConfig, ViTForImageClassification

    ckpt = tmp_path / "vit"
    ViTForImageClassification(
        ViTConfig(
            image_size=16,
            patch_size=4,
            num_channels=3,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=3,
        )
    ).save_pretrained(ckpt)
    cfg = build(
        attention.Config,
        {
            "parts": "finetune",
            "finetune_model": str(ckpt),
            "finetune_steps": "4",
            "finetune_off_at": "2",
            "finetune_eval_every": "2",
            "finetune_batch_size": "8",
            "finetune_weight_decays": "1",
            "seeds": "0",
            "auto_off": "false",
        },
    )
    task, model = attention.make_finetune(cfg, 0, "cpu", {})
    assert task.name == "digits" and task.train_batch(torch.arange(2))["pixel_values"].shape == (2, 3, 16, 16)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    qk = (".query.", ".key.", ".q_proj.", ".k_proj.")  # transformers 5 names ViT's projections q_proj/k_proj
    assert trainable and all(any(q in n for q in qk) or n.startswith("classifier.") for n in trainable)
    assert sum(n.endswith("q_proj.weight") or n.endswith("query.weight") for n in trainable) == 2
    assert model.classifier.out_features == 10
    out = attention.run(cfg, tmp_path / "out")
    assert "vit (pretrained) / digits" in out["tables"]["finetune"]


def test_switch_off_keys_are_a_step_or_a_fraction_of_the_run():
    """``ablation_off_epochs`` (epochs) and ``finetune_off_at`` (steps) accept fractions of their run."""
    from mirrorflow.config import build

    cfg = build(
        attention.Config,
        {"epochs": "20", "ablation_off_epochs": "0.2,8", "finetune_steps": "100", "finetune_off_at": "0.3"},
    )
    assert cfg == build(
        attention.Config,
        {"epochs": "20", "ablation_off_epochs": "4,8", "finetune_steps": "100", "finetune_off_at": "30"},
    )

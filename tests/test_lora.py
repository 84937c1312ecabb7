"""LoRA experiment: tiny GPT-2 on tiny_shakespeare (LM), pretrained MiniLM on the speaker task."""

from __future__ import annotations

import math

import pytest

from mirrorflow.cli import main
from mirrorflow.config import build
from mirrorflow.errors import ConfigError, ModelError
from mirrorflow.experiments import lora
from mirrorflow.experiments.transformer_kit.tasks import speaker_lines
from mirrorflow.store import read_csv

LM = {
    "task": "lm",
    "model": "tiny-gpt2",
    "steps": "12",
    "off_at": "6",
    "eval_every": "3",
    "batch_size": "4",
    "block_size": "16",
    "val_windows": "8",
    "lr": "0.1",
    "weight_decays": "0.5",
    "seeds": "0,1",
    "baseline": "true",
    "auto_off": "true",
    "workers": "1",
}


def test_speaker_lines_and_split_keep_speeches_on_one_side():
    text = "A:\nline one\nline two\n\nB:\nb one\n\nA:\nline three\n\nC:\nc one\nc two\nc three\n\nB:\nb two\nb three\n"
    d = speaker_lines(text, 2)
    assert d.names == ["A", "B"]  # 3 lines each; C (3 lines) loses the alphabetical tie-break
    assert d.lines == ["line one", "line two", "b one", "line three", "b two", "b three"]
    assert d.labels == [0, 0, 1, 0, 1, 1]
    assert d.speech == [0, 0, 1, 2, 4, 4]
    with pytest.raises(ConfigError, match="speakers must be at least 2"):
        speaker_lines(text, 1)


def test_speaker_task_on_tiny_shakespeare():
    from transformers import AutoTokenizer

    from mirrorflow.data.datasets import load_tinyshakespeare
    from mirrorflow.experiments.transformer_kit.tasks import SpeakerTask
    from mirrorflow.models import minilm_path

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    task = SpeakerTask(load_tinyshakespeare(), tok, k=4, max_length=24, val_size=0)
    assert task.names == ["GLOUCESTER", "DUKE VINCENTIO", "KING RICHARD II", "LEONTES"]
    assert task.n_train + task.n_val == 902 + 822 + 758 + 679
    assert 0.1 < task.n_val / (task.n_train + task.n_val) < 0.3
    # all four speakers on both sides, no line in both
    assert set(task.train_y.tolist()) == set(task.val_y.tolist()) == {0, 1, 2, 3}
    b = task.train_batch(task.train_y.new_tensor([0, 1, 2]))
    assert b["input_ids"].shape[1] <= 24 and b["attention_mask"][:, 0].all()


def _lm_cli(out, **extra):
    return ["reproduce", "lora", *[f"{k}={v}" for k, v in {**LM, **extra}.items()], "--out", str(out)]


@pytest.mark.slow
def test_lm_reproduce_end_to_end_with_turn_off_bookkeeping(tmp_path, capsys):
    out = tmp_path / "lm"
    main(_lm_cli(out))
    table = capsys.readouterr().out
    assert "LoRA (Table 5 analog): tiny-gpt2" in table and "| 0.5 |" in table and "| 0 (no WD) |" in table
    # the paired table: turned off − kept over the 2 seeds, recomputed here from the groups' final rows
    from mirrorflow.report.stats import paired_difference

    fin = {}
    for s in (0, 1):
        for r in read_csv(out / "groups" / f"wd0.5-seed{s}" / "metrics.csv"):
            fin[(r["arm"], s)] = float(r["val_loss"])  # last row of each arm wins
    d = paired_difference([fin[("constant", s)] for s in (0, 1)], [fin[("off@6", s)] for s in (0, 1)])
    assert (
        f"| 0.5 | off@6 | val loss | {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] | {d.negative}/{d.positive} | 2 |"
        in table
    )
    # the per-seed rows behind the paired mean, and their median
    import statistics

    diffs = [fin[("off@6", s)] - fin[("constant", s)] for s in (0, 1)]
    assert f"Per seed, λ = 0.5: final validation loss; median off − kept {statistics.median(diffs):+.3f}." in table
    for s in (0, 1):
        assert f"| {s} | {fin[('constant', s)]:.3f} | {fin[('off@6', s)]:.3f} | {diffs[s]:+.3f} |" in table
    # ρ crossings against every constant curve (λ = 0.5 and the λ = 0 baseline)
    assert "| crosses λ=0 | crosses λ=0.5 |" in table
    for f in ("table5.md", "fig4_lora_rho.png", "lora_val_loss.png", "summary.json", "config.yaml"):
        assert (out / f).is_file(), f
    rows = read_csv(out / "groups" / "wd0.5-seed0" / "metrics.csv")
    arms = {r["arm"] for r in rows}
    assert arms == {"constant", "off@6", "auto"}
    eta, lam = 0.1, 0.5
    for r in rows:
        step, wd, a = int(r["step"]), float(r["wd"]), float(r["a"])
        if r["arm"] == "off@6" and step >= 6:
            assert wd == 0.0 and a == pytest.approx(-eta * lam * 6)  # a_t frozen after the switch
        elif r["arm"] == "constant":
            assert wd == lam and a == pytest.approx(-eta * lam * step)
    # ρ of B A: NaN at init (B = 0), then finite and in [1, sqrt(r)]
    for r in rows:
        rho = float(r["spectral/rho"])
        if int(r["step"]) == 0:
            assert math.isnan(rho)
        else:
            assert 1.0 <= rho <= math.sqrt(8) + 1e-9
    # the λ = 0 baseline has no weight decay at all
    base = read_csv(out / "groups" / "wd0-seed0" / "metrics.csv")
    assert {r["arm"] for r in base} == {"constant"} and all(float(r["a"]) == 0.0 for r in base)
    # same seed → same numbers: a second run into another directory, its groups in 2 worker processes
    main(_lm_cli(tmp_path / "again", workers="2"))
    assert capsys.readouterr().out.count("| 0.5 |") == 2  # the per-arm table and the paired table
    for g in ("wd0.5-seed0", "wd0.5-seed1", "wd0-seed0", "wd0-seed1"):
        assert (tmp_path / "again" / "groups" / g / "metrics.csv").read_text() == (
            out / "groups" / g / "metrics.csv"
        ).read_text(), g
    assert (out / "groups" / "wd0.5-seed1" / "metrics.csv").read_text() != (
        out / "groups" / "wd0.5-seed0" / "metrics.csv"
    ).read_text()


def test_minilm_speakers_lora_decays_only_the_adapter(tmp_path):
    """Real pretrained MiniLM with peft LoRA on query/value: only lora_A/lora_B get weight decay, the head
    trains without it, the base stays frozen, and ρ(B A) is measured on the 12 adapters."""
    from mirrorflow.experiments.transformer_kit.distributed import dist_env
    from mirrorflow.experiments.transformer_kit.train import Trainer
    from mirrorflow.training.monitor import SpectralMonitor

    cfg = build(
        lora.Config,
        {
            "task": "speakers",
            "steps": "3",
            "off_at": "1",
            "eval_every": "3",
            "batch_size": "4",
            "val_size": "8",
            "seeds": "0",
        },
    )
    task = lora.make_task(cfg)
    model = lora.make_model(cfg, task, seed=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_A" in n or "lora_B" in n or n.startswith("head.")) for n in trainable)
    assert sum("lora_A" in n for n in trainable) == 12  # 6 layers × (query, value)
    mon = SpectralMonitor(model, every=1, include="lora")
    tr = Trainer(model, task, cfg.train_spec(0), 0.1, dist_env("cpu"), mon)
    decay = tr.opt.param_groups[tr.decay_index]
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("lora_" in names[id(p)] for p in decay["params"]) and len(decay["params"]) == 24
    tr.advance(3)
    assert len(mon.pairs) == 12 and all(p.kind == "lora" for p in mon.pairs)
    assert 1.0 <= tr.rows[-1]["spectral/rho"] <= math.sqrt(8)
    assert 0.0 <= tr.rows[-1]["val_acc"] <= 1.0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["task=lm", "model=gpt2"], "unknown model 'gpt2'"),
        (["model=/no/such/model/dir"], "'/no/such/model/dir': no such directory"),
        (["task=speakers", "model=tiny-gpt2"], "task=speakers needs a pretrained text encoder"),
        (["weight_decays=-1"], "weight_decays must be non-negative"),
        (["off_at=400", "steps=100"], "off_at must be a step in 1..99 or a fraction of the run in (0, 1)"),
        (["off_at=0.001", "steps=100"], "off_at=0.001 is step 0 of 100 steps: it must fall in 1..99"),
        (["device=tpu"], "device must be one of auto, cpu, cuda"),
        (["optimizer=adam"], "optimizer must be one of sgd, adamw"),
        (["rank=lots"], "rank: expected an integer"),
        (["task=lm", "model=tiny-gpt2", "target_modules=no_such_layer"], "LoRA on 'tiny-gpt2'"),
        (["model=no-such-file.gguf"], "model 'no-such-file.gguf': no such file"),
        (["val_subset=-1"], "val_subset must be non-negative"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_error(tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as e:
        main(
            ["reproduce", "lora", *args, "steps=4", "off_at=2", "--out", str(tmp_path / "x")]
            if "steps=100" not in args
            else ["reproduce", "lora", *args, "--out", str(tmp_path / "x")]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err


def test_model_error_is_raised_by_the_loader():
    from mirrorflow.experiments.transformer_kit.models import load_config

    with pytest.raises(ModelError, match="unknown model 'not-a-model-xyz'"):
        load_config("not-a-model-xyz")
    assert load_config("minilm").model_type == "bert"


@pytest.mark.slow
def test_lm_with_a_local_causal_lm_directory_and_its_tokenizer(tmp_path):
    """The path `model=gpt2 hub=true` takes, minus the download: a causal LM directory with its own
    tokenizer (here a 1-layer GPT-2 saved with MiniLM's WordPiece tokenizer), LoRA on c_attn."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from mirrorflow.models import minilm_path

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    model_dir = tmp_path / "local-gpt2"
    GPT2LMHeadModel(
        GPT2Config(vocab_size=tok.vocab_size, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    ).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    cfg = build(
        lora.Config,
        {
            "task": "lm",
            "model": str(model_dir),
            "steps": "4",
            "off_at": "2",
            "eval_every": "2",
            "batch_size": "2",
            "block_size": "16",
            "val_windows": "4",
            "weight_decays": "0.1",
            "seeds": "0",
            "baseline": "false",
            "auto_off": "false",
        },
    )
    summary = lora.run(cfg, tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "groups" / "wd0.1-seed0" / "metrics.csv")
    assert {r["arm"] for r in rows} == {"constant", "off@2"}
    assert any(k.endswith("c_attn/rho") for k in rows[0])
    assert math.isfinite(float(rows[-1]["val_loss"])) and float(rows[-1]["val_loss"]) < 12
    assert "local-gpt2" in summary["table"]


def test_lm_task_subset_first_and_full_set_only_at_the_end():
    """The fixed subset's windows fill the first batches; during training only they are evaluated, the full
    set (with its per-window standard error) at the last step."""
    from mirrorflow.data.datasets import load_tinyshakespeare
    from mirrorflow.experiments.transformer_kit.distributed import dist_env
    from mirrorflow.experiments.transformer_kit.tasks import LMTask
    from mirrorflow.experiments.transformer_kit.train import Trainer

    task = LMTask(load_tinyshakespeare(), None, block_size=16, val_windows=40, val_subset=8, eval_batch=4)
    assert task.subset_batches == 2 and task.n_val == 40 and len(set(task.val_starts)) == 40
    assert task.val_starts[:8] == [sorted(task.val_starts)[5 * i] for i in range(8)]  # every 5th window
    cfg = build(
        lora.Config, {**LM, "steps": "4", "off_at": "2", "eval_every": "2", "val_windows": "40", "val_subset": "8"}
    )
    model = lora.make_model(cfg, task, seed=0)
    tr = Trainer(model, task, cfg.train_spec(0), 0.5, dist_env("cpu"))
    tr.advance(4)
    first, last = tr.rows[0], tr.rows[-1]
    assert math.isnan(first["val_loss"]) and math.isfinite(first["val_loss_subset"])
    assert math.isfinite(last["val_loss"]) and 0 < last["val_loss_sem"] < 0.5
    # by hand: per-window mean losses over all 40 windows
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        w = []
        for b in task.eval_batches():
            x = b["tokens"]
            z = model(input_ids=x[:, :-1]).logits.float()
            w += (
                F.cross_entropy(z.reshape(-1, z.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
                .view(len(x), -1)
                .mean(1)
                .tolist()
            )
        sub = w[:8]
    t = torch.tensor(w, dtype=torch.float64)
    assert last["val_loss"] == pytest.approx(float(t.mean()), rel=1e-5)
    assert last["val_loss_sem"] == pytest.approx(float(t.std() / math.sqrt(40)), rel=1e-4)
    assert last["val_loss_subset"] == pytest.approx(sum(sub) / 8, rel=1e-5)


def test_off_at_is_a_step_or_a_fraction_of_the_run():
    """``off_at=0.4`` of 60 steps is step 24 (schedules.switch_off_step): one config, one run id."""
    from mirrorflow.config import build, config_dict

    frac, step = (
        build(lora.Config, {"steps": "60", "off_at": "0.4"}),
        build(lora.Config, {"steps": "60", "off_at": "24"}),
    )
    assert frac == step and config_dict(frac)["off_at"] == 24


def test_run_grid_in_this_process_trains_with_the_configured_threads(tmp_path):
    """``run_grid`` (the LoRA study's entry point) with ``workers=1`` computes in this process: every training
    step runs with ``threads`` torch threads, and the caller's setting is restored afterwards."""
    import torch

    cfg = build(lora.Config, {**LM, "seeds": "0", "baseline": "false", "auto_off": "false", "threads": "1"})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[int] = []
        grid, _ = lora.run_grid(cfg, tmp_path, progress=lambda k: seen.append(torch.get_num_threads()))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
        assert [a.name for a in grid[0.5][0]] == ["constant", "off@6"]
    finally:
        torch.set_num_threads(before)

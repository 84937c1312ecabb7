"""Faults around the run store (issue 21): two writers of one directory, a full disk, stale or truncated results,
and the messages of a damaged environment (offline hub, an ASCII terminal, a damaged compiled kernel, NaN data).

Every command that writes a directory holds its lock (``store.StoreLock``), a failed command leaves nothing
half-written (``store.writing``), and a directory is reused only when it holds a finished, complete run of
exactly the config asked for (``RunDir.finished_run``).
"""

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import warnings

import pytest
import yaml

from mirrorflow.cli import main
from mirrorflow.store import RunDir, read_csv

MS = ["matrix-sensing", "n=6", "r=1", "steps=40"]
PHASE = ["matrix-sensing", "x=wd:1e-2:1:2:log", "y=init_scale:0.01:0.1:2", "n=6", "r=1", "steps=40"]


def _snapshot(root):
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
        for p in sorted(root.rglob("*"))
    }


def _cli(args, capsys):
    """Exit code and stderr of ``mirrorflow ARGS`` run in-process (0 when the command returns)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A finished two-run sweep (the input of the report cases)."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    main(["sweep", *MS, "wd=0.01,0.1", "--out", str(out), "--workers", "1"])
    return out


# ------------------------------------------------------------------------------ two writers, one --out
class Holder:
    """Another process that holds the lock of ``path`` (as a running ``mirrorflow`` command does) until closed."""

    def __init__(self, path):
        code = (
            "import sys; from mirrorflow.store import StoreLock; l = StoreLock(sys.argv[1]).__enter__(); "
            "print('held', flush=True); sys.stdin.read()"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "held"

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


WRITERS = {
    "run": lambda out, rep: ["run", *MS, "--out", out],
    "run --force": lambda out, rep: ["run", *MS, "--force", "--out", out],
    "phase": lambda out, rep: ["phase", *PHASE, "--out", out],
    "sweep": lambda out, rep: ["sweep", *MS, "wd=0.01,0.1", "--workers", "1", "--out", out],
    "reproduce": lambda out, rep: [
        "reproduce",
        "diagonal",
        "models=linear",
        "steps=20",
        "off_at=10",
        "weight_decays=0.1",
        "--out",
        out,
    ],
    "report": lambda out, rep: ["report", rep, "--out", out],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(WRITERS))
def test_a_second_writer_of_a_locked_directory_is_refused_and_changes_nothing(tmp_path, capsys, sweep_dir, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the first writer's file\n")
    holder = Holder(out)
    try:
        before = _snapshot(tmp_path)
        code, _, err = _cli(WRITERS[name](out, sweep_dir), capsys)
        assert code == 2, err
        assert err.strip() == (
            f"error: another mirrorflow command is writing {out} (it is locked): wait for it to "
            "end or choose another --out"
        )
        assert _snapshot(tmp_path) == before
    finally:
        holder.close()
    code, _, err = _cli(WRITERS[name](out, sweep_dir), capsys)  # the lock went with the process
    assert code == 0, err


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "phase"])
def test_two_concurrent_writers_with_different_configs_one_wins_whole(tmp_path, command):
    """Two real processes write one --out with different configs: one finishes, the other exits 2 with one
    line (the lock, or the finished run of another config); the directory holds the winner's config whole."""
    out = tmp_path / "o"
    args = (
        [["run", *MS[:-1], f"steps={s}"] for s in (40, 60)]
        if command == "run"
        else [["phase", *PHASE[:-1], f"steps={s}"] for s in (40, 60)]
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mirrorflow", *a, "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in args
    ]
    results = [p.communicate() + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[2] == 2)[1].strip().splitlines()
    assert len(loser) == 1 and (
        "another mirrorflow command is writing" in loser[0] or "holds a finished run of another config" in loser[0]
    ), loser
    winner = next(i for i, r in enumerate(results) if r[2] == 0)
    steps = (40, 60)[winner]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["steps"] if command == "run" else cfg["base"]["steps"]) == steps
    assert RunDir(out).complete()


# ------------------------------------------------------------------------------------- a full disk
@pytest.fixture
def full_disk(tmp_path):
    """A 16 KiB tmpfs (room for a config, not for a figure), mounted when running as root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


FULL = {
    "run": lambda out, rep: ["run", *MS, "--out", out],
    "phase": lambda out, rep: ["phase", *PHASE, "--out", out],
    "reproduce": lambda out, rep: [
        "reproduce",
        "diagonal",
        "models=linear",
        "steps=20",
        "off_at=10",
        "weight_decays=0.1",
        "--out",
        out,
    ],
    "report": lambda out, rep: ["report", rep, "--out", out],
}


@pytest.mark.parametrize("fresh", [True, False], ids=["new --out", "existing --out"])
@pytest.mark.parametrize("name", list(FULL))
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(full_disk, capsys, sweep_dir, name, fresh):
    out = full_disk / "o"
    if not fresh:
        out.mkdir()
        (out / "notes.txt").write_text("kept\n")
    before = _snapshot(full_disk)
    code, _, err = _cli(FULL[name](out, sweep_dir), capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {out}/") and lines[0].endswith(": No space left on device"), lines
    after = _snapshot(full_disk)
    if name == "phase":  # finished programs stay to be resumed (whole JSON files), with the config they belong to
        kept = {
            k
            for k in set(after) - set(before)
            if k in ("o", "o/config.yaml", "o/groups") or (k.startswith("o/groups/") and k.endswith(".json"))
        }
        assert set(after) - set(before) == kept
        for k in kept:
            if k.endswith(".json"):
                json.loads((full_disk / k).read_text())
        after = {k: v for k, v in after.items() if k not in kept}
    assert after == before  # a new --out is gone again; an existing one holds what it held


def test_a_sweep_on_a_full_disk_keeps_only_whole_runs(full_disk, capsys):
    out = full_disk / "s"
    code, _, err = _cli(["sweep", *MS, "wd=0.01,0.1", "--workers", "1", "--out", out], capsys)
    assert code == 1 and "2 runs failed" in err and "No space left on device" in err
    for d in (p for p in out.iterdir() if p.is_dir()):  # whatever is left is a whole run or a recorded error
        assert (d / "summary.json").is_file() or (d / "error.txt").is_file(), sorted(os.listdir(d))


# ------------------------------------------------------------------------------ stale and damaged results
@pytest.mark.slow
def test_phase_refuses_a_finished_grid_of_other_bounds_and_redoes_a_truncated_one(tmp_path, capsys):
    out = tmp_path / "p"
    assert _cli(["phase", *PHASE, "--out", out], capsys)[0] == 0
    cells = (out / "cells.csv").read_bytes()
    assert len(read_csv(out / "cells.csv")) == 12  # 2 × 2 cells × 3 schedules
    code, stdout, err = _cli(["phase", *PHASE[:1], "x=wd:1e-3:1:2:log", *PHASE[2:], "--out", out], capsys)
    assert code == 2 and err.startswith(
        f"error: {out} holds a finished run of another config (x: wd:0.01:1:2:log → wd:0.001:1:2:log"
    )
    (out / "cells.csv").write_bytes(cells[: len(cells) // 2])  # cut short after the grid finished
    assert not RunDir(out).complete()
    code, stdout, err = _cli(["phase", *PHASE, "--out", out], capsys)
    assert code == 0, err
    assert (out / "cells.csv").read_bytes() == cells and RunDir(out).complete()


@pytest.mark.slow
def test_run_redoes_a_truncated_run_and_reuses_a_whole_one(tmp_path, capsys):
    out = tmp_path / "r"
    assert _cli(["run", *MS, "--out", out], capsys)[0] == 0
    metrics = (out / "metrics.csv").read_bytes()
    code, stdout, _ = _cli(["run", *MS, "--out", out], capsys)
    assert code == 0 and f"finished run found in {out}" in stdout
    (out / "metrics.csv").write_bytes(metrics[:-10])
    code, stdout, _ = _cli(["run", *MS, "--out", out], capsys)
    assert code == 0 and "finished run found" not in stdout
    assert (out / "metrics.csv").read_bytes() == metrics


@pytest.mark.slow
def test_sweep_redoes_only_the_truncated_run(tmp_path, capsys):
    out = tmp_path / "s"
    assert _cli(["sweep", *MS, "wd=0.01,0.1", "--workers", "1", "--out", out], capsys)[0] == 0
    victim = sorted(p for p in out.iterdir() if p.is_dir())[0]
    (victim / "metrics.csv").write_text("step,tr")
    code, stdout, _ = _cli(["sweep", *MS, "wd=0.01,0.1", "--workers", "1", "--out", out], capsys)
    assert code == 0 and "2 runs: 1 finished before, 1 run now, 0 failed" in stdout
    assert RunDir(victim).complete()


def test_report_leaves_a_truncated_run_out_and_names_it(tmp_path, capsys, sweep_dir):
    import shutil

    sweep = tmp_path / "s"
    shutil.copytree(sweep_dir, sweep, ignore=shutil.ignore_patterns("report"))
    victim = sorted(p for p in sweep.iterdir() if p.is_dir())[0]
    (victim / "metrics.csv").write_text("step,tr")
    from mirrorflow.report.aggregate import collect

    s = collect(sweep)
    assert len(s.runs) == 1 and victim.name not in {r.run_id for r in s.runs}
    assert re.fullmatch(
        rf"{re.escape(str(victim))}/metrics.csv: 7 bytes, \d+ were written \(truncated or changed\)",
        s.failed[victim.name],
    ), s.failed[victim.name]


def test_group_cache_is_the_config_minus_volatile_keys_and_must_be_whole(tmp_path):
    from mirrorflow.experiments.transformer_kit.groups import GroupJob, group_done, save_group
    from mirrorflow.experiments.transformer_kit.train import ArmResult

    cfg = {"experiment": "lora", "rank": 4, "weight_decay": 0.1, "seed": 0, "workers": 2, "threads": 1}
    path = tmp_path / "groups" / "wd0.1-seed0"
    save_group(
        path, cfg, [ArmResult("constant", 0.1, [{"step": 0, "val_loss": 1.0}, {"step": 2, "val_loss": 0.5}])], 1.0
    )
    assert group_done(GroupJob(path, cfg, 2))
    assert group_done(GroupJob(path, {**cfg, "workers": 4, "threads": 2, "device": "cpu"}, 2))  # volatile keys
    assert not group_done(GroupJob(path, {**cfg, "seed": 1}, 2))
    (path / "metrics.csv").write_text("arm,value,step\n")
    assert not group_done(GroupJob(path, cfg, 2))  # truncated: computed again


def test_a_new_or_changed_config_key_makes_a_cached_group_stale(tmp_path):
    """The group cache key is the whole config minus the volatile and grid keys (store.cache_key): a changed
    value or a field added to the config recomputes the group; workers, threads, device and the grid's other
    seeds and weight decays do not. Attention: a ViT group does not read the fine-tuning keys, and back."""
    import dataclasses

    from mirrorflow.config import build
    from mirrorflow.experiments import attention, lora
    from mirrorflow.experiments.attention.run import finetune_job, vit_job
    from mirrorflow.experiments.transformer_kit.groups import group_done, save_group
    from mirrorflow.experiments.transformer_kit.train import ArmResult

    def cached(job):
        save_group(job.path, job.config, [ArmResult("constant", 0.1, [{"step": 0, "val_loss": 1.0}])], 1.0)
        return job

    base = {"weight_decays": "0.1", "seeds": "0", "steps": "4", "off_at": "2"}
    job = cached(lora.group_job(build(lora.Config, base), tmp_path, 0.1, 0))
    same = {"workers": "3", "threads": "0", "device": "cpu", "seeds": "0,5", "weight_decays": "0.1,1", "baseline": "1"}
    assert group_done(lora.group_job(build(lora.Config, {**base, **same}), tmp_path, 0.1, 0))
    for changed in ({"lr": "0.05"}, {"off_at": "3"}, {"auto_off": "true"}, {"rank": "4"}, {"precision": "bf16"}):
        assert not group_done(lora.group_job(build(lora.Config, {**base, **changed}), tmp_path, 0.1, 0)), changed

    @dataclasses.dataclass(frozen=True)
    class Extended(lora.Config):  # a field added to the config after the group was written
        new_knob: int = 0

    assert not group_done(lora.group_job(build(Extended, base), tmp_path, 0.1, 0))
    assert job.config == lora.group_job(build(lora.Config, base), tmp_path, 0.1, 0).config

    cfg = build(
        attention.Config,
        {"epochs": "5", "ablation_off_epochs": "2", "seeds": "0", "finetune_steps": "4", "finetune_off_at": "2"},
    )
    vit, ft = cached(vit_job(cfg, tmp_path, "sweep", 1.0, 0)), cached(finetune_job(cfg, tmp_path, 1.0, 0))
    other_ft = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, lr=0.5))
    assert group_done(vit_job(other_ft, tmp_path, "sweep", 1.0, 0)) and not group_done(
        finetune_job(other_ft, tmp_path, 1.0, 0)
    )
    other_vit = dataclasses.replace(cfg, digits=dataclasses.replace(cfg.digits, hidden=16))
    assert not group_done(vit_job(other_vit, tmp_path, "sweep", 1.0, 0)) and group_done(
        finetune_job(other_vit, tmp_path, 1.0, 0)
    )
    more = dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, weight_decays=(1.0, 5.0)), seeds=(0, 1))
    assert group_done(vit_job(more, tmp_path, "sweep", 1.0, 0)) and group_done(ft)
    assert not group_done(vit_job(dataclasses.replace(cfg, hub=True), tmp_path, "sweep", 1.0, 0))
    assert vit.config["part"] == "sweep" and "finetune_lr" not in vit.config and "finetune_lr" in ft.config


def test_finish_records_the_sizes_and_summary_hides_them(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.write_config({"experiment": "probe", "x": 1})
    rd.write_metrics([{"step": 0, "loss": 1.0}])
    rd.finish({"status": "finished", "loss": 1.0})
    raw = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert raw["files"] == {
        "config.yaml": (tmp_path / "r" / "config.yaml").stat().st_size,
        "metrics.csv": (tmp_path / "r" / "metrics.csv").stat().st_size,
    }
    assert rd.summary() == {"status": "finished", "loss": 1.0}
    assert rd.finished_run({"experiment": "probe", "x": 1}) == []
    assert rd.finished_run({"experiment": "probe", "x": 2}) == ["x: 1 → 2"]
    assert rd.finished_run({"experiment": "probe", "x": 2, "workers": 3}, ignore=("x", "workers")) == []
    (tmp_path / "r" / "config.yaml").unlink()
    assert rd.finished_run({"experiment": "probe", "x": 1}) is None


# ------------------------------------------------------------------------------------------ messages
def test_an_unknown_model_without_hub_makes_no_network_call(monkeypatch):
    import socket

    import huggingface_hub.constants as hc
    from transformers import AutoConfig

    from mirrorflow.errors import ModelError
    from mirrorflow.experiments.transformer_kit.models import load_pretrained

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    calls = []

    def connect(self, address, *a):
        calls.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    with pytest.raises(ModelError, match="unknown model 'someorg/no-such-model'"):
        load_pretrained(AutoConfig.from_pretrained, "someorg/no-such-model")
    assert calls == []
    assert hc.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ  # restored afterwards


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["--help"], 0, "Weight-decay schedules"),
        (["legendre", "--help"], 0, "accumulated regularizations a"),
        (["phase", "--help"], 0, "Phase diagram"),
        (["legendre", "mw", "--a", "5"], 2, "error: --a: a = -"),
        (["run", "matrix-sensing", "schedule=none", "wd=0.5", "--dry-run"], 2, "error: wd=0.5 has no effect"),
    ],
)
@pytest.mark.slow
def test_an_ascii_terminal_gets_escapes_not_a_traceback(tmp_path, args, code, needle):
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    p = subprocess.run(
        [sys.executable, "-m", "mirrorflow", *args], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr and "codec can't encode" not in p.stderr
    assert needle in (p.stdout if code == 0 else p.stderr)
    assert code == 0 or len(p.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_damaged_cached_kernel_is_rebuilt(tmp_path, monkeypatch, caplog):
    import torch

    from mirrorflow.experiments.sparse_coding import dictionary as D

    monkeypatch.setenv("MIRRORFLOW_CACHE", str(tmp_path))
    monkeypatch.setattr(D, "_LIBS", {})
    so = D._compile("double")  # compiled into the cache (not loaded: a loaded library is mapped, not re-read)
    if so is None:
        pytest.skip("no working C compiler: the torch loop is used and nothing is cached")
    so.unlink()
    so.write_bytes(b"not a shared object")  # e.g. a copy cut short, left by an earlier process
    with caplog.at_level("WARNING"):
        lib = D._library(torch.float64)
    assert lib is not None and so.read_bytes()[:4] == b"\x7fELF"
    assert any("cannot be loaded" in r.getMessage() and "rebuilding it" in r.getMessage() for r in caplog.records)


def test_the_tracker_warns_once_when_the_data_are_not_finite():
    import torch

    from mirrorflow import geometry as G
    from mirrorflow.training.tracker import LegendreTracker

    rep = G.get("mw", 3)
    parts = {k: torch.nn.Parameter(v.clone()) for k, v in rep.unpack(rep.init(scale=1.0)).items()}
    opt = torch.optim.SGD(list(parts.values()), lr=0.1)
    Z = torch.ones(2, 3, dtype=torch.float64)
    y = torch.tensor([1.0, float("nan")], dtype=torch.float64)
    tracker = LegendreTracker(rep, parts, opt, every=1, data=(Z, y))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            opt.zero_grad()
            x = tracker.watch(rep.g(torch.cat([p.reshape(-1) for p in parts.values()])))
            r = Z @ x - y
            (0.5 * (r * r).mean()).backward()
            opt.step()
    mine = [w for w in caught if "LegendreTracker" in str(w.message)]
    assert len(mine) == 1 and issubclass(mine[0].category, RuntimeWarning)
    assert "data y" in str(mine[0].message) and "not finite at step 1" in str(mine[0].message)
    assert tracker.history and not any(math.isfinite(h["residual"]) for h in tracker.history)  # said once

"""`mirrorflow run/reproduce --dry-run`: the overrides resolved exactly as the real command resolves them
(presets, seeds, models=, parts=), bad input refused with the real command's one line, nothing created,
and the printed plan is what the real command then runs (same config, same run directory)."""

import pytest
import torch
import yaml

from mirrorflow.cli import main
from mirrorflow.errors import ConfigError
from mirrorflow.runtime import planning, resolve_device

CUDA = torch.cuda.is_available()


def mf(capsys, *args):
    """Run the command line in this process: (exit code, stdout lines, stderr lines)."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out.strip().splitlines(), out.err.strip().splitlines()


def parse(line: str) -> dict:
    """``[label: ]k=v k=v ...`` → {k: v} (strings)."""
    return dict(tok.split("=", 1) for tok in line.split(": ", 1)[-1].split())


def test_run_dry_run_is_what_the_run_then_does(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["run", "matrix-sensing", "n=6", "r=1", "steps=40", "schedule=turn_off", "wd=0.2", "off_at=0.5"]
    code, out, err = mf(capsys, *args, "--dry-run")
    assert code == 0, err
    assert not (tmp_path / "runs").exists()  # nothing created
    planned = parse(out[0])
    assert planned["n"] == "6" and planned["schedule"] == "turn_off" and planned["off_at"] == "0.5"
    assert planned["lr"] == "0.25" and planned["device"] == "auto"  # defaults are shown too
    assert out[-1].startswith("run directory: runs/matrix-sensing-")
    code, real, err = mf(capsys, *args)
    assert code == 0, err
    assert real[-1] == out[-1]  # the same run id
    written = yaml.safe_load((tmp_path / out[-1].split(": ")[1] / "config.yaml").read_text())
    assert {k: str(v) for k, v in written.items() if k != "experiment"} == planned


@pytest.mark.slow
def test_reproduce_dry_run_is_what_the_reproduction_then_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["reproduce", "matrix-sensing", "n=6", "r=1", "steps=60", "log_every=20"]
    code, out, err = mf(capsys, *args, "--dry-run")
    assert code == 0, err
    assert out[0] == "options: preset=table2" and out[1].startswith("table2: n=6 r=1 m=0")
    assert not (tmp_path / "runs").exists()
    code, real, err = mf(capsys, *args)
    assert code == 0, err
    assert real[-1] == out[-1]
    written = yaml.safe_load((tmp_path / out[-1].split(": ")[1] / "config.yaml").read_text())
    assert written.pop("reproduce") == "table2" and written.pop("experiment") == "matrix-sensing"
    assert {k: str(v) for k, v in written.items()} == parse(out[1])


@pytest.mark.parametrize(
    "args,lines",
    [
        (["matrix-sensing", "preset=paper-horizon"], ["options: preset=paper-horizon seeds=0,1,2,3,4", "steps=1200"]),
        (["matrix-sensing", "seeds=0,1"], ["options: preset=table2 seeds=0,1", "steps=4000"]),
        (
            ["diagonal", "models=mwv,power", "seeds=3"],
            ["options: models=mwv,power seeds=3", "mwv: model=mwv", "power: model=power"],
        ),
        (["sparse-coding", "preset=authors"], ["options: preset=authors", "lr_scale=0.01 dict_update=per_sample"]),
        (
            ["sparse-coding", "image_size=16", "log_alphas=0,1"],
            [
                "options: preset=paper",
                "power: param=power ks=1,2,3,4",
                "log: param=log ks=1,2,3,4,5,6,7,8,9,10 alphas=0.0,1.0",
            ],
        ),
        (["lora", "seeds=0,1", "weight_decays=0.01,0.1"], ["lora: task=lm", "weight_decays=0.01,0.1", "seeds=0,1 "]),
        (["attention", "parts=finetune,sweep"], ["attention: parts=finetune,sweep seeds=0,1"]),
    ],
)
def test_reproduce_dry_run_resolves_presets_and_lists(capsys, tmp_path, monkeypatch, args, lines):
    monkeypatch.chdir(tmp_path)
    code, out, err = mf(capsys, "reproduce", *args, "--dry-run")
    assert code == 0, err
    text = "\n".join(out)
    for want in lines:
        assert want in text, (want, text)
    assert out[-1].startswith("run directory: runs/reproduce-")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args,needle",
    [
        (["run", "matrix-sensing", "bogus=1"], "error: unknown config key 'bogus'"),
        (["run", "diagonal", "weight_decays=0,x"], "error: weight_decays: expected a number, got 'x'"),
        (["reproduce", "matrix-sensing", "preset=nope"], "error: preset must be one of table2"),
        (["reproduce", "matrix-sensing", "wd=0"], "error: wd must be positive for reproduce"),
        (["reproduce", "diagonal", "models=mw,deep"], "error: models: unknown model 'deep'"),
        (["reproduce", "sparse-coding", "param=log"], "error: param: reproduce runs both"),
        (["reproduce", "sparse-coding", "preset=authors", "n_atoms=0"], "error: n_atoms must be positive"),
        (["reproduce", "lora", "off_at=100"], "error: off_at must be a step in 1..59 or a fraction"),
        (["reproduce", "attention", "parts=sweep,bogus"], "error: parts must be among"),
        (["reproduce", "matrix-sensing", "device=tpu"], "error: device must be one of"),
    ],
)
def test_dry_run_refuses_bad_input_like_the_real_command(capsys, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = mf(capsys, *args, "--dry-run")
    assert (code, len(err)) == (2, 1) and err[0].startswith(needle), err
    assert out == [] and list(tmp_path.iterdir()) == []
    assert mf(capsys, *args, "--out", "never")[:3:2] == (2, err)  # the real command: the same line


@pytest.mark.parametrize(
    "args",
    [
        ["run", "matrix-sensing", "n=6", "r=1", "steps=10"],
        ["reproduce", "diagonal", "steps=10", "off_at=5"],
        ["reproduce", "sparse-coding", "preset=authors", "image_size=16"],
        ["sweep", "matrix-sensing", "n=6", "r=1", "wd=0,0.1"],
    ],
)
def test_a_plan_for_a_gpu_machine_dry_runs_here(capsys, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    code, out, err = mf(capsys, *args, "device=cuda", "--dry-run")
    assert code == 0, err
    assert ("2 runs into" if args[0] == "sweep" else "device=cuda") in "\n".join(out)
    assert list(tmp_path.iterdir()) == []
    if not CUDA:  # the real command still refuses it here, in one line, before creating anything
        code, _, err = mf(capsys, *args, "device=cuda")
        assert code == 2 and len(err) == 1 and "device=cuda: CUDA is not available" in err[0]
        assert list(tmp_path.iterdir()) == []


def test_planning_accepts_a_device_name_without_the_device():
    with planning():
        assert resolve_device("cuda:3") == torch.device("cuda:3")
        with pytest.raises(ConfigError, match="device must be one of"):
            resolve_device("gpu")  # a bad name is still refused
    if not CUDA:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")  # outside the block: checked again


@pytest.mark.slow
def test_phase_dry_run_is_the_grid_the_phase_command_then_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["phase", "matrix-sensing", "x=wd:1e-3:1e-1:2:log", "y=init_scale:1e-3:1e-1:3:log", "n=6", "r=1", "steps=30"]
    code, out, err = mf(capsys, *args, "--dry-run")
    assert code == 0, err
    assert out[0].startswith("experiment=matrix-sensing x=wd:0.001:0.1:2:log y=init_scale:0.001:0.1:3:log")
    assert out[1].startswith("base: n=6 r=1") and out[2] == "6 cells × 3 schedules × 1 seed"
    assert list(tmp_path.iterdir()) == []
    code, real, err = mf(capsys, *args)
    assert code == 0, err
    assert real[-1] == out[-1] and "experiment: matrix-sensing" in real and "cells_per_schedule: 6" in real
    code, _, err = mf(capsys, "phase", "matrix-sensing", "x=wd:1e-3:1:2:log", "y=nope:1:2:2", "--dry-run")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: y") and "nope" in err[0]

"""CLI behaviour: run / reproduce, the run store, and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest
import yaml


def mf(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mirrorflow", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_help_everywhere():
    for args in ([], ["run"], ["reproduce"]):
        p = mf(*args, "--help")
        assert p.returncode == 0, p.stderr
        assert "Usage" in p.stdout


@pytest.mark.slow
def test_run_writes_a_run_directory_and_skips_finished_work(tmp_path):
    out = tmp_path / "run"
    args = [
        "run",
        "matrix-sensing",
        "n=8",
        "r=2",
        "steps=300",
        "schedule=turn_off",
        "wd=0.2",
        "off_at=0.1",
        "--out",
        out,
    ]
    p = mf(*args)
    assert p.returncode == 0, p.stderr
    for name in ("config.yaml", "metrics.csv", "summary.json", "curves.png"):
        assert (out / name).is_file(), name
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["n"] == 8 and cfg["schedule"] == "turn_off" and cfg["off_at"] == 0.1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["a_final"] == pytest.approx(-0.25 * 0.2 * 30)  # a = -η Σλ, off after 10% of 300 steps
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,train_loss,rec_error,nuclear_norm,effective_rank,lam,a")
    assert len(lines) == 1 + 300 // 20 + 1
    again = mf(*args)
    assert again.returncode == 0 and "finished run found" in again.stdout
    forced = mf(*args, "--force")
    assert forced.returncode == 0 and "finished run found" not in forced.stdout


@pytest.mark.slow
def test_default_run_directory_is_the_config_hash(tmp_path):
    p = mf("run", "matrix-sensing", "n=6", "r=1", "steps=50", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (d,) = (tmp_path / "runs").iterdir()
    assert d.name.startswith("matrix-sensing-") and len(d.name) == len("matrix-sensing-") + 12
    p2 = mf("run", "matrix-sensing", "steps=50", "r=1", "n=6", cwd=tmp_path)  # same config, other order
    assert "finished run found" in p2.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "matrix-sensing", "bogus=1"], "unknown config key 'bogus'"),
        (["run", "matrix-sensing", "n=abc"], "n: expected an integer"),
        (["run", "matrix-sensing", "n=-3"], "n must be positive"),
        (["run", "matrix-sensing", "lr=0"], "lr must be positive"),
        (["run", "matrix-sensing", "lr=-1e-3"], "lr must be positive"),
        (["run", "matrix-sensing", "steps=2.5"], "steps: expected an integer"),
        (["run", "matrix-sensing", "schedule=sometimes"], "schedule must be one of"),
        (["run", "matrix-sensing", "schedule=turn_off", "off_at=5000", "steps=100"], "off_at must be a step in 1..99"),
        (["run", "matrix-sensing", "wd=nan"], "wd must be non-negative"),
        (["run", "matrix-sensing", "n"], "expected key=value"),
        (["run", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
        (["reproduce", "matrix-sensing", "r=0"], "r must be in"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needle):
    out = tmp_path / "out"
    p = mf(*args, "--out", out)
    assert p.returncode == 2, (p.stdout, p.stderr)
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["frobnicate"], "No such command 'frobnicate'"),
        (["run", "matrix-sensing", "--workers", "abc"], "No such option: --workers"),
        (["sweep", "matrix-sensing", "--workers", "abc"], "Invalid value for '--workers'"),
        (["run"], "Missing argument 'experiment'"),
        (["report"], "Missing argument 'directory'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, needle):
    """Usage errors raised by click (the copy typer bundles or the standalone one) are mapped to one line."""
    p = mf(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], p.stderr


def test_no_arguments_shows_the_help_and_exits_2():
    p = mf()
    assert p.returncode == 2 and "Usage" in p.stdout and "Traceback" not in p.stderr


def test_version():
    from importlib.metadata import version

    p = mf("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"mirrorflow {version('mirrorflow')}"

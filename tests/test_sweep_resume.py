"""Local sweeps: SIGKILL a real `mirrorflow sweep` mid-way, re-run it, and only the missing runs are done;
failing runs are recorded and retried; the generic (non-batched) path runs ``mod.run`` per config."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from mirrorflow.engine.grid import resolve
from mirrorflow.engine.sweep import sweep
from mirrorflow.experiments import load
from mirrorflow.store import read_csv, run_id

AXES = ["n=8", "r=2", "steps=200", "wd=0,0.1", "seeds=2"]


def check_finished(run_dir, steps=200, log_every=20):
    """A finished run directory is whole: valid summary, full metrics.csv, config.yaml that hashes to its id."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    for k in ("nuclear_norm", "train_loss", "rec_error", "a_final"):
        assert isinstance(summary[k], float)
    rows = read_csv(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(0, steps + 1, log_every))
    assert float(rows[-1]["nuclear_norm"]) == pytest.approx(summary["nuclear_norm"], rel=1e-12)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert run_id(cfg, prefix="matrix-sensing") == run_dir.name
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    return summary


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_completes_only_the_missing_runs(tmp_path):
    out = tmp_path / "sweep"
    ids = [p.run_id for p in resolve("matrix-sensing", load("matrix-sensing"), None, AXES)[1]]
    assert len(ids) == 4
    cmd = [sys.executable, "-m", "mirrorflow", "sweep", "matrix-sensing", *AXES, "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        while proc.poll() is None and not list(out.glob("*/summary.json")):
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its pool workers, mid-sweep
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    finished = sorted(p.parent for p in out.glob("*/summary.json"))
    assert 1 <= len(finished) < 4
    before = {}
    for d in finished:
        check_finished(d)
        before[d.name] = (
            (d / "summary.json").read_bytes(),
            (d / "summary.json").stat().st_mtime_ns,
            (d / "metrics.csv").read_bytes(),
        )

    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"4 runs: {len(finished)} finished before, {4 - len(finished)} run now, 0 failed" in again.stdout
    assert sorted(p.parent.name for p in out.glob("*/summary.json")) == sorted(ids)
    for rid in ids:
        check_finished(out / rid)
    for name, (summary, mtime, metrics) in before.items():  # finished runs were neither redone nor touched
        assert (out / name / "summary.json").read_bytes() == summary
        assert (out / name / "summary.json").stat().st_mtime_ns == mtime
        assert (out / name / "metrics.csv").read_bytes() == metrics
    manifest = yaml.safe_load((out / "sweep.yaml").read_text())
    assert manifest["experiment"] == "matrix-sensing" and manifest["axes"] == ["wd", "seed"]
    assert [r["id"] for r in manifest["runs"]] == ids


PROBE = textwrap.dedent('''
    """A tiny experiment without the batched trio: one ``run`` per config (the generic sweep path)."""
    import os
    from dataclasses import dataclass

    from mirrorflow.config import config_dict
    from mirrorflow.store import RunDir


    @dataclass(frozen=True)
    class Config:
        x: float = 1.0
        seed: int = 0

        def validate(self):
            pass


    def run(cfg, out, progress=None):
        if cfg.x < 0:
            raise RuntimeError(f"negative x={cfg.x}")
        rd = RunDir(out)
        rd.write_config({"experiment": "sweep-probe", **config_dict(cfg)})
        rd.write_metrics([{"step": 0, "value": cfg.x}, {"step": 1, "value": cfg.x ** 2 + cfg.seed}])
        return rd.finish({"value": cfg.x ** 2 + cfg.seed, "pid": os.getpid(), "status": "finished"})
''')


@pytest.fixture
def probe(plugin_experiment):
    return plugin_experiment("sweep-probe", PROBE)


@pytest.mark.slow
def test_generic_experiment_runs_on_a_process_pool_and_failures_are_recorded_and_retried(tmp_path, probe):
    out = tmp_path / "s"
    grid, points = resolve(probe, load(probe), None, ["x=-1,2,3", "seeds=2"])
    half = out / points[-1].run_id  # what a killed sweep leaves: files, a temp file, no summary
    half.mkdir(parents=True)
    (half / "metrics.csv").write_text("step,value\n0,garbage\n")
    (half / ".summary.json.abc.tmp").write_text("{")
    res = sweep(grid, points, out, workers=2)
    assert (res.total, res.skipped, res.completed) == (6, 0, 4)
    bad = {p.run_id for p in points if p.config.x < 0}
    assert set(res.failed) == bad and all("negative x=-1.0" in e for e in res.failed.values())
    for p in points:
        d = out / p.run_id
        if p.run_id in bad:
            assert not (d / "summary.json").exists() and "RuntimeError" in (d / "error.txt").read_text()
        else:
            assert json.loads((d / "summary.json").read_text())["value"] == p.config.x**2 + p.config.seed
    assert not (half / ".summary.json.abc.tmp").exists()
    assert read_csv(half / "metrics.csv")[0]["value"] == str(points[-1].config.x)
    pids = {json.loads((out / p.run_id / "summary.json").read_text())["pid"] for p in points if p.run_id not in bad}
    assert os.getpid() not in pids  # ran in pool workers, not in this process
    # a damaged summary is not a finished run: the next sweep redoes that run
    ok_point = next(p for p in points if p.config.x > 0)
    damaged = out / ok_point.run_id
    (damaged / "summary.json").write_text("[1, 2]")
    # re-running retries exactly the failed runs
    res2 = sweep(grid, points, out, workers=2)
    assert (res2.skipped, res2.completed, set(res2.failed)) == (3, 1, bad)
    assert json.loads((damaged / "summary.json").read_text())["value"] == ok_point.config.x**2 + ok_point.config.seed
    # a bigger grid into the same store runs only the new points; sweep.yaml lists both grids' runs
    grid3, points3 = resolve(probe, load(probe), None, ["x=-1,2,3", "seeds=3"])
    res3 = sweep(grid3, points3, out, workers=1)
    assert (res3.total, res3.skipped, res3.completed, len(res3.failed)) == (9, 4, 2, 3)
    manifest = yaml.safe_load((out / "sweep.yaml").read_text())
    assert {r["id"] for r in manifest["runs"]} == {p.run_id for p in points3}
    # a finished run of another config under a point's id (config.yaml edited, same size) is not reused
    edited = out / next(p for p in points3 if p.config.x == 2.0).run_id / "config.yaml"
    edited.write_text(edited.read_text().replace("x: 2.0", "x: 7.0"))
    res4 = sweep(grid3, points3, out, workers=1)
    assert (res4.skipped, res4.completed, len(res4.failed)) == (5, 1, 3)
    assert yaml.safe_load(edited.read_text())["x"] == 2.0


@pytest.mark.slow
def test_ctrl_c_mid_sweep_stops_the_workers_leaves_only_whole_runs_and_resumes(tmp_path):
    """SIGINT to the process group (what a terminal's Ctrl-C sends): one line `interrupted`, exit 130, every
    process of the group gone when the sweep exits (the pool's workers are terminated, not left to finish
    more runs), no run directory without a summary, and a re-run finishes exactly the rest."""
    out = tmp_path / "sweep"
    axes = ["n=8", "r=2", "steps=3000", "wd=0,0.1,0.2", "seeds=2"]
    ids = [p.run_id for p in resolve("matrix-sensing", load("matrix-sensing"), None, axes)[1]]
    assert len(ids) == 6
    cmd = [
        sys.executable,
        "-m",
        "mirrorflow",
        "sweep",
        "matrix-sensing",
        *axes,
        "--out",
        str(out),
        "--workers",
        "2",
        "--batch-size",
        "1",
    ]
    # a foreground process of a terminal has SIGINT's default action; the test runner may have been started in
    # the background of a script (SIGINT ignored, inherited by every child), so the child gets the default back
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        while proc.poll() is None and not list(out.glob("*/summary.json")):
            time.sleep(0.005)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    with pytest.raises(ProcessLookupError):  # no worker outlived the sweep
        os.killpg(proc.pid, 0)
    run_dirs = [p for p in out.iterdir() if p.is_dir()]
    finished = [d for d in run_dirs if (d / "summary.json").is_file()]
    assert sorted(run_dirs) == sorted(finished), "a half-written run was left behind"
    assert 1 <= len(finished) < 6
    for d in finished:
        check_finished(d, steps=3000)
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"6 runs: {len(finished)} finished before, {6 - len(finished)} run now, 0 failed" in again.stdout
    assert sorted(p.parent.name for p in out.glob("*/summary.json")) == sorted(ids)

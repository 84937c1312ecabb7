"""Ray backend: a small sweep on a local Ray instance started by the sweep gives the local backend's
results in the same store layout; the CLI connects to an existing instance with --address."""

import json
import subprocess
import sys

import numpy as np
import pytest
import ray  # the ray extra (pip install "mirrorflow[ray]"); CI installs it

from mirrorflow.engine.grid import resolve
from mirrorflow.engine.sweep import sweep
from mirrorflow.experiments import load
from mirrorflow.store import read_csv

pytestmark = pytest.mark.slow

AXES = ["n=8", "r=2", "steps=200", "schedule=turn_off", "wd=0,0.2", "seeds=2"]


def store_contents(out, ids):
    """{run id: (summary without timing and file sizes, metrics.csv columns, metrics.csv as an array, file names)}."""
    got = {}
    for rid in ids:
        d = out / rid
        summary = json.loads((d / "summary.json").read_text())
        summary.pop("seconds")
        summary.pop("files")  # file sizes: equal numbers may print with another last digit on another backend
        rows = read_csv(d / "metrics.csv")
        arr = np.array([[float(v) for v in r.values()] for r in rows])
        got[rid] = (summary, list(rows[0]), arr, sorted(p.name for p in d.iterdir()))
    return got


def assert_same(a, b):
    assert a.keys() == b.keys()
    for rid in a:
        sa, cols_a, arr_a, files_a = a[rid]
        sb, cols_b, arr_b, files_b = b[rid]
        assert files_a == files_b and cols_a == cols_b
        assert sa.keys() == sb.keys()
        for k in sa:
            if isinstance(sa[k], float):
                assert sb[k] == pytest.approx(sa[k], rel=1e-12, abs=1e-300), (rid, k)
            else:
                assert sb[k] == sa[k], (rid, k)
        np.testing.assert_allclose(arr_b, arr_a, rtol=1e-12, atol=0)


@pytest.fixture(scope="module")
def local_results(tmp_path_factory):
    """The local backend's store for AXES (two pool workers, one torch thread each)."""
    grid, points = resolve("matrix-sensing", load("matrix-sensing"), None, AXES)
    out = tmp_path_factory.mktemp("local")
    res = sweep(grid, points, out, backend="local", workers=2, threads=1)
    assert res.completed == 4
    return grid, points, store_contents(out, [p.run_id for p in points])


def test_ray_sweep_on_its_own_local_instance_equals_local_sweep(tmp_path, local_results):
    grid, points, expected = local_results
    assert not ray.is_initialized()
    on_ray = sweep(grid, points, tmp_path / "ray", backend="ray", workers=2)  # starts and stops Ray itself
    assert not ray.is_initialized()
    assert (on_ray.completed, len(on_ray.failed)) == (4, 0)
    assert_same(expected, store_contents(tmp_path / "ray", [p.run_id for p in points]))
    # the sweep's batches did not change the numbers: one run on its own gives the same curve
    from mirrorflow.experiments import matrix_sensing as M

    single = M.run_many([points[3].config])[0]
    np.testing.assert_allclose(single["metrics"]["rec_error"], expected[points[3].run_id][2][:, 2], rtol=1e-10)


def test_cli_connects_to_an_existing_ray_instance_by_address(tmp_path, local_results):
    _, points, expected = local_results
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        # seeds=1 is seed 0 of AXES: the same configs, so the same run ids
        cmd = [
            sys.executable,
            "-m",
            "mirrorflow",
            "sweep",
            "matrix-sensing",
            *AXES[:-1],
            "seeds=1",
            "--out",
            str(tmp_path / "cli"),
            "--backend",
            "ray",
            "--address",
            address,
        ]
        p = subprocess.run(cmd, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert "2 runs: 0 finished before, 2 run now, 0 failed" in p.stdout
        seed0 = [q.run_id for q in points if q.config.seed == 0]
        assert_same({k: expected[k] for k in seed0}, store_contents(tmp_path / "cli", seed0))
    finally:
        ray.shutdown()

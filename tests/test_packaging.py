"""The package a user installs: ``python -m build`` makes an sdist and a wheel (built from the sdist) that
install into a clean virtualenv with the data files and the ``mirrorflow`` command.

Offline: the build uses this environment's setuptools (``--no-isolation``, with the build requirements
checked: pyproject.toml asks for nothing that is not installed, e.g. no ``wheel``); the fresh virtualenv gets the
heavy dependencies (torch, numpy, ...) through a ``.pth`` line naming this environment's site-packages,
placed after its own, so ``mirrorflow`` itself can only come from the installed wheel."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(*cmd, cwd=None):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env=CLEAN_ENV)
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """sdist + wheel of the tracked files (a copy of the checkout, so the checkout gets no build output)."""
    src = tmp_path_factory.mktemp("src")
    files = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            (src / f).write_bytes((ROOT / f).read_bytes())
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src)
    return out


def test_sdist_and_wheel_carry_the_data_files_and_the_extras(dist):
    (whl,) = dist.glob("mirrorflow-*.whl")
    (sdist,) = dist.glob("mirrorflow-*.tar.gz")
    names = zipfile.ZipFile(whl).namelist()
    assert {
        "mirrorflow/data/olivetti/olivettifaces.mat",
        "mirrorflow/data/tinyshakespeare/input.txt",
        "mirrorflow/py.typed",
    } <= set(names)
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith("METADATA"))).decode()
    for extra in ("hf", "lm", "experiments", "ray", "lightning", "wandb", "mlflow", "dev"):
        assert f"Provides-Extra: {extra}" in meta
    assert 'Requires-Dist: transformers>=5.0; extra == "hf"' in meta
    # [hf] is what a user's Trainer needs; the GGUF reader and the experiments' packages come with [lm] / [experiments]
    hf = [line for line in meta.splitlines() if line.endswith('extra == "hf"')]
    assert not any(p in line for line in hf for p in ("gguf", "scikit-learn", "minilm"))
    assert 'Requires-Dist: gguf>=0.19; extra == "lm"' in meta
    assert 'Requires-Dist: scikit-learn>=1.3; extra == "experiments"' in meta
    entry = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "mirrorflow = mirrorflow.cli:main" in entry
    assert sdist.stat().st_size > 1_000_000  # the data files are in the sdist too (the wheel is built from it)


def test_wheel_installs_into_a_fresh_virtualenv(dist, tmp_path):
    (whl,) = dist.glob("mirrorflow-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "zz_shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, numpy, ...
    _run(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", whl)
    check = (
        "import mirrorflow, pathlib; from mirrorflow.data import load_olivetti, load_tinyshakespeare;"
        "print(pathlib.Path(mirrorflow.__file__).parent); print(load_olivetti().shape); "
        "print(len(load_tinyshakespeare()))"
    )
    where, shape, chars = _run(py, "-c", check, cwd=tmp_path).split("\n")[:3]
    assert Path(where) == site / "mirrorflow"
    assert shape == "(400, 4096)" and int(chars) == 1115394
    assert "reproduce" in _run(venv / "bin" / "mirrorflow", "--help", cwd=tmp_path)

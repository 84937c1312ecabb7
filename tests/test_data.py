"""Package-shipped data files: sha256-verified loading, clear errors for missing or corrupted files."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from mirrorflow.data import OLIVETTI, TINY_SHAKESPEARE, load_olivetti, load_tinyshakespeare, sha256_of
from mirrorflow.errors import DataError, MirrorflowError


def test_shipped_copies_match_the_recorded_checksums_and_sizes():
    for spec in (OLIVETTI, TINY_SHAKESPEARE):
        p = spec.default_path
        assert p.is_file()
        assert p.stat().st_size == spec.size
        assert sha256_of(p) == spec.sha256


def test_olivetti_loads_as_400_upright_faces_in_unit_range():
    faces = load_olivetti()
    assert faces.shape == (400, 4096) and faces.dtype == np.float32
    assert faces.min() == 0.0 and faces.max() == 1.0
    imgs = faces.reshape(400, 64, 64)
    # upright: the forehead/hair (top rows) differ from the chin region; the faces are left-right
    # roughly symmetric, top-bottom not. Compare symmetry errors of the mean face.
    mean = imgs.mean(0)
    lr = np.abs(mean - mean[:, ::-1]).mean()
    ud = np.abs(mean - mean[::-1, :]).mean()
    assert lr < 0.5 * ud
    # 40 people × 10 consecutive images: an image's nearest neighbour is mostly the same person
    sq = (faces.astype(np.float64) ** 2).sum(1)
    dist = sq[:, None] + sq[None, :] - 2.0 * faces.astype(np.float64) @ faces.T.astype(np.float64)
    np.fill_diagonal(dist, np.inf)
    person = np.arange(400) // 10
    assert (person[dist.argmin(1)] == person).mean() > 0.8


def test_tinyshakespeare_loads_the_whole_corpus():
    text = load_tinyshakespeare()
    assert len(text) == 1_115_394  # ASCII: characters = bytes
    assert text.startswith("First Citizen:")


def test_loader_rejects_a_corrupted_olivetti_file(tmp_path):
    bad = tmp_path / "olivettifaces.mat"
    shutil.copy(OLIVETTI.default_path, bad)
    data = bytearray(bad.read_bytes())
    data[5000] ^= 0xFF  # one flipped byte
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match="olivettifaces.mat.*corrupted"):
        load_olivetti(bad)


def test_loader_rejects_a_truncated_corpus_and_a_missing_file(tmp_path):
    bad = tmp_path / "input.txt"
    bad.write_text(TINY_SHAKESPEARE.default_path.read_text()[:1000])
    with pytest.raises(DataError, match="input.txt.*corrupted"):
        load_tinyshakespeare(bad)
    missing = tmp_path / "nope" / "olivettifaces.mat"
    with pytest.raises(DataError, match="not found.*olivettifaces.mat"):
        load_olivetti(missing)
    assert issubclass(DataError, MirrorflowError)


def test_directory_instead_of_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not a regular file"):
        load_olivetti(tmp_path)


@pytest.mark.slow
def test_cli_reports_corrupted_package_data_as_one_line(tmp_path):
    """A corrupted shipped file reaches the user as one ``error:`` line naming the file, exit code 2."""
    pkg = tmp_path / "pkg"
    src = OLIVETTI.default_path.parents[2]  # .../src/mirrorflow -> copy the package
    shutil.copytree(src, pkg / "mirrorflow", ignore=shutil.ignore_patterns("__pycache__", "tinyshakespeare"))
    target = pkg / "mirrorflow" / "data" / "olivetti" / "olivettifaces.mat"
    raw = bytearray(target.read_bytes())
    raw[-10] ^= 0x01
    target.write_bytes(bytes(raw))
    code = (
        "import sys; sys.path.insert(0, {!r}); from mirrorflow.cli import main; "
        "main(['run', 'sparse-coding', 'iterations=1', 'image_size=8', 'n_images=20', 'batch_size=10', "
        "'ks=1', '--out', {!r}])".format(str(pkg), str(tmp_path / "run"))
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert str(target) in lines[0] and "corrupted" in lines[0]
    assert "Traceback" not in r.stderr

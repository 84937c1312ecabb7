"""Package-shipped copies of the two data files the paper needs, loaded with a sha256 check.

Nothing is downloaded: the files live next to this module (``olivetti/olivettifaces.mat``,
``tinyshakespeare/input.txt``), and every load verifies the checksum recorded below (the same as in
``shared/data/README.md``). A missing, unreadable or corrupted file raises :class:`DataError` naming the file.

* Olivetti faces (AT&T Laboratories Cambridge, 1992–1994): the data of the sparse-coding experiment
  (App. E). MATLAB v5 file with one variable ``faces``: uint8, shape (4096, 400), one 64×64 image per
  column, column-major pixels. Loaded as scikit-learn's ``fetch_olivetti_faces`` loads it:
  ``faces.T`` as float32, min/max scaled to [0, 1], images transposed to be upright, flattened to 4096.
* tiny_shakespeare (Karpathy, char-rnn, 2015): the corpus of the LoRA experiment (App. F), UTF-8 text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

DATA_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class DataFile:
    """A shipped data file: its path relative to the package data folder, sha256 and size in bytes."""

    relpath: str
    sha256: str
    size: int

    @property
    def default_path(self) -> Path:
        return DATA_DIR / self.relpath


OLIVETTI = DataFile(
    "olivetti/olivettifaces.mat",
    "b1988d02c72fe5b8ee82b5ef3bb7982eafc74f1e1ff0ae0ade35061ad0af534d",
    1_432_511,
)
TINY_SHAKESPEARE = DataFile(
    "tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    1_115_394,
)

OLIVETTI_SHAPE = (400, 64, 64)


def sha256_of(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def verified_path(spec: DataFile, path: Path | str | None = None) -> Path:
    """The path of ``spec`` (or ``path``) after checking it exists and its sha256 matches.

    Raises :class:`DataError` naming the file when it is missing, not a file, unreadable, or its
    checksum differs from the recorded one.
    """
    p = Path(path) if path is not None else spec.default_path
    if not p.exists():
        raise DataError(f"data file not found: {p} (expected the package copy of {spec.relpath})")
    if not p.is_file():
        raise DataError(f"data file is not a regular file: {p}")
    try:
        digest = sha256_of(p)
    except OSError as e:
        raise DataError(f"cannot read data file {p}: {e.strerror or e}") from None
    if digest != spec.sha256:
        raise DataError(
            f"data file {p} is corrupted: sha256 {digest[:16]}… does not match the expected "
            f"{spec.sha256[:16]}… (reinstall mirrorflow or copy the file again)"
        )
    return p


def load_olivetti(path: Path | str | None = None) -> np.ndarray:
    """Olivetti faces as a float32 array of shape (400, 4096) in [0, 1], upright images flattened row-major.

    Same preprocessing as scikit-learn's ``fetch_olivetti_faces``: ``faces.T``, min/max scaling,
    ``reshape(400, 64, 64).transpose(0, 2, 1)``. The faces are *not* centred (the paper's code fits
    the raw faces, docs/theory.md#exp-sparse-coding). ``path`` defaults to the package copy; the sha256 is always
    checked.
    """
    p = verified_path(OLIVETTI, path)
    from scipy.io import loadmat

    try:
        mat = loadmat(p)
    except Exception as e:  # scipy raises several types for malformed files
        raise DataError(f"cannot parse MATLAB file {p}: {e}") from None
    if "faces" not in mat:
        raise DataError(f"MATLAB file {p} has no variable 'faces'")
    faces = np.asarray(mat["faces"]).T.astype(np.float32)
    if faces.shape != (OLIVETTI_SHAPE[0], OLIVETTI_SHAPE[1] * OLIVETTI_SHAPE[2]):
        raise DataError(f"{p}: variable 'faces' has shape {faces.T.shape}, expected (4096, 400)")
    lo, hi = float(faces.min()), float(faces.max())
    faces = (faces - lo) / (hi - lo)
    faces = faces.reshape(OLIVETTI_SHAPE).transpose(0, 2, 1)
    return np.ascontiguousarray(faces.reshape(OLIVETTI_SHAPE[0], -1))


def load_tinyshakespeare(path: Path | str | None = None) -> str:
    """The tiny_shakespeare corpus as one string (1,115,394 characters of UTF-8 text).

    ``path`` defaults to the package copy; the sha256 is always checked.
    """
    p = verified_path(TINY_SHAKESPEARE, path)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data file {p} is not valid UTF-8: {e}") from None

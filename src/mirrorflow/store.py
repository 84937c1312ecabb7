"""Run store: one directory per run (``config.yaml``, ``metrics.csv``, ``summary.json``, figures).

The run id is a hash of the resolved config, so a re-run finds finished work and skips it. Every file is
written to a temporary name in the same directory and renamed (``os.replace`` is atomic on POSIX), and
``summary.json`` is written last: a directory without it is unfinished and is redone.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

SUMMARY = "summary.json"


def run_id(config: Mapping[str, Any], prefix: str = "") -> str:
    """Deterministic id: ``prefix-`` + first 12 hex digits of sha256 of the canonical JSON of ``config``."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return f"{prefix}-{digest}" if prefix else digest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path | str, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers see old or new, never half.

    The file gets the usual mode for new files (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _json_default(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_or_none(x) for x in v]
    return v


def write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write(path, json.dumps(_finite_or_none(obj), indent=2, default=_json_default) + "\n")


def write_yaml(path: Path | str, obj: Any) -> Path:
    return atomic_write(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path: Path | str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Rows of dicts → CSV (columns from the first row unless given)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return atomic_write(path, buf.getvalue())


def read_csv(path: Path | str) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


class RunDir:
    """A run directory. ``done`` is true once ``summary.json`` exists (it is written last)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def done(self) -> bool:
        return (self.path / SUMMARY).is_file()

    def file(self, name: str) -> Path:
        return self.path / name

    def write_config(self, config: Mapping[str, Any]) -> Path:
        return write_yaml(self.path / "config.yaml", dict(config))

    def write_metrics(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
        return write_csv(self.path / "metrics.csv", rows, columns)

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write(self.path / name, text)

    def save_figure(self, name: str, fig) -> Path:
        """Save a matplotlib figure atomically as PNG."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        return atomic_write(self.path / name, buf.getvalue())

    def finish(self, summary: Mapping[str, Any]) -> Path:
        """Write ``summary.json`` last: marks the run complete."""
        return write_json(self.path / SUMMARY, dict(summary))

    def summary(self) -> dict[str, Any]:
        return json.loads((self.path / SUMMARY).read_text())


def runs_under(root: Path | str) -> Iterable[RunDir]:
    """Finished run directories below ``root`` (any depth)."""
    for p in sorted(Path(root).rglob(SUMMARY)):
        yield RunDir(p.parent)

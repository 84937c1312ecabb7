"""Run store: one directory per run (``config.yaml``, ``metrics.csv``, ``summary.json``, figures).

The run id is a hash of the resolved config, so a re-run finds finished work and skips it. Every file is
written to a temporary name in the same directory and renamed (``os.replace`` is atomic on POSIX), and
``summary.json`` is written last: a directory without it is unfinished and is redone. ``summary.json``
records the size of every file written before it (``files``), so a file cut short afterwards (a truncated
``metrics.csv`` or ``cells.csv``) makes the run incomplete rather than finished.

One check decides whether work can be reused, for every command: :meth:`RunDir.finished_run` — "this
directory holds a finished, complete run of exactly this config" (up to keys declared volatile). What "this
config" is for a cached piece of a larger run (a transformer experiment's group of arms) is one rule too,
:func:`cache_key`: the whole config minus the keys that do not change the numbers (:data:`VOLATILE`) and
minus the grid keys that enumerate the pieces; :func:`is_cached` applies the check to it.

A *sweep directory* holds one run directory per grid point plus ``sweep.yaml`` (the experiment, the axes
and the run ids); a run that failed holds ``error.txt`` instead of a summary.

Every command that writes a directory holds :class:`StoreLock` on it (``flock`` on the directory itself:
no lock file is left behind) and writes inside :func:`writing`, which removes what the command created
when it fails (a full disk, an error, Ctrl-C), so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

SUMMARY = "summary.json"
CONFIG = "config.yaml"
METRICS = "metrics.csv"
ERROR = "error.txt"
MANIFEST = "sweep.yaml"
FILES = "files"  # summary.json's record of the files written before it: name → size in bytes


class StoreFileError(ConfigError):
    """A file of the run store that cannot be read or fails validation (the message names its path)."""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StoreFileError(f"{path}: not UTF-8 text") from None


def read_summary(path: Path | str) -> dict[str, Any]:
    """``summary.json`` validated: a JSON object with string keys and, when present, a string ``status``.

    Raises :class:`StoreFileError` naming the file otherwise (such a run is not finished)."""
    path = Path(path)
    text = _read_text(path)
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise StoreFileError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict) or not obj:
        raise StoreFileError(
            f"{path}: expected a JSON object of summary values, got {type(obj).__name__} {json.dumps(obj)[:40]}"
        )
    if "status" in obj and not isinstance(obj["status"], str):
        raise StoreFileError(f"{path}: 'status' must be a string, got {obj['status']!r}")
    return obj


def read_config(path: Path | str) -> dict[str, Any]:
    """``config.yaml`` validated: a YAML mapping (raises :class:`StoreFileError` naming the file otherwise)."""
    path = Path(path)
    text = _read_text(path)
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise StoreFileError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise StoreFileError(f"{path}: expected a mapping of config keys, got {type(obj).__name__}")
    return obj


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
    A failed write (a full disk) removes the temporary file and raises an ``OSError`` naming ``path``.

    The file gets the usual mode for new files (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not e.filename:  # a full disk: name the file that could not be written
            raise OSError(e.errno, e.strerror, str(path)) from None
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
    """Rows of a CSV file as dicts. A file that is not UTF-8 text, or a row with fewer or more fields than the
    header (a file cut short), raises :class:`StoreFileError` naming the file and the line."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
    except UnicodeDecodeError:
        raise StoreFileError(f"{path}: not UTF-8 text") from None
    except csv.Error as e:
        raise StoreFileError(f"{path}: not a valid CSV file ({e})") from None
    for i, row in enumerate(rows):
        if None in row or None in row.values():
            raise StoreFileError(
                f"{path} row {i + 1}: {sum(v is not None for k, v in row.items() if k is not None)} "
                f"fields for {len(reader.fieldnames or [])} columns (the file was cut short?)"
            )
    return rows


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as it reads back from ``config.yaml`` (tuples become lists), for comparing with a stored one."""
    try:
        return dict(yaml.safe_load(yaml.safe_dump(dict(config), sort_keys=False)) or {})
    except yaml.YAMLError:
        return dict(config)


def config_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old → new`` for every key whose value differs (a missing key shows as ``-``)."""
    keys = list(new) + [k for k in old if k not in new]
    return [f"{k}: {old.get(k, '-')} → {new.get(k, '-')}" for k in keys if old.get(k, "-") != new.get(k, "-")]


VOLATILE = ("workers", "threads", "device")  # config keys that never change a run's numbers


def cache_key(
    config: Mapping[str, Any], grid: Iterable[str] = (), added: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The config a cached piece of work (a group of arms, one grid point of a larger run) is valid for: the
    whole ``config`` minus :data:`VOLATILE` keys and minus ``grid``, the keys that enumerate the pieces (lists
    of seeds or weight decays: each piece adds its own value). Every other key counts, so a new or changed
    config key makes the cached piece stale and it is recomputed.

    ``added``: keys introduced after cached pieces were written, each with the value those pieces were
    computed with; a key at that value is left out, so the earlier pieces stay valid (e.g.
    ``{"precision": "f32"}``)."""
    drop = set(VOLATILE) | set(grid)
    added = added or {}
    return {k: v for k, v in config.items() if k not in drop and not (k in added and v == added[k])}


def is_cached(path: Path | str, key: Mapping[str, Any]) -> bool:
    """True when ``path`` holds a finished, complete run of ``key`` (a :func:`cache_key`; the one check
    :meth:`RunDir.finished_run`, up to :data:`VOLATILE` keys a file written earlier may still hold)."""
    return RunDir(path).finished_run(key, ignore=VOLATILE) == []


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
        return write_yaml(self.path / CONFIG, dict(config))

    def write_metrics(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
        return write_csv(self.path / METRICS, rows, columns)

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write(self.path / name, text)

    def finish(self, summary: Mapping[str, Any]) -> Path:
        """Write ``summary.json`` last: marks the run complete. It records the size of every file of the
        directory written before it (``files``), checked by :meth:`complete`."""
        sizes = {
            p.name: p.stat().st_size
            for p in sorted(self.path.iterdir())
            if p.is_file() and p.name != SUMMARY and not p.name.startswith(".")
        }
        return write_json(self.path / SUMMARY, {**dict(summary), FILES: sizes})

    def summary(self) -> dict[str, Any]:
        """The validated summary (:func:`read_summary`), without the ``files`` record."""
        s = read_summary(self.path / SUMMARY)
        s.pop(FILES, None)
        return s

    def config(self) -> dict[str, Any]:
        """The validated ``config.yaml`` (:func:`read_config`); empty when the file is missing."""
        return read_config(self.path / CONFIG) if (self.path / CONFIG).is_file() else {}

    def incomplete(self) -> str | None:
        """Why this finished-looking run is not complete (a file that ``summary.json`` records is missing or
        has another size), or None. Raises :class:`StoreFileError` for an invalid ``summary.json``."""
        files = read_summary(self.path / SUMMARY).get(FILES) or {}
        if not isinstance(files, dict):
            return f"{self.path / SUMMARY}: '{FILES}' must map file names to sizes"
        for name, size in files.items():
            p = self.path / str(name)
            if not p.is_file():
                return f"{p}: missing (recorded as {size} bytes)"
            if p.stat().st_size != size:
                return f"{p}: {p.stat().st_size} bytes, {size} were written (truncated or changed)"
        return None

    def complete(self) -> bool:
        """True when ``summary.json`` exists and is valid, ``config.yaml`` is valid, and every file the
        summary records is there whole (:meth:`incomplete`)."""
        if not self.done:
            return False
        try:
            self.config()
            return self.incomplete() is None
        except StoreFileError:
            return False

    def finished_run(self, config: Mapping[str, Any], ignore: Sequence[str] = ()) -> list[str] | None:
        """The one check "this directory holds a finished, complete run of exactly ``config``":

        * None — no finished, complete run here (nothing, an unfinished run, a damaged or truncated one);
        * ``[]`` — a finished, complete run of ``config`` (keys in ``ignore`` aside: values that do not
          change the numbers, or the grid a cached group belongs to);
        * otherwise ``key: old → new`` for each key that differs (a finished run of another config)."""
        if not self.complete():
            return None
        drop = lambda d: {k: v for k, v in d.items() if k not in ignore}  # noqa: E731
        return config_difference(drop(self.config()), drop(_plain(config)))

    def finished_with(self, config: Mapping[str, Any], ignore: Sequence[str] = ()) -> bool:
        """True when this directory holds a finished, complete run of exactly ``config``
        (:meth:`finished_run`); False when it holds none. A finished run of another config raises
        :class:`ConfigError` naming the differing keys."""
        diff = self.finished_run(config, ignore)
        if diff is None:
            return False
        if diff:
            raise ConfigError(
                f"{self.path} holds a finished run of another config ({'; '.join(diff[:4])}"
                f"{'; ...' if len(diff) > 4 else ''}): use --force to replace it or another --out"
            )
        return True

    def check_out(self) -> None:
        """Refuse a path that cannot be a run directory (empty, a file, an unwritable parent), naming it."""
        if str(self.path) in ("", "."):
            raise ConfigError("--out: give a directory (an empty path would write into the current directory)")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path}: is a file, not a directory")
        parent = next((p for p in [self.path, *self.path.parents] if p.exists()), Path("."))
        if not parent.is_dir():
            raise ConfigError(f"--out {self.path}: {parent} is a file, not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {self.path}: {parent} is not writable")

    def clear(self) -> None:
        """Forget a finished run before redoing it: ``summary.json`` goes first (the directory is unfinished)."""
        for name in (SUMMARY, ERROR, METRICS, CONFIG):
            with suppress(FileNotFoundError):
                (self.path / name).unlink()


def runs_under(root: Path | str, skip: Sequence[str] = ()) -> Iterable[RunDir]:
    """Finished run directories below ``root`` (any depth), except those below a folder named in ``skip``."""
    root = Path(root)
    for p in sorted(root.rglob(SUMMARY)):
        if not set(p.relative_to(root).parts[:-1]) & set(skip):
            yield RunDir(p.parent)


def read_yaml(path: Path | str) -> Any:
    """A YAML file parsed with PyYAML's safe loader."""
    return yaml.safe_load(Path(path).read_text())


def read_manifest(out: Path | str) -> dict[str, Any] | None:
    """The sweep directory's ``sweep.yaml`` (``experiment``, ``axes``, ``runs``: ``[{id, params}]``) or None."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    m = read_config(path)
    runs = m.get("runs") or []
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in runs):
        raise StoreFileError(f"{path}: 'runs' must be a list of {{id, params}} entries")
    if not isinstance(m.get("axes") or [], list):
        raise StoreFileError(f"{path}: 'axes' must be a list")
    return m


def write_manifest(out: Path | str, experiment: str, axes: Sequence[str], runs: Mapping[str, Mapping]) -> Path:
    """Write ``sweep.yaml``: the experiment, the axes, and ``runs`` (run id → the axis values that picked it)."""
    return write_yaml(
        Path(out) / MANIFEST,
        {
            "experiment": experiment,
            "axes": list(axes),
            "runs": [{"id": k, "params": dict(v)} for k, v in runs.items()],
        },
    )


class StoreLock:
    """An advisory lock on a directory while one command writes it: ``flock`` on the directory itself
    (created if missing; no lock file is left behind; the kernel releases it if the process dies).

    A second writer of the same directory (``run``, ``phase``, ``sweep``, ``report``, ``reproduce``) fails at
    once with one line naming the directory."""

    def __init__(self, out: Path | str):
        self.path = Path(out)
        self.fd: int | None = None

    def __enter__(self) -> StoreLock:
        import fcntl

        from .errors import MirrorflowError

        self.path.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise MirrorflowError(
                f"another mirrorflow command is writing {self.path} (it is locked): "
                "wait for it to end or choose another --out"
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of ``path`` that does not exist yet (what ``mkdir(parents=True)`` creates)."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            p.unlink()


def has_finished_run(p: Path) -> bool:
    """True when ``p`` is or holds (at any depth) a directory with a ``summary.json``: finished work to keep."""
    return p.is_dir() and any(p.rglob(SUMMARY))


@contextmanager
def writing(out: Path | str, keep: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Hold :class:`StoreLock` on ``out`` while a command writes it; if the command fails (any exception,
    Ctrl-C and a full disk included) remove what it added: the entries of ``out`` that were not there before,
    except those ``keep(path)`` accepts (finished runs a sweep or a cache may reuse), and ``out`` itself (and
    the parents it needed) when it was created here and is left empty.

    Under ``torchrun`` only rank 0 (``RANK``) writes, so only it takes the lock and cleans up."""
    out = Path(out)
    if os.environ.get("RANK", "0").strip() not in ("0", ""):  # torchrun: rank 0 writes, the others only train
        yield out
        return
    created = _first_missing(out)
    before = set(os.listdir(out)) if created is None else set()
    with StoreLock(out):
        try:
            yield out
        except BaseException:
            for name in sorted(set(os.listdir(out) if out.is_dir() else ()) - before):
                if keep is None or not keep(out / name):
                    _remove(out / name)
            if created is not None:
                for p in [out, *out.parents]:
                    try:
                        p.rmdir()
                    except OSError:
                        break
                    if p == created:
                        break
            raise

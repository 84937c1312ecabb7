"""Reading a sweep's run store: finished runs, their configs and summaries, groups of seeds, tidy rows.

Input: a sweep directory ``DIR`` (``DIR/sweep.yaml`` plus one run directory per run, see
:mod:`mirrorflow.store`) or any directory with finished run directories below it (then the axes are the
config keys whose values differ between runs). Groups are runs with equal axis values except ``seed``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..store import ERROR, METRICS, RunDir, StoreFileError, read_csv, read_manifest, runs_under

REPORT_DIR = "report"
SKIP_METRICS = {"seconds", "diverged_at"}


@dataclass
class RunRecord:
    run_id: str
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "finished"))


@dataclass
class Group:
    """Runs with equal axis values (seeds aside)."""

    key: tuple
    params: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)


@dataclass
class Sweep:
    """What :func:`collect` found under a directory."""

    root: Path
    experiment: str
    axes: list[str]  # varying config keys, ``seed`` included when present
    runs: list[RunRecord]
    planned: int
    failed: dict[str, str]  # run id → first line of error.txt

    @property
    def group_axes(self) -> list[str]:
        return [a for a in self.axes if a != "seed"]

    @property
    def missing(self) -> int:
        return max(0, self.planned - len(self.runs) - len(self.failed))


# ------------------------------------------------------------------------------------ collecting
def _read_run(path: Path, invalid: dict[str, str] | None = None) -> RunRecord | None:
    """The finished run in ``path``, or None. A summary or config that fails validation
    (:func:`mirrorflow.store.read_summary`) or a file cut short (:meth:`~mirrorflow.store.RunDir.incomplete`)
    makes the run unfinished; its message (naming the file) goes
    into ``invalid`` (run id → message)."""
    rd = RunDir(path)
    if not rd.done:
        return None
    try:
        why = rd.incomplete()  # a file cut short after the run finished: not a finished run
        if why is not None:
            raise StoreFileError(why)
        return RunRecord(path.name, path, rd.config(), rd.summary())
    except StoreFileError as e:
        if invalid is None:
            raise
        invalid[path.name] = str(e)
        return None


def collect(root: Path | str) -> Sweep:
    """Finished runs of the sweep in ``root`` (its ``sweep.yaml`` when present)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"report: {str(root)!r} is not a directory")
    m = read_manifest(root)
    failed: dict[str, str] = {}
    if m is not None:
        ids = [r["id"] for r in m.get("runs") or []]
        runs = []
        for rid in ids:
            rec = _read_run(root / rid, failed)
            if rec is not None:
                runs.append(rec)
            elif (root / rid / ERROR).is_file():
                failed[rid] = _first_error_line(root / rid / ERROR)
        experiment = str(m.get("experiment", ""))
        axes = [a for a in m.get("axes") or []]
        planned = len(ids)
    else:
        runs = [r for r in (_read_run(rd.path, failed) for rd in runs_under(root, skip=(REPORT_DIR,))) if r is not None]
        exps = sorted({str(r.config.get("experiment", "")) for r in runs})
        if len(exps) > 1:
            raise ConfigError(f"report: {root} mixes experiments {', '.join(exps)}; report one sweep directory")
        experiment = exps[0] if exps else ""
        axes = varying_keys(runs)
        planned = len(runs)
    if not runs:
        why = f"; {next(iter(failed.values()))}" if failed else ""
        raise ConfigError(f"report: no finished runs (summary.json) in {root}{why}")
    return Sweep(root, experiment, axes, runs, planned, failed)


def _first_error_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "failed"


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def varying_keys(runs: Sequence[RunRecord]) -> list[str]:
    """Config keys whose values differ between runs (in config order)."""
    keys: list[str] = []
    for r in runs:
        for k in r.config:
            if k not in keys:
                keys.append(k)
    return [k for k in keys if k != "experiment" and len({_hashable(r.config.get(k)) for r in runs}) > 1]


# --------------------------------------------------------------------------------------- metrics
def flatten(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists → ``{"a.b": v, "a[0].c": w}``; only numbers (not bools), None and strings kept."""
    out: dict[str, Any] = {}
    for k, v in summary.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, name))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                if isinstance(x, Mapping):
                    out.update(flatten(x, f"{name}[{i}]"))
                else:
                    out[f"{name}[{i}]"] = x
        else:
            out[name] = v
    return out


def _number(v: Any) -> float:
    """A summary value as a float: None / "inf" strings (store's encoding of non-finite) → nan / ±inf."""
    if isinstance(v, bool) or v is None:
        return math.nan
    if isinstance(v, (int, float)):
        return float(v)
    if v in ("inf", "-inf"):
        return float(v)
    return math.nan


def metric_names(runs: Sequence[RunRecord]) -> list[str]:
    """Numeric summary keys (flattened), in first-seen order, without bookkeeping keys (seconds...)."""
    names: list[str] = []
    numeric: set[str] = set()
    for r in runs:
        for k, v in flatten(r.summary).items():
            if k.split(".")[-1].split("[")[0] in SKIP_METRICS or k in SKIP_METRICS:
                continue
            if k not in names:
                names.append(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                numeric.add(k)
    return [n for n in names if n in numeric]


def groups(sweep: Sweep) -> list[Group]:
    """Runs grouped by their values of the non-seed axes, in order of first appearance."""
    out: dict[tuple, Group] = {}
    for r in sweep.runs:
        params = {a: r.config.get(a) for a in sweep.group_axes}
        key = tuple(_hashable(params[a]) for a in sweep.group_axes)
        out.setdefault(key, Group(key, params)).runs.append(r)
    return _sorted_groups(list(out.values()), sweep.group_axes)


def _sorted_groups(gs: list[Group], axes: Sequence[str]) -> list[Group]:
    def sort_key(g: Group):
        return tuple(
            (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v)) for v in g.key
        )

    try:
        return sorted(gs, key=sort_key)
    except TypeError:
        return gs


# ------------------------------------------------------------------------------------ tidy data
def tidy_rows(sweep: Sweep) -> tuple[list[dict], list[str]]:
    """``runs.csv``: one row per run (run id, status, config, numeric summary values)."""
    cfg_keys: list[str] = []
    for r in sweep.runs:
        for k in r.config:
            if k not in cfg_keys and k != "experiment":
                cfg_keys.append(k)
    metrics = metric_names(sweep.runs)
    rows = []
    for r in sweep.runs:
        flat = flatten(r.summary)
        row = {"run_id": r.run_id, "status": r.status}
        for k in cfg_keys:
            v = r.config.get(k)
            row[k] = json.dumps(v) if isinstance(v, (list, dict)) else v
        for m in metrics:
            row[m] = _number(flat.get(m))
        row["seconds"] = _number(r.summary.get("seconds"))
        rows.append(row)
    return rows, ["run_id", "status", *cfg_keys, *metrics, "seconds"]


def curve_rows(sweep: Sweep) -> tuple[list[dict], list[str]]:
    """``curves.csv``: each run's ``metrics.csv`` with ``run_id`` and the axis values in front."""
    rows: list[dict] = []
    cols: list[str] = []
    for r in sweep.runs:
        p = r.path / METRICS
        if not p.is_file():
            continue
        for row in read_csv(p):
            front = {"run_id": r.run_id, **{a: _cell(r.config.get(a)) for a in sweep.axes}}
            full = {**front, **row}
            for k in full:
                if k not in cols:
                    cols.append(k)
            rows.append(full)
    return rows, cols


def _cell(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def _fmt_param(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_param(x) for x in v) + "]"
    return str(v)

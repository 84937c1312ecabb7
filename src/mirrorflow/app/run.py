"""``mirrorflow run``: ``key=value`` tokens → the experiment's validated config → one run directory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import build, config_dict, parse_overrides, parse_seeds
from ..experiments import canonical, load
from ..store import RunDir, has_finished_run, run_id, writing
from .resources import check_resources, planned


def run_one(
    experiment: str, tokens: Sequence[str], out: Path | None = None, force: bool = False
) -> tuple[dict[str, Any], Path, bool]:
    """``mirrorflow run``: build the config from ``key=value`` tokens and run it into ``out`` (default
    ``runs/<experiment>-<hash of the resolved config>``). A finished run of the same config there is reused
    unless ``force``; a finished run of another config is refused (naming the differing keys) unless ``force``.
    Returns (summary, run directory, reused)."""
    mod, cfg, resolved, out = resolve_run(experiment, tokens, out)
    rd = RunDir(out)
    with writing(out, keep=has_finished_run):  # locked; a failed run leaves nothing half-written behind
        if not force and rd.finished_with(resolved):  # refuses a finished run of another config
            return rd.summary(), out, True
        check_resources(mod, cfg)
        if rd.done:
            rd.clear()  # --force, or a truncated run: summary.json goes first
        return mod.run(cfg, out), out, False


def resolve_run(experiment: str, tokens: Sequence[str], out: Path | None = None, dry_run: bool = False):
    """``mirrorflow run`` up to running: ``key=value`` tokens → (module, validated config, the resolved dict
    that names the run, run directory). Nothing is created. ``dry_run``: a device this machine lacks is
    accepted (:func:`~mirrorflow.app.resources.planned`: the plan may be meant for another machine)."""
    mod = load(experiment)
    name = canonical(experiment)
    with planned(dry_run):
        cfg = build(mod.Config, read_overrides(tokens))
    resolved = {"experiment": name, **config_dict(cfg)}
    out = Path("runs") / run_id(resolved, prefix=name) if out is None else Path(out)
    RunDir(out).check_out()
    if dry_run and resolved.get("device", "cpu") != "cuda":  # a plan for this machine: the real run's memory check
        check_resources(mod, cfg)
    return mod, cfg, resolved, out


def read_overrides(tokens: Sequence[str]) -> dict[str, str]:
    """The ``key=value`` tokens of ``run`` and ``reproduce`` (:func:`mirrorflow.config.parse_overrides`), with
    ``seeds=`` read as every command reads it (:func:`mirrorflow.config.parse_seeds`: ``0,1,2`` or ``0..4``)
    and passed on as its list (``0,1,2``)."""
    overrides = parse_overrides(tokens)
    if "seeds" in overrides:
        overrides["seeds"] = ",".join(map(str, parse_seeds(overrides["seeds"])))
    return overrides


def describe(cfg: Any) -> str:
    """One line ``key=value ...`` of a config's fields, or of a mapping (lists comma-separated, as the
    command line takes them)."""

    def text(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    values = cfg if isinstance(cfg, Mapping) else config_dict(cfg)
    return " ".join(f"{k}={text(v)}" for k, v in values.items())

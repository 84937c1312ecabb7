"""Running matrix sensing: one configuration into a run directory (``mirrorflow run``, the sweep's
``write_run``), and ``mirrorflow reproduce matrix-sensing`` — Table 2 (all arms sharing the data batched
together) or one of the multi-seed studies of :mod:`.studies`.

Every arm is gradient descent on f(UUᵀ) with weight decay λ_t (problem.py) and reports the accumulated
regularization a_∞ = −η Σ_t λ_t; Table 2's arms have equal Σλ (docs/theory.md#exp-matrix-sensing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ...config import build, config_dict, parse_seeds
from ...engine.progress import progress_or_bar
from ...engine.protocol import Plan
from ...errors import ConfigError
from ...store import RunDir
from . import studies as S
from .config import Config
from .problem import run_many
from .report import metric_rows, run_figure, summarize, table2_figures, table2_markdown

EXPERIMENT = "matrix-sensing"


def write_run(cfg: Config, res: Mapping, out: Path | str, seconds: float = 0.0) -> dict:
    """Write one configuration's result (from :func:`run_many`) as a run directory; summary.json last."""
    rd = RunDir(out)
    rd.write_config({"experiment": EXPERIMENT, **config_dict(cfg)})
    rd.write_metrics(metric_rows(res))
    run_figure(res, rd)
    summary = {**summarize(cfg, res), "seconds": round(seconds, 3)}
    rd.finish(summary)
    return summary


def run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None) -> dict:
    """One configuration into run directory ``out`` (config.yaml, metrics.csv, figures, summary.json)."""
    t0 = time.perf_counter()
    res = run_many([cfg], progress)[0]
    return write_run(cfg, res, out, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------ reproduce
def reproduce_plan(overrides: Mapping[str, str] | None = None) -> Plan:
    """``reproduce``'s overrides resolved: ``preset=`` (default ``table2``), ``seeds=`` (a study's seeds,
    default 0..4; with ``table2`` only when given) and the base ``Config`` (the preset's defaults under the
    user's keys) from which the study derives its arms."""
    ov = dict(overrides or {})
    preset = str(ov.pop("preset", "table2"))
    if preset not in S.PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(S.PRESETS)}, got {preset!r}")
    arm_keys = ("schedule", "off_at", *(old for old, new in Config.ALIASES.items() if new == "off_at"))
    for key in arm_keys:  # the study's arms set them: a value here would be dropped without a word
        if key in ov:
            raise ConfigError(f"{key}: reproduce sets the schedule and off-point of each arm itself; drop {key}=")
    seeds_raw = ov.pop("seeds", None)
    seeds = parse_seeds(seeds_raw) if seeds_raw is not None else S.DEFAULT_SEEDS
    base = build(Config, S.preset_overrides(preset, ov))
    S.check_budget(base)
    options = {"preset": preset, **({"seeds": seeds} if preset != "table2" or seeds_raw is not None else {})}
    return Plan(((preset, base),), options)


def reproduce(
    out: Path | str, overrides: Mapping[str, str] | None = None, progress: Callable[[int], None] | None = None
) -> str:
    """Run Table 2 (all arms sharing the data batched together) and write table2.md, metrics, figures.

    ``preset=paper-horizon|linear-schedules|init-scale`` runs that study over ``seeds=`` (default 0..4)
    instead (:mod:`.studies`); ``seeds=`` with the default preset appends Table 2 over those seeds
    after the single-seed table (run directory ``out/seeds``).
    """
    plan = reproduce_plan(overrides)
    preset, seeds, base = plan.options["preset"], plan.options.get("seeds"), plan.config
    if preset != "table2":
        RunDir(out).write_config(
            {"experiment": EXPERIMENT, "reproduce": preset, "seeds": list(seeds), **config_dict(base)}
        )
        return S.run_study(preset, base, seeds, out, progress)
    arms = S.table2_named(base)
    names = list(arms)
    labels = [lab for lab, _ in arms.values()]
    cfgs = [c for _, c in arms.values()]
    rd = RunDir(out)
    rd.write_config({"experiment": EXPERIMENT, "reproduce": "table2", **config_dict(base)})
    t0 = time.perf_counter()
    groups = len({c.data_key() for c in cfgs})
    with progress_or_bar(progress, base.steps * groups, "matrix sensing (Table 2)") as progress:
        results = run_many(cfgs, progress)
    summaries = [summarize(c, r) for c, r in zip(cfgs, results)]
    rows = [row for lab, res in zip(labels, results) for row in metric_rows(res, lab)]
    rd.write_metrics(rows)
    table = table2_markdown(labels, summaries, base)
    rd.write_text("table2.md", table)
    table2_figures(arms, dict(zip(names, results)), rd, fig3=S.FIG3_ARMS, fig7=S.FIG7_ARM)
    rd.finish(
        {
            "experiment": EXPERIMENT,
            "arms": {lab: s for lab, s in zip(labels, summaries)},
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    if seeds is not None:
        table += "\n" + S.run_study("table2", base, seeds, Path(out) / "seeds", progress)
    return table


def estimate_bytes(cfg: Config) -> int:
    """Memory of one run's big tensors, from the config alone (checked before allocating): the (m, n²)
    sensing matrix, a few (n, n) states (U, W, gradients, the SVD) and the logged metrics."""
    item = 4 if cfg.dtype == "float32" else 8
    rows = cfg.steps // cfg.log_every + 2
    return item * (cfg.measurements * cfg.n * cfg.n + 8 * cfg.n * cfg.n) + 8 * 8 * rows

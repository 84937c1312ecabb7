"""Running sparse coding: one reparameterization with its sweep over seeds × k × α into a run directory
(``mirrorflow run sparse-coding``), and ``mirrorflow reproduce sparse-coding`` — Fig. 11 (x = u^{2k} − v^{2k},
k = 1..10) and Fig. 13 (x = log u − log v, an α sweep) over seeds, or the paper code's stored curve
(``preset=authors``, :mod:`.studies`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ...config import build, config_dict
from ...engine.progress import progress_or_bar
from ...engine.protocol import Plan
from ...errors import ConfigError
from ...report.figures import save_png
from ...store import RunDir
from . import studies as S
from .config import Config
from .problem import faces, run_sweep
from .report import metric_rows, plot, summarize, table_markdown


def run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None) -> dict:
    """One reparameterization, all (seed, k, α) batched, into run directory ``out``."""
    rd = RunDir(out)
    rd.write_config({"experiment": "sparse-coding", **config_dict(cfg)})
    t0 = time.perf_counter()
    trace = run_sweep(cfg, progress)
    rd.write_metrics(metric_rows(cfg, trace))
    title = "x = u^(2k) − v^(2k)" if cfg.param == "power" else "x = log u − log v"
    for metric in ("mse", "nuclear_norm", "sparsity"):
        save_png(plot(cfg, trace, metric, title), rd.file(f"{metric}.png"))
    rows = summarize(cfg, trace)
    name = "u^(2k) − v^(2k)" if cfg.param == "power" else "log u − log v"
    table = table_markdown([(name, cfg, rows)])
    rd.write_text("table.md", table)
    summary = {
        "experiment": "sparse-coding",
        "param": cfg.param,
        "configs": rows,
        "diverged": sum(r["status"] == "diverged" for r in rows),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    rd.finish(summary)
    return summary


@dataclass(frozen=True)
class _Extra:
    """The keys of ``reproduce`` beyond ``Config``: the preset and the log run's α values."""

    preset: str = "paper"
    log_alphas: tuple[float, ...] = S.LOG_ALPHAS


def reproduce_plan(overrides: Mapping[str, str] | None = None) -> Plan:
    """``reproduce``'s overrides resolved: ``preset=paper`` → the power run (label ``power``) and the log run
    (``log``; ``alphas``/``ks`` apply to the power run only, ``log_alphas`` to the log run), seeds 0,1,2 unless
    given; ``preset=authors`` → one power run with ``S.AUTHORS_PRESET`` under the user's keys."""
    ov = dict(overrides or {})
    if "param" in ov:
        raise ConfigError("param: reproduce runs both reparameterizations; drop param=")
    given = {k: ov.pop(k) for k in ("preset", "log_alphas") if k in ov}
    extra = build(_Extra, given)
    if extra.preset not in ("paper", "authors"):
        raise ConfigError(f"preset must be one of paper, authors, got {extra.preset!r}")
    if extra.preset == "authors" and "log_alphas" in given:
        raise ConfigError(
            "log_alphas: preset=authors runs no log reparameterization; drop log_alphas= or use preset=paper"
        )
    if extra.preset == "authors":
        return Plan((("power", build(Config, {**S.AUTHORS_PRESET, **ov, "param": "power"})),), {"preset": "authors"})
    ov.setdefault("seeds", ",".join(map(str, S.PAPER_SEEDS)))
    power = build(Config, {**ov, "param": "power"})
    log = build(
        Config,
        {**{k: v for k, v in ov.items() if k not in ("alphas", "ks")}, "param": "log", "alphas": extra.log_alphas},
    )
    return Plan((("power", power), ("log", log)), {"preset": "paper"})


def reproduce(
    out: Path | str, overrides: Mapping[str, str] | None = None, progress: Callable[[int], None] | None = None
) -> str:
    """``preset=paper``: Fig. 11 (u^{2k} − v^{2k}, k = 1..10, α = 0.001) and Fig. 13 (log u − log v, α sweep)
    analogs over ``seeds`` (default 0,1,2). ``preset=authors``: the stored-curve setting (η = 0.01/‖D‖₂²,
    per-sample update, k = 1, 2, 3) against the stored numbers. Other keys override either preset and apply
    to both runs; ``alphas``/``ks`` apply to the power run, ``log_alphas`` to the log run."""
    plan = reproduce_plan(overrides)
    if plan.options["preset"] == "authors":
        return S.run_authors(out, plan.config, progress)
    (_, power), (_, log) = plan.configs
    rd = RunDir(out)
    rd.write_config(
        {
            "experiment": "sparse-coding",
            "reproduce": "figs11-13",
            "preset": "paper",
            "power": config_dict(power),
            "log": config_dict(log),
        }
    )
    t0 = time.perf_counter()
    Y = faces(power.image_size, power.n_images)
    with progress_or_bar(progress, power.iterations + log.iterations, "sparse coding (Figs. 11, 13)") as progress:
        tr_power = run_sweep(power, progress, Y)
        tr_log = run_sweep(log, progress, Y)
    rows_power, rows_log = summarize(power, tr_power), summarize(log, tr_log)
    rd.write_metrics(metric_rows(power, tr_power) + metric_rows(log, tr_log))
    save_png(plot(power, tr_power, "nuclear_norm", "Fig. 11a: u^(2k) − v^(2k)"), rd.file("fig11a_nuclear_norm.png"))
    save_png(plot(power, tr_power, "mse", "Fig. 11b: u^(2k) − v^(2k)"), rd.file("fig11b_mse.png"))
    save_png(plot(log, tr_log, "mse", "Fig. 13: log u − log v"), rd.file("fig13a_mse.png"))
    save_png(plot(log, tr_log, "nuclear_norm", "Fig. 13: log u − log v"), rd.file("fig13b_nuclear_norm.png"))
    save_png(plot(power, tr_power, "sparsity", "u^(2k) − v^(2k)"), rd.file("sparsity_power.png"))
    save_png(plot(log, tr_log, "sparsity", "log u − log v"), rd.file("sparsity_log.png"))
    table = table_markdown([("u^(2k) − v^(2k)", power, rows_power), ("log u − log v", log, rows_log)])
    rd.write_text("table.md", table)
    rd.finish(
        {
            "experiment": "sparse-coding",
            "preset": "paper",
            "power": rows_power,
            "log": rows_log,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    return table


def estimate_bytes(cfg: Config) -> int:
    """Memory of one run's big tensors, from the config alone (checked before allocating): the images, the
    (pixels, atoms) dictionary and the (atoms, batch) codes of every (k, α, seed) arm, and with
    ``dict_update=per_sample`` the per-position accumulators A[i] (atoms²) and B[i] (atoms × pixels)."""
    item = 4 if cfg.dtype == "float32" else 8
    pixels = cfg.image_size * cfg.image_size
    arms = max(1, len(cfg.ks)) * max(1, len(cfg.alphas)) * max(1, len(cfg.seeds))
    per_arm = 4 * pixels * cfg.n_atoms + 6 * cfg.n_atoms * cfg.batch_size
    if cfg.dict_update == "per_sample":
        per_arm += cfg.batch_size * cfg.n_atoms * (cfg.n_atoms + pixels)
    return item * (cfg.n_images * pixels + arms * per_arm)

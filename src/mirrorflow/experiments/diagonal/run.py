"""Running the diagonal networks: one parameterization with its sweep of weight decays into a run directory
(``mirrorflow run diagonal``), and ``mirrorflow reproduce diagonal`` — Figs. 8 (a, b, c) and 9 (a, b, c),
with Theorem 3.11's predicted limit x_∞ = argmin_{Zx=y} R_{a_∞}(x) (Eq. 9) for m⊙w, and optionally the
same sweeps over seeds (:mod:`.studies`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ...config import build, config_dict, parse_seeds
from ...engine.batched import Trace
from ...engine.progress import progress_or_bar
from ...engine.protocol import Plan
from ...errors import ConfigError
from ...report.figures import save_png
from ...store import RunDir, write_json
from . import studies
from .config import MODELS, Config
from .problem import RegressionData, final_x, run_sweep
from .report import FIG_LETTER, REPRODUCE_MODELS, metric_rows, model_title, plot_sweep, summarize, table_markdown

EXPERIMENT = "diagonal"


def predicted_limits(cfg: Config, trace: Trace, data: RegressionData) -> list[dict] | None:
    """Theorem 3.11's limit argmin_{Zx=y} R_{a_∞}(x) for ``mw`` from ``mirrorflow.geometry.predict_limit``.

    Returns per weight decay ``{"pred_dist": ‖x_pred − x*‖, "pred_gap": ‖x_pred − x_trained‖,
    "pred_converged": bool}`` (the constrained solve's own convergence flag), or None when the model is
    not ``mw`` or the geometry module is not available.
    """
    if cfg.model != "mw":
        return None
    try:
        from ...geometry import predict_limit
    except Exception:
        return None
    xs = final_x(cfg, trace, data)
    out = []
    for c, sched in enumerate(cfg.schedules()):
        try:
            res = _call_predict_limit(predict_limit, cfg, sched, data)
        except Exception as e:  # report, do not fail the experiment
            out.append(
                {
                    "pred_dist": float("nan"),
                    "pred_gap": float("nan"),
                    "pred_converged": False,
                    "pred_error": str(e)[:200],
                }
            )
            continue
        x_pred = torch.as_tensor(np.asarray(res.x, dtype=np.float64))
        out.append(
            {
                "pred_dist": float((x_pred - data.x_star.double().cpu()).norm()),
                "pred_gap": float((x_pred - xs[c].double().cpu()).norm()),
                "pred_converged": bool(res.converged),
            }
        )
    return out


def _call_predict_limit(predict_limit, cfg: Config, sched, data: RegressionData):
    """Adapter to ``predict_limit(reparam, init, schedule, Z, y)`` (Theorem 3.11)."""
    d = cfg.dim
    init = {"m": np.full(d, cfg.init_scale), "w": np.zeros(d)}
    Z = data.Z.double().numpy()
    y = data.y.double().numpy()
    # a_∞ = −η Σ_s λ_s: the schedule counts steps, lr=η converts it to the flow's time
    return predict_limit("mw", init, sched, Z, y, lr=cfg.step_size, full=True, allow_unconverged=True)


def run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None) -> dict:
    """One parameterization, all weight decays batched, into run directory ``out``."""
    rd = RunDir(out)
    rd.write_config({"experiment": EXPERIMENT, **config_dict(cfg)})
    t0 = time.perf_counter()
    trace, data = run_sweep(cfg, progress)
    rd.write_metrics(metric_rows(cfg, trace))
    title = model_title(cfg)
    for metric in ("dist", "l1_l2", "train_loss", "x1"):
        save_png(plot_sweep(cfg, trace, data, metric, title), rd.file(f"{metric}.png"))
    per_wd = summarize(cfg, trace, data)
    preds = predicted_limits(cfg, trace, data)
    if preds is not None:
        for row, p in zip(per_wd, preds):
            row.update(p)
    summary = {
        "experiment": EXPERIMENT,
        "model": cfg.model,
        "ratio_star": data.ratio_star,
        "x1_star": float(data.x_star[0]),
        "weight_decays": per_wd,
        "diverged": sum(r["status"] == "diverged" for r in per_wd),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    rd.finish(summary)
    return summary


def reproduce_plan(overrides: Mapping[str, str] | None = None) -> Plan:
    """``reproduce``'s overrides resolved: ``models=`` (default linear,mw,mwv), ``seeds=`` (only when given)
    and one ``Config`` per model (the user's keys with ``model=`` set; the first is the base config)."""
    ov = dict(overrides or {})
    seeds_raw = ov.pop("seeds", None)
    models_raw = ov.pop("models", ",".join(REPRODUCE_MODELS))
    models = [m.strip() for m in str(models_raw).split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            raise ConfigError(f"models: unknown model {m!r} (known: {', '.join(MODELS)})")
    if not models:
        raise ConfigError("models: name at least one model (known: " + ", ".join(MODELS) + ")")
    if "model" in ov:
        raise ConfigError("model: reproduce runs several models; use models=linear,mw,... instead")
    base = build(Config, ov)
    seeds = parse_seeds(seeds_raw) if seeds_raw is not None else None
    options = {"models": tuple(models), **({"seeds": seeds} if seeds else {})}
    return Plan(tuple((m, replace(base, model=m)) for m in models), options)


def reproduce(
    out: Path | str, overrides: Mapping[str, str] | None = None, progress: Callable[[int], None] | None = None
) -> str:
    """Figs. 8 (a, b, c) and 9 (a, b, c): linear, m⊙w and m⊙w⊙v, each a batched weight-decay sweep.

    ``models=linear,mw,mwv`` (default) may add ``power``; ``seeds=0,1,2,3,4`` appends the same sweeps over
    those seeds (:mod:`.seeds`: intervals and the regime counts, ``seeds.md``/``seeds.json``).
    Writes ``fig8{a,b,c}_dist.png``,
    ``fig9{a,b,c}_l1_l2.png``, ``metrics.csv``, ``table.md`` and ``summary.json`` into ``out``.
    """
    plan = reproduce_plan(overrides)
    models, seeds, base = list(plan.options["models"]), plan.options.get("seeds"), plan.config
    rd = RunDir(out)
    rd.write_config(
        {
            "experiment": EXPERIMENT,
            "reproduce": "figs8-9",
            "models": models,
            **config_dict(base),
            **({"seeds": list(seeds)} if seeds else {}),
        }
    )
    t0 = time.perf_counter()
    results = {}
    with progress_or_bar(progress, base.steps * len(models), "diagonal networks (Figs. 8, 9)") as progress:
        for m, cfg in plan.configs:
            trace, data = run_sweep(cfg, progress)
            results[m] = (cfg, trace, data)
    rows: list[tuple[str, Mapping]] = []
    metric_all: list[dict] = []
    summary_models = {}
    for m, (cfg, trace, data) in results.items():
        per_wd = summarize(cfg, trace, data)
        preds = predicted_limits(cfg, trace, data)
        if preds is not None:
            for r, p in zip(per_wd, preds):
                r.update(p)
        rows += [(m, r) for r in per_wd]
        metric_all += metric_rows(cfg, trace)
        summary_models[m] = per_wd
        title = model_title(cfg)
        letter = FIG_LETTER[m]
        save_png(plot_sweep(cfg, trace, data, "dist", f"Fig. 8{letter}: {title}"), rd.file(f"fig8{letter}_dist.png"))
        save_png(plot_sweep(cfg, trace, data, "l1_l2", f"Fig. 9{letter}: {title}"), rd.file(f"fig9{letter}_l1_l2.png"))
        save_png(plot_sweep(cfg, trace, data, "x1", f"first coordinate: {title}"), rd.file(f"x1_{m}.png"))
        save_png(plot_sweep(cfg, trace, data, "train_loss", f"train loss: {title}"), rd.file(f"train_loss_{m}.png"))
    data0 = next(iter(results.values()))[2]
    rd.write_metrics(metric_all)
    table = table_markdown(base, rows, data0.ratio_star, float(data0.x_star[0]), models)
    rd.write_text("table.md", table)
    if seeds:
        per_seed = studies.run_seeds(base, models, seeds)
        seeds_md = studies.seeds_table(base, per_seed, seeds)
        rd.write_text("seeds.md", seeds_md)
        write_json(rd.path / "seeds.json", {"seeds": list(seeds), "models": per_seed})
        table += "\n" + seeds_md
    rd.finish(
        {
            "experiment": EXPERIMENT,
            "ratio_star": data0.ratio_star,
            "x1_star": float(data0.x_star[0]),
            "models": summary_models,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    return table


def estimate_bytes(cfg: Config) -> int:
    """Memory of one run's big tensors, from the config alone (checked before allocating): the (N, d) data,
    a few (C, d) states for the C weight decays run as one batch, and the logged metrics."""
    item = 4 if cfg.dtype == "float32" else 8
    c = len(cfg.weight_decays)
    rows = cfg.steps // cfg.log_every + 2
    return item * (cfg.n_samples * cfg.dim + 8 * c * cfg.dim) + 8 * 8 * c * rows

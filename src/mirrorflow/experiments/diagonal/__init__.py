"""Diagonal linear networks with weight decay, then without (App. D; Figs. 8, 9; docs/theory.md#exp-diagonal).

Underdetermined regression (N < d): ``Z ∈ ℝ^{N×d}`` with i.i.d. N(0, 1) entries, a sparse ground truth x*
(``sparsity`` non-zero coordinates, the first ones, so the "first parameter" the paper reports is a true
coordinate), labels ``y = Z x*`` and the MSE loss

    f(x) = 1/(2N) ‖Z x − y‖²,      ∇f(x) = Zᵀ(Z x − y)/N.

Parameterizations x = g(θ), every one with weight decay h(θ) = ½‖θ‖² on its parameters:

* ``linear``  x = θ (L2 on x; Cor. D.1: nothing is stored in a geometry, Fig. 8a/9a);
* ``mw``      x = m ⊙ w (Eq. 9: time-dependent hyperbolic entropy, L2 → L1; Fig. 8b/9b);
* ``mwv``     x = m ⊙ w ⊙ v (depth 3; Thm D.2: does not commute with weight decay; Fig. 8c/9c);
* ``power``   x = u^{2k} − v^{2k} (Woodworth et al. 2020), with ``power_penalty=l2`` (weight decay
  ½(‖u‖²+‖v‖²)) or ``power_penalty=matched`` (h = Σ u^{2k} + v^{2k}, Cor. 3.12, docs/theory.md#legendre-power, Eq. 11).

All start at x = 0 with the same parameter scale s = ``init_scale`` (App. D: "both parametrizations are
initialized at zero and have the same scaling"): linear θ_0 = 0; m_0 = s·1, w_0 = 0; m_0 = w_0 = s·1,
v_0 = 0; u_0 = v_0 = s·1.

Each run: ``steps_on`` steps with weight decay λ, then ``steps_off`` steps without (turn-off, Remark 3.9).
One gradient step on f followed by the exact flow of the decay term (operator splitting, docs/theory.md#stiff-decay):

    θ ← e^{−ηλ_t} (θ − η ∇_θ f(g(θ)))                     (h = ½‖θ‖²)
    u ← sign(u) (|u'|^{2−2k} + 4k(k−1) ηλ_t)^{−1/(2k−2)}   (h = u^{2k}, k > 1; u' the gradient step)

This equals plain gradient descent on f + λh up to O(η²) and stays stable for any ηλ. The
parameterizations are ``geometry``'s families (Identity, MW, DeepProduct, PowerDiff with its ``penalty``) and
the step is ``engine.reparam_regression.ReparamRegression``'s exact-decay step (each family's ``decay_flow``);
this module adds the data, the App. D metrics and the tables. The accumulated
regularization is a_t = −η Σ_{s<t} λ_s (docs/theory.md#notation); for ``mw`` Theorem 3.11 predicts the limit
x_∞ = argmin_{Zx=y} R_{a_∞}(x) with R_a of Eq. (9), γ_a = e^{2a} s²/2.

All weight decays of one parameterization run as ONE batched tensor program (leading config axis C,
``mirrorflow.engine.batched``): a step is two GEMMs ``(C,d)·(d,N)`` and ``(C,N)·(N,d)``.

Values the paper does not give (App. D gives none of them; docs/theory.md#exp-diagonal) are chosen here and documented
in ``docs/diagonal-and-sparse-coding.md``: N = 40, d = 100, 5 non-zeros, s = 1, η = 0.05 (u^{2k} − v^{2k}:
0.005), 4000 + 16000 steps, λ ∈ {0, 0.01, 0.03, 0.1, 0.3, 0.5, 1}. With s = 1 training without weight
decay ends far from x* (the L2-like regime); with a small init it would already be sparse (docs/theory.md#init-regime).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ...config import build, check_rate, config_dict, parse_seed_list, require
from ...engine.batched import Trace, run_batched, schedule_table
from ...engine.progress import progress_or_bar
from ...engine.protocol import Plan
from ...report.figures import save_png, trace_plot
from ...report.tables import markdown_table
from ...runtime import resolve_device, torch_threads
from ...schedules import turn_off
from ...store import RunDir, write_json
from .problem import DiagonalNetwork, RegressionData
from .problem import initial_params as initial_params  # the problem's names, re-exported
from .problem import make_data as make_data
from .problem import reparameterization as reparameterization

MODELS = ("linear", "mw", "mwv", "power")
POWER_PENALTIES = ("l2", "matched")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
DEFAULT_LR = {"linear": 0.05, "mw": 0.05, "mwv": 0.05, "power": 0.005}  # power: curvature ∝ (2k u^{2k-1})²
MODEL_TITLES = {
    "linear": "linear x, L2",
    "mw": "m⊙w",
    "mwv": "m⊙w⊙v (depth 3)",
    "power": "u^(2k) − v^(2k)",
}


@dataclass(frozen=True)
class Config:
    """One parameterization with a sweep of weight decays λ (all run as one batch)."""

    model: str = "mw"
    n_samples: int = 40  # N
    dim: int = 100  # d
    sparsity: int = 5  # non-zeros of x*
    seed: int = 0
    init_scale: float = 1.0  # s
    lr: float = 0.0  # η; 0 = the model's default (DEFAULT_LR)
    weight_decays: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 0.5, 1.0)
    steps_on: int = 4000  # K steps with weight decay
    steps_off: int = 16000  # steps after turn-off
    k: int = 2  # power model: x = u^{2k} - v^{2k}
    power_penalty: str = "l2"
    log_every: int = 50
    converged_loss: float = 1e-8  # a run counts as converged when its final train loss is below this
    dtype: str = "float64"
    threads: int = 1  # torch intra-op threads while running (tiny tensors: more threads only add overhead)
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda
    track: bool = False  # log ‖∇R_{a_t}(x_t) − μ_t‖/‖μ_t‖ (identity_residual; m⊙w, or power with a matched penalty)

    @property
    def steps(self) -> int:
        return self.steps_on + self.steps_off

    @property
    def step_size(self) -> float:
        """η: ``lr`` if given, else 0.05 (linear, m⊙w, m⊙w⊙v) or 0.005 (u^{2k} − v^{2k}, whose curvature
        grows like (2k u^{2k−1})²; at 0.05 it diverges from u_0 = 1)."""
        return self.lr or DEFAULT_LR[self.model]

    def validate(self) -> None:
        require(self.model in MODELS, f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        require(self.n_samples > 0, f"n_samples must be positive, got {self.n_samples}")
        require(
            self.dim > self.n_samples,
            f"dim must exceed n_samples (underdetermined), got dim={self.dim}, n_samples={self.n_samples}",
        )
        require(0 < self.sparsity <= self.dim, f"sparsity must be in 1..dim={self.dim}, got {self.sparsity}")
        require(
            math.isfinite(self.init_scale) and self.init_scale > 0,
            f"init_scale must be positive, got {self.init_scale}",
        )
        require(
            math.isfinite(self.lr) and self.lr >= 0,
            f"lr must be positive (or 0 for the model's default), got {self.lr}",
        )
        require(len(self.weight_decays) > 0, "weight_decays must list at least one value")
        for v in self.weight_decays:
            check_rate("weight_decays", v, horizon=self.step_size * self.steps_on)  # a = -lr·Σλ finite
        require(self.steps_on >= 0, f"steps_on must be non-negative, got {self.steps_on}")
        require(self.steps_off >= 0, f"steps_off must be non-negative, got {self.steps_off}")
        require(self.steps > 0, "steps_on + steps_off must be positive")
        require(self.k >= 1, f"k must be at least 1, got {self.k}")
        require(
            self.power_penalty in POWER_PENALTIES,
            f"power_penalty must be one of {', '.join(POWER_PENALTIES)}, got {self.power_penalty!r}",
        )
        require(self.log_every > 0, f"log_every must be positive, got {self.log_every}")
        require(self.converged_loss > 0, f"converged_loss must be positive, got {self.converged_loss}")
        require(self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        require(self.threads >= 0, f"threads must be non-negative (0 = torch's default), got {self.threads}")
        resolve_device(self.device)  # ConfigError naming 'device' (unknown name, or cuda without CUDA)
        require(
            not self.track
            or self.model == "mw"
            or (self.model == "power" and (self.power_penalty == "matched" or self.k == 1)),
            f"track=true needs a commuting reparameterization with a Legendre function (model=mw, or "
            f"model=power with power_penalty=matched); model={self.model} has none (Cor. D.1, Thm D.2)",
        )

    def schedules(self):
        """λ_t = λ for t < steps_on, then 0 (one turn-off schedule per weight decay)."""
        return [turn_off(lam, at=self.steps_on) for lam in self.weight_decays]


# --------------------------------------------------------------------------------------- running
def run_sweep(
    cfg: Config, progress: Callable[[int], None] | None = None, data: RegressionData | None = None
) -> tuple[Trace, RegressionData]:
    """All weight decays of ``cfg`` as one batched run; returns the trace and the data."""
    dtype = DTYPES[cfg.dtype]
    data = data or make_data(cfg.n_samples, cfg.dim, cfg.sparsity, cfg.seed, dtype)
    problem = DiagonalNetwork(
        data, cfg.model, len(cfg.weight_decays), cfg.init_scale, cfg.k, cfg.power_penalty, cfg.device, cfg.track
    )
    lam = schedule_table(cfg.schedules(), cfg.steps, dtype, problem.device)
    with torch_threads(cfg.threads):
        trace = run_batched(problem, lam, cfg.step_size, log_every=cfg.log_every, progress=progress)
    return trace, data


def _at_step(trace: Trace, name: str, step: int) -> np.ndarray:
    j = int(np.searchsorted(trace.steps, step))
    j = min(j, len(trace.steps) - 1)
    return trace.metrics[name][:, j]


def summarize(cfg: Config, trace: Trace, data: RegressionData) -> list[dict]:
    """Per weight decay: distance to x* and ‖x‖₁/‖x‖₂ at turn-off and at the end, loss, x_1, a_∞."""
    out = []
    K = cfg.steps_on
    for c, lam in enumerate(cfg.weight_decays):
        div = int(trace.diverged_at[c])
        final_loss = float(trace.final("train_loss")[c])
        # converged: final train loss below cfg.converged_loss; also reported: how much the distance to x*
        # still moved over the last 10% of the off phase (docs/theory.md#convergence: do not read an unconverged state
        # as the limit)
        tail = trace.metrics["dist"][c]
        j0 = int(np.searchsorted(trace.steps, cfg.steps - max(1, cfg.steps_off // 10)))
        window = tail[j0:]
        moving = float(window.max() - window.min()) if len(window) and np.isfinite(window).all() else float("nan")
        out.append(
            {
                "weight_decay": lam,
                "dist_on": float(_at_step(trace, "dist", K)[c]),
                "l1_l2_on": float(_at_step(trace, "l1_l2", K)[c]),
                "dist_final": float(trace.final("dist")[c]),
                "l1_l2_final": float(trace.final("l1_l2")[c]),
                "train_loss_final": final_loss,
                "x1_final": float(trace.final("x1")[c]),
                "a_final": float(trace.final("a")[c]),
                "dist_change_last10pct": moving,
                "converged": bool(div < 0 and final_loss < cfg.converged_loss),
                "diverged_at": div if div >= 0 else None,
                "status": "diverged" if div >= 0 else "finished",
            }
        )
    return out


def final_x(cfg: Config, trace: Trace, data: RegressionData) -> torch.Tensor:
    """x = g(θ) at the end of the run, (C, d)."""
    problem = DiagonalNetwork(
        data, cfg.model, len(cfg.weight_decays), cfg.init_scale, cfg.k, cfg.power_penalty, cfg.device
    )
    return problem.x_of(trace.final_state)


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


def metric_rows(cfg: Config, trace: Trace) -> list[dict]:
    return trace.rows([f"{cfg.model} wd={lam:g}" for lam in cfg.weight_decays])


def _plot_sweep(cfg: Config, trace: Trace, data: RegressionData, metric: str, title: str):
    labels = [f"λ={lam:g}" for lam in cfg.weight_decays]
    hline = data.ratio_star if metric == "l1_l2" else None
    ylabel = {"dist": "‖x − x*‖₂", "l1_l2": "‖x‖₁ / ‖x‖₂", "train_loss": "train loss", "x1": "x₁"}[metric]
    return trace_plot(
        trace,
        labels,
        metric,
        ylabel,
        log=metric in ("dist", "train_loss"),
        title=title,
        hline=hline,
        vline=cfg.steps_on,
    )


def run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None) -> dict:
    """One parameterization, all weight decays batched, into run directory ``out``."""
    rd = RunDir(out)
    rd.write_config({"experiment": "diagonal", **config_dict(cfg)})
    t0 = time.perf_counter()
    trace, data = run_sweep(cfg, progress)
    rd.write_metrics(metric_rows(cfg, trace))
    title = MODEL_TITLES[cfg.model] + (f", k={cfg.k}" if cfg.model == "power" else "")
    for metric in ("dist", "l1_l2", "train_loss", "x1"):
        save_png(_plot_sweep(cfg, trace, data, metric, title), rd.file(f"{metric}.png"))
    per_wd = summarize(cfg, trace, data)
    preds = predicted_limits(cfg, trace, data)
    if preds is not None:
        for row, p in zip(per_wd, preds):
            row.update(p)
    summary = {
        "experiment": "diagonal",
        "model": cfg.model,
        "ratio_star": data.ratio_star,
        "x1_star": float(data.x_star[0]),
        "weight_decays": per_wd,
        "diverged": sum(r["status"] == "diverged" for r in per_wd),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    rd.finish(summary)
    return summary


# ------------------------------------------------------------------------------------ Figs. 8, 9
REPRODUCE_MODELS = ("linear", "mw", "mwv")
FIG_LETTER = {"linear": "a", "mw": "b", "mwv": "c", "power": "d"}


def _fmt(v: float | None, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec)


def table_markdown(
    base: Config,
    rows: Sequence[tuple[str, Mapping]],
    ratio_star: float,
    x1_star: float,
    models: Sequence[str] = REPRODUCE_MODELS,
) -> str:
    etas = ", ".join(f"{m} {replace(base, model=m).step_size:g}" for m in models)
    head = (
        f"Diagonal linear networks, Figs. 8/9 (N={base.n_samples}, d={base.dim}, ‖x*‖₀={base.sparsity}, "
        f"init scale {base.init_scale:g}, η: {etas}, {base.steps_on} steps with weight decay + "
        f"{base.steps_off} without; ‖x*‖₁/‖x*‖₂ = {ratio_star:.3f}, x*₁ = {x1_star:.3f})\n\n"
    )
    header = [
        "model",
        "λ",
        "a_∞",
        "dist at turn-off",
        "dist final",
        "L1/L2 at turn-off",
        "L1/L2 final",
        "train loss",
        "x₁ final",
        "converged",
        "Thm 3.11: dist of x_pred",
        "Thm 3.11: ‖x_pred − x_trained‖",
    ]
    lines = []
    for model, r in rows:
        if r["status"] == "diverged":
            lines.append(
                [model, f"{r['weight_decay']:g}", f"diverged at step {r['diverged_at']}"] + ["–"] * 6 + ["no", "–", "–"]
            )
            continue
        if "pred_dist" not in r:
            pred = gap = "–"
        elif not r.get("pred_converged", False):
            pred = gap = "solver n.c."
        else:
            pred, gap = _fmt(r["pred_dist"], ".3g"), _fmt(r["pred_gap"], ".2g")
        lines.append(
            [
                model,
                f"{r['weight_decay']:g}",
                f"{r['a_final']:.3g}",
                f"{r['dist_on']:.3g}",
                f"{r['dist_final']:.3g}",
                f"{r['l1_l2_on']:.3f}",
                f"{r['l1_l2_final']:.3f}",
                f"{r['train_loss_final']:.1e}",
                f"{r['x1_final']:.3f}",
                "yes" if r["converged"] else "no",
                pred,
                gap,
            ]
        )
    return head + markdown_table(header, lines)


def reproduce_plan(overrides: Mapping[str, str] | None = None) -> Plan:
    """``reproduce``'s overrides resolved: ``models=`` (default linear,mw,mwv), ``seeds=`` (only when given)
    and one ``Config`` per model (the user's keys with ``model=`` set; the first is the base config)."""
    from ...errors import ConfigError

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
    seeds = parse_seed_list(seeds_raw) if seeds_raw is not None else None
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
            "experiment": "diagonal",
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
        title = MODEL_TITLES[m] + (f", k={cfg.k}" if m == "power" else "")
        letter = FIG_LETTER[m]
        save_png(_plot_sweep(cfg, trace, data, "dist", f"Fig. 8{letter}: {title}"), rd.file(f"fig8{letter}_dist.png"))
        save_png(_plot_sweep(cfg, trace, data, "l1_l2", f"Fig. 9{letter}: {title}"), rd.file(f"fig9{letter}_l1_l2.png"))
        save_png(_plot_sweep(cfg, trace, data, "x1", f"first coordinate: {title}"), rd.file(f"x1_{m}.png"))
        save_png(_plot_sweep(cfg, trace, data, "train_loss", f"train loss: {title}"), rd.file(f"train_loss_{m}.png"))
    data0 = next(iter(results.values()))[2]
    rd.write_metrics(metric_all)
    table = table_markdown(base, rows, data0.ratio_star, float(data0.x_star[0]), models)
    rd.write_text("table.md", table)
    if seeds:
        from . import seeds as diagonal_seeds

        per_seed = diagonal_seeds.run_seeds(base, models, seeds)
        seeds_md = diagonal_seeds.seeds_table(base, per_seed, seeds)
        rd.write_text("seeds.md", seeds_md)
        write_json(rd.path / "seeds.json", {"seeds": list(seeds), "models": per_seed})
        table += "\n" + seeds_md
    rd.finish(
        {
            "experiment": "diagonal",
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
    rows = (cfg.steps_on + cfg.steps_off) // cfg.log_every + 2
    return item * (cfg.n_samples * cfg.dim + 8 * c * cfg.dim) + 8 * 8 * c * rows

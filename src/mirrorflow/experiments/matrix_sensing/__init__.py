"""Matrix sensing with W = UUᵀ and weight decay on U (Sec. 5, App. C, Table 2; docs/theory.md#exp-matrix-sensing,
Cor. C.3).

Setting (Wu & Rebeschini 2021, whose code fixes what the paper leaves open — docs/theory.md#exp-matrix-sensing):

* ground truth W* = U*U*ᵀ / ‖U*U*ᵀ‖_*,  U* ∈ ℝ^{n×r} i.i.d. N(0, 1)  (PSD, rank r, ‖W*‖_* = 1);
* sensing matrices A_i = (G_i + G_iᵀ)/2, G_i i.i.d. N(0, 1)^{n×n}, i = 1..m;  y_i = ⟨A_i, W*⟩;
* loss f(W) = 1/(2m) Σ_i (⟨A_i, W⟩ − y_i)²,  ∇f(W) = 1/m Σ_i r_i A_i;
* **quadratic parameterization** W = UUᵀ, U_0 = √α·I (so W_0 = α·I), weight decay h(U) = ½‖U‖_F² = ½ tr W:

      U ← e^{−ηλ_t} (U − η·2∇f(UUᵀ)U)         (decay applied exactly: docs/theory.md#stiff-decay)

  or, with ``decay=gradient``, the plain step U ← U − η(2∇f U + λ_t U) (unstable once ηλ_t > 1).
  Accumulated regularization a_t = −η Σ_{s<t} λ_s. By Cor. C.3 the eigenvalues follow
  λ_i(W_t) = λ_{0,i} e^{2a_t} e^{4μ_{t,i}} and training ends at the minimiser, among the solutions, of
  R_{a_∞}(W) = ¼ Σ_i (λ_i log λ_i − λ_i) − ¼ (log α + 2a_∞) ‖W‖_*  (Eq. 17): weight decay that is switched off
  adds a multiple of the nuclear norm to the implicit bias without biasing the fit.
* **linear parameterization** (the paper's comparison): W itself, W_0 = α·I, with a nuclear-norm penalty
  λ_t‖W‖_* applied by its proximal step (eigenvalue soft-thresholding of the symmetric iterate):
  W ← prox_{ηλ_t‖·‖_*}(W − η∇f(W)).

Conventions (docs/theory.md#factor-two): the loss carries 1/(2m) and, with ``penalty=half`` (default), the
penalty ½λ‖U‖_F², so the stationary point of constant weight decay solves min f(W) + (λ/2)‖W‖_* over PSD W.
``penalty=full`` takes λ‖U‖_F² instead (decay factor e^{−2ηλ_t}; stationary point of f(W) + λ‖W‖_*, the
same penalty as the linear arm's λ‖W‖_*). In both conventions the recorded a_t = −η Σ_{s<t} λ_s; with
``full`` the decay term is 2λ·(½‖U‖²), so Eq. (17)'s R_a is evaluated at 2a_t.

All configurations that share the data (same n, r, m, seed) run as one batched tensor program:
``U`` has shape (C, n, n); a step is two GEMMs against the sensing matrices in the packed symmetric basis
(m, n(n+1)/2) and two (C, n, n) batched products. ``device=auto|cpu|cuda`` chooses where it runs (the data
is drawn on the CPU, so every device sees the same problem).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ...config import build, check_rate, config_dict, parse_seed_list, require, user_words
from ...engine.batched import Trace, run_batched, schedule_table
from ...engine.progress import progress_or_bar
from ...engine.protocol import Plan
from ...report.tables import markdown_table
from ...runtime import resolve_device
from ...schedules import SCHEDULE_KINDS, Schedule, from_spec
from ...store import RunDir
from .problem import MatrixSensing, SensingData, effective_rank, make_data  # noqa: F401 (the problem's names)

PARAMS = ("uu", "linear")
DECAYS = ("exact", "gradient")
PENALTIES = ("half", "full")  # ½λ‖U‖_F² or λ‖U‖_F² (the quadratic parameterization only)
DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class Config:
    """One matrix-sensing run. ``m=0`` means m = 3·n·r (Wu & Rebeschini's informative default)."""

    n: int = 50
    r: int = 5
    m: int = 0
    seed: int = 0
    param: str = "uu"  # "uu": W = UUᵀ with weight decay on U; "linear": W with a nuclear-norm prox
    init_scale: float = 0.1  # W_0 = init_scale · I
    lr: float = 0.25
    steps: int = 4000
    schedule: str = "constant"  # none | constant | turn_off | linear | cosine
    wd: float = 0.01  # λ (peak for linear/cosine)
    off: float = 0.5  # off-point (turn_off) or zero-point (linear/cosine): a step, or a fraction of steps if < 1
    decay: str = "exact"
    penalty: str = "half"  # half: ½λ‖U‖_F² (factor e^{−ηλ}); full: λ‖U‖_F² (factor e^{−2ηλ})
    loss_threshold: float = 1e-6
    log_every: int = 20
    dtype: str = "float64"
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda

    @property
    def measurements(self) -> int:
        return self.m or 3 * self.n * self.r

    def validate(self) -> None:
        require(self.n > 0, f"n must be positive, got {self.n}")
        require(0 < self.r <= self.n, f"r must be in 1..n={self.n}, got {self.r}")
        require(self.m >= 0, f"m must be non-negative (0 = 3nr), got {self.m}")
        require(self.param in PARAMS, f"param must be one of {', '.join(PARAMS)}, got {self.param!r}")
        require(
            math.isfinite(self.init_scale) and self.init_scale > 0,
            f"init_scale must be positive, got {self.init_scale}",
        )
        require(math.isfinite(self.lr) and self.lr > 0, f"lr must be positive, got {self.lr}")
        require(self.steps > 0, f"steps must be positive, got {self.steps}")
        require(
            self.schedule in SCHEDULE_KINDS,
            f"schedule must be one of {', '.join(SCHEDULE_KINDS)}, got {self.schedule!r}",
        )
        check_rate("wd", self.wd, horizon=self.lr * self.steps)  # a = -lr·Σλ stays finite
        require(self.decay in DECAYS, f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        require(self.penalty in PENALTIES, f"penalty must be one of {', '.join(PENALTIES)}, got {self.penalty!r}")
        require(self.loss_threshold > 0, f"loss_threshold must be positive, got {self.loss_threshold}")
        require(self.log_every > 0, f"log_every must be positive, got {self.log_every}")
        require(self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        resolve_device(self.device)  # ConfigError naming 'device' (unknown name, or cuda without CUDA)
        self.lam_schedule()  # raises ConfigError-compatible ValueError naming 'at' if off is beyond steps

    def lam_schedule(self) -> Schedule:
        """The weight-decay schedule λ_t of this run."""
        from ...errors import ConfigError

        at = self.off if self.off < 1 else int(round(self.off)) if float(self.off).is_integer() else self.off
        try:
            return from_spec(self.schedule, self.wd, at, self.steps)
        except ValueError as e:
            raise ConfigError(
                user_words(str(e), {"at": "off", "until": "off", "value": "wd", "horizon": "steps"})
            ) from None

    def ignored_fields(self) -> tuple[str, ...]:
        """Fields this config does not use (normalised to their defaults before hashing, see
        :func:`mirrorflow.config.build`): ``schedule=none`` uses neither ``wd`` nor ``off``, ``constant`` no ``off``."""
        return {"none": ("wd", "off"), "constant": ("off",)}.get(self.schedule, ())

    def data_key(self) -> tuple:
        """Configurations with equal keys share the sensing data (and the logging grid) and run in one batch."""
        return (
            self.n,
            self.r,
            self.measurements,
            self.seed,
            self.dtype,
            self.param,
            self.decay,
            self.log_every,
            self.loss_threshold,
            self.device,
            self.penalty,
        )


# --------------------------------------------------------------------------------------- running
def run_group(cfgs: Sequence[Config], progress: Callable[[int], None] | None = None) -> Trace:
    """Run configurations that share data (equal :meth:`Config.data_key`) as one batch."""
    keys = {c.data_key() for c in cfgs}
    if len(keys) != 1:
        raise ValueError("run_group needs configurations with equal Config.data_key()")
    steps = {c.steps for c in cfgs}
    if len(steps) != 1:
        raise ValueError("run_group needs configurations with equal 'steps'")
    c0 = cfgs[0]
    dtype = DTYPES[c0.dtype]
    data = make_data(c0.n, c0.r, c0.measurements, c0.seed, dtype)  # drawn on the CPU: the same on every device
    problem = MatrixSensing(
        data, [c.init_scale for c in cfgs], c0.param, c0.decay, c0.loss_threshold, c0.device, c0.penalty
    )
    lam = schedule_table([c.lam_schedule() for c in cfgs], c0.steps, dtype, problem.device)
    lr = torch.tensor([c.lr for c in cfgs], dtype=dtype, device=problem.device)
    return run_batched(problem, lam, lr, log_every=c0.log_every, progress=progress)


def run_many(cfgs: Sequence[Config], progress: Callable[[int], None] | None = None) -> list[dict]:
    """Run any list of configs, grouping those that share data; returns per-config result dicts
    (``trace`` slices: steps, metrics arrays, diverged_at) in input order."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(cfgs):
        groups.setdefault(c.data_key() + (c.steps,), []).append(i)
    results: list[dict | None] = [None] * len(cfgs)
    for idx in groups.values():
        tr = run_group([cfgs[i] for i in idx], progress)
        for j, i in enumerate(idx):
            results[i] = {
                "steps": tr.steps,
                "metrics": {k: v[j] for k, v in tr.metrics.items()},
                "diverged_at": int(tr.diverged_at[j]),
            }
    return results  # type: ignore[return-value]


def summarize(cfg: Config, res: Mapping) -> dict:
    """Final metrics of one run (what Table 2 reports)."""
    mt = res["metrics"]
    hit = mt["hit_step"][-1]
    out = {
        "nuclear_norm": float(mt["nuclear_norm"][-1]),
        "train_loss": float(mt["train_loss"][-1]),
        "rec_error": float(mt["rec_error"][-1]),
        "effective_rank": float(mt["effective_rank"][-1]),
        "time_to_train_loss": int(hit) if np.isfinite(hit) and hit >= 0 else None,
        "a_final": float(mt["a"][-1]),
        "budget": cfg.lam_schedule().integral(cfg.steps),
        "diverged_at": res["diverged_at"] if res["diverged_at"] >= 0 else None,
        "status": "diverged" if res["diverged_at"] >= 0 else "finished",
    }
    return out


def metric_rows(res: Mapping, label: str | None = None) -> list[dict]:
    mt = res["metrics"]
    rows = []
    for j, s in enumerate(res["steps"]):
        row = {"step": int(s)} if label is None else {"schedule": label, "step": int(s)}
        row.update({k: float(v[j]) for k, v in mt.items() if k != "hit_step"})
        rows.append(row)
    return rows


def write_run(cfg: Config, res: Mapping, out: Path | str, seconds: float = 0.0) -> dict:
    """Write one configuration's result (from :func:`run_many`) as a run directory; summary.json last."""
    from ...report.figures import panel_plot, save_png

    rd = RunDir(out)
    rd.write_config({"experiment": "matrix-sensing", **config_dict(cfg)})
    rd.write_metrics(metric_rows(res))
    panels = {m: {"run": (res["steps"], res["metrics"][m])} for m in ("train_loss", "rec_error", "nuclear_norm")}
    save_png(panel_plot(panels, log={"train_loss": True, "rec_error": True}), rd.file("curves.png"))
    summary = {**summarize(cfg, res), "seconds": round(seconds, 3)}
    rd.finish(summary)
    return summary


def run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None) -> dict:
    """One configuration into run directory ``out`` (config.yaml, metrics.csv, figures, summary.json)."""
    t0 = time.perf_counter()
    res = run_many([cfg], progress)[0]
    return write_run(cfg, res, out, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------ Table 2
def check_budget(base: Config) -> None:
    """Table 2's arms (and the studies built on them) share the budget Σλ = wd·steps: wd must be positive."""
    require(
        base.wd > 0, f"wd must be positive for reproduce (it sets the budget Σλ = wd·steps of every arm), got {base.wd}"
    )


def table2_arms(base: Config) -> list[tuple[str, Config]]:
    """Table 2's schedules at equal total regularization Σλ = base.wd · steps (docs/theory.md#exp-matrix-sensing).

    * constant ``base.wd`` for the whole run (no turn-off);
    * linear / cosine decay reaching 0 at T/2, peak chosen so that Σλ equals the budget;
    * constant 0.02, 0.2, 2, 20 (= 2, 20, 200, 2000 × base.wd) switched off once the budget is spent
      (at T/2, T/20, T/200, T/2000);
    * no weight decay;
    * the linear parameterization with a nuclear-norm prox: constant ``base.wd`` and turned off at T/2 at 2·wd.
    """
    check_budget(base)
    T, c = base.steps, base.wd
    budget = c * T  # off-points are fractions of T: spending `budget` at strength v takes c/v of the run
    arms = [(f"Constant {c:g}, no t-o", replace(base, schedule="constant", wd=c))]
    half = T // 2
    for kind, label in (("linear", "Linear decay"), ("cosine", "Cosine decay")):
        shape = from_spec(kind, 1.0, half, T)
        peak = budget / shape.integral(T)
        arms.append((label, replace(base, schedule=kind, wd=peak, off=half / T)))
    for mult in (2, 20, 200, 2000):
        v = c * mult
        arms.append((f"Constant {v:g}, t-o", replace(base, schedule="turn_off", wd=v, off=c / v)))
    arms.append(("No weight decay", replace(base, schedule="none", wd=0.0)))
    lin = replace(base, param="linear")
    arms.append((f"Linear param., nuclear {c:g}", replace(lin, schedule="constant", wd=c)))
    arms.append((f"Linear param., nuclear {2 * c:g}, t-o", replace(lin, schedule="turn_off", wd=2 * c, off=0.5)))
    arms.append(("Linear param., no reg.", replace(lin, schedule="none", wd=0.0)))
    return arms


def _fmt(v, spec=".3g"):
    if v is None:
        return "–"
    if isinstance(v, float) and not math.isfinite(v):
        return "diverged"
    return format(v, spec)


def table2_markdown(labels: Sequence[str], summaries: Sequence[Mapping], base: Config) -> str:
    head = (
        f"Matrix sensing, Table 2 (n={base.n}, r={base.r}, m={base.measurements}, W0={base.init_scale:g}·I, "
        f"η={base.lr:g}, T={base.steps}, Σλ={base.wd * base.steps:g}, loss threshold {base.loss_threshold:g}; "
        f"‖W*‖_* = 1)\n\n"
    )
    rows = []
    for lab, s in zip(labels, summaries):
        if s["status"] == "diverged":
            rows.append([lab, f"diverged at step {s['diverged_at']}", "–", "–", "–", "–"])
            continue
        rows.append(
            [
                lab,
                f"{s['nuclear_norm']:.3f}",
                _fmt(s["train_loss"], ".2e"),
                _fmt(s["rec_error"], ".2e"),
                _fmt(s["time_to_train_loss"], "d"),
                f"{s['a_final']:.3g}",
            ]
        )
    return head + markdown_table(
        ["Schedule", "Nuclear norm", "Train loss", "Rec error", "Time to train loss", "a_∞"], rows
    )


def reproduce_plan(overrides: Mapping[str, str] | None = None) -> Plan:
    """``reproduce``'s overrides resolved: ``preset=`` (default ``table2``), ``seeds=`` (a study's seeds,
    default 0..4; with ``table2`` only when given) and the base ``Config`` (the preset's defaults under the
    user's keys) from which the study derives its arms."""
    from ...errors import ConfigError
    from . import studies as S

    ov = dict(overrides or {})
    preset = str(ov.pop("preset", "table2"))
    if preset not in S.PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(S.PRESETS)}, got {preset!r}")
    for key in ("schedule", "off"):  # the study's arms set them: a value here would be dropped without a word
        if key in ov:
            raise ConfigError(f"{key}: reproduce sets the schedule and off-point of each arm itself; drop {key}=")
    seeds_raw = ov.pop("seeds", None)
    seeds = parse_seed_list(seeds_raw) if seeds_raw is not None else S.DEFAULT_SEEDS
    base = build(Config, S.preset_overrides(preset, ov))
    check_budget(base)
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
    from ...report.figures import line_plot, save_png
    from . import studies as S

    plan = reproduce_plan(overrides)
    preset, seeds, base = plan.options["preset"], plan.options.get("seeds"), plan.config
    if preset != "table2":
        RunDir(out).write_config(
            {"experiment": "matrix-sensing", "reproduce": preset, "seeds": list(seeds), **config_dict(base)}
        )
        return S.run_study(preset, base, seeds, out, progress)
    arms = table2_arms(base)
    labels = [a for a, _ in arms]
    cfgs = [c for _, c in arms]
    rd = RunDir(out)
    rd.write_config({"experiment": "matrix-sensing", "reproduce": "table2", **config_dict(base)})
    t0 = time.perf_counter()
    groups = len({c.data_key() for c in cfgs})
    with progress_or_bar(progress, base.steps * groups, "matrix sensing (Table 2)") as progress:
        results = run_many(cfgs, progress)
    summaries = [summarize(c, r) for c, r in zip(cfgs, results)]
    rows = [row for lab, res in zip(labels, results) for row in metric_rows(res, lab)]
    rd.write_metrics(rows)
    table = table2_markdown(labels, summaries, base)
    rd.write_text("table2.md", table)
    figures = {
        "fig5_train_loss.png": ("train_loss", True),
        "fig5_rec_error.png": ("rec_error", True),
        "fig6_nuclear_norm.png": ("nuclear_norm", False),
        "effective_rank.png": ("effective_rank", False),
    }
    for name, (metric, log) in figures.items():
        series = {lab: (res["steps"], res["metrics"][metric]) for lab, res in zip(labels, results)}
        save_png(line_plot(series, metric, log=log, hline=1.0 if metric == "nuclear_norm" else None), rd.file(name))
    # Fig. 3 / Fig. 7: the three scenarios for both parameterizations; rec error and train loss on one plot.
    three = [0, 3, len(arms) - 4, len(arms) - 3, len(arms) - 2, len(arms) - 1]
    series = {labels[i]: (results[i]["steps"], results[i]["metrics"]["rec_error"]) for i in three}
    save_png(line_plot(series, "rec_error", log=True), rd.file("fig3_uu_vs_linear.png"))
    series = {}
    for i in (3,):
        series[f"{labels[i]}: train loss"] = (results[i]["steps"], results[i]["metrics"]["train_loss"])
        series[f"{labels[i]}: rec error"] = (results[i]["steps"], results[i]["metrics"]["rec_error"])
    save_png(
        line_plot(series, "value", log=True, vline=cfgs[3].lam_schedule().params.get("at")),
        rd.file("fig7_grokking.png"),
    )
    rd.finish(
        {
            "experiment": "matrix-sensing",
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

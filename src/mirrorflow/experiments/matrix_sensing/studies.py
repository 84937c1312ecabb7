"""Matrix-sensing studies: Table 2's arms (schedules of equal total regularization Σλ), and beyond the
single-seed Table 2: seeds with intervals, the paper's horizon, the penalty convention, decaying penalties on
the linear parameterization, and an init-scale axis.

``mirrorflow reproduce matrix-sensing preset=NAME [seeds=0,1,2,3,4] [key=value ...]`` (any ``Config`` field):

* ``paper-horizon`` — Table 2's arms at T = 1200 (``PAPER_HORIZON``) under both penalty conventions,
  ½λ‖U‖_F² and λ‖U‖_F², next to the paper's nuclear norms and times to the loss threshold;
* ``linear-schedules`` — the linear parameterization W with a nuclear-norm prox under constant, turned-off,
  linear- and cosine-decaying strengths of equal Σλ, against W = UUᵀ with the same decays;
* ``init-scale`` — W_0 = α·I for α ∈ ``INIT_SCALES``: no weight decay against constant 2·wd turned off at
  T/2 (Table 2's "Constant 0.02, t-o");
* ``table2`` (default) with ``seeds=`` — the single-seed Table 2 (unchanged), then its arms over the seeds.

Statistics: every cell is the mean ± half-width of the 95 % t-interval over seeds (``report.stats.t_interval``);
"(k/N)" when only k of N seeds have a value (e.g. reached the loss threshold). Each seed draws its own W* and
sensing matrices, shared by all arms, so arm comparisons are paired: the per-seed difference of
log10 rec error (or of the nuclear norm), with its mean ± t-interval and how many seeds have it below 0.
A run "recovers W*" when its final ‖W − W*‖_F < ``RECOVERED`` (‖W*‖_* = 1, so ‖W*‖_F ≈ 0.45 at r = 5).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ...config import config_dict, require
from ...engine.progress import progress_or_bar
from ...report.aggregate import fmt_ci
from ...report.stats import interval, t_interval
from ...schedules import from_spec
from ...store import RunDir
from .config import Config
from .problem import run_many
from .report import metric_rows, summarize

PRESETS = ("table2", "paper-horizon", "linear-schedules", "init-scale")
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
PAPER_HORIZON = 1200
INIT_SCALES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
RECOVERED = 1e-2
# Table 2 of the paper per arm name (table2_named): (nuclear norm, time to train loss)
PAPER_TABLE2 = {
    "constant": (0.93, None),
    "linear": (1.00, 661),
    "cosine": (1.00, 624),
    "turn_off_x2": (1.00, 716),
    "turn_off_x20": (1.00, 209),
    "turn_off_x200": (1.00, 209),
    "turn_off_x2000": (1.00, 239),
}
TURN_OFF_MULTIPLES = (2, 20, 200, 2000)  # Table 2's turned-off arms: strength k·wd, off once the budget is spent
FIG3_ARMS = ("constant", "turn_off_x2", "none", "linear_param_constant", "linear_param_turn_off", "linear_param_none")
FIG7_ARM = "turn_off_x2"  # Fig. 7: grokking after the switch-off
LINEAR_DECAYS = ("linear", "cosine")  # Table 2's decaying schedules (linear-schedules puts them on W too)

Arm = tuple[str, Config]


# ------------------------------------------------------------------------------------------ Table 2
def check_budget(base: Config) -> None:
    """Table 2's arms (and the studies built on them) share the budget Σλ = wd·steps: wd must be positive."""
    require(
        base.wd > 0, f"wd must be positive for reproduce (it sets the budget Σλ = wd·steps of every arm), got {base.wd}"
    )


def table2_named(base: Config) -> dict[str, Arm]:
    """Table 2's schedules at equal total regularization Σλ = base.wd · steps (docs/theory.md#exp-matrix-sensing),
    by name → (label, config):

    * ``constant``: constant ``base.wd`` for the whole run (no turn-off);
    * ``linear`` / ``cosine``: decay reaching 0 at T/2, peak chosen so that Σλ equals the budget;
    * ``turn_off_x2`` … ``turn_off_x2000``: constant 0.02, 0.2, 2, 20 (= 2, 20, 200, 2000 × base.wd) switched off
      once the budget is spent (at T/2, T/20, T/200, T/2000);
    * ``none``: no weight decay;
    * ``linear_param_constant`` / ``linear_param_turn_off`` / ``linear_param_none``: the linear parameterization
      with a nuclear-norm prox, constant ``base.wd``, turned off at T/2 at 2·wd, and without regularization.
    """
    check_budget(base)
    T, c = base.steps, base.wd
    budget = c * T  # off-points are fractions of T: spending `budget` at strength v takes c/v of the run
    arms = {"constant": (f"Constant {c:g}, no t-o", replace(base, schedule="constant", wd=c))}
    half = T // 2
    for kind, label in (("linear", "Linear decay"), ("cosine", "Cosine decay")):
        shape = from_spec(kind, 1.0, half, T)
        peak = budget / shape.integral(T)
        arms[kind] = (label, replace(base, schedule=kind, wd=peak, off_at=half / T))
    for mult in TURN_OFF_MULTIPLES:
        v = c * mult
        arms[f"turn_off_x{mult}"] = (f"Constant {v:g}, t-o", replace(base, schedule="turn_off", wd=v, off_at=c / v))
    arms["none"] = ("No weight decay", replace(base, schedule="none", wd=0.0))
    lin = replace(base, param="linear")
    arms["linear_param_constant"] = (f"Linear param., nuclear {c:g}", replace(lin, schedule="constant", wd=c))
    arms["linear_param_turn_off"] = (
        f"Linear param., nuclear {2 * c:g}, t-o",
        replace(lin, schedule="turn_off", wd=2 * c, off_at=0.5),
    )
    arms["linear_param_none"] = ("Linear param., no reg.", replace(lin, schedule="none", wd=0.0))
    return arms


def table2_arms(base: Config) -> list[Arm]:
    """Table 2's arms as (label, config) in the table's order (:func:`table2_named`)."""
    return list(table2_named(base).values())


def preset_overrides(preset: str, overrides: Mapping[str, str]) -> dict[str, str]:
    """The preset's defaults under the user's ``key=value`` overrides (``paper-horizon``: steps = 1200)."""
    defaults = {"steps": str(PAPER_HORIZON)} if preset == "paper-horizon" else {}
    return {**defaults, **overrides}


# ------------------------------------------------------------------------------------------ running
def run_seeds(
    arms: Sequence[Arm],
    seeds: Sequence[int],
    progress: Callable[[int], None] | None = None,
    description: str = "matrix sensing over seeds",
) -> list[list[dict]]:
    """Every arm at every seed (arms sharing a seed's data batched together); per arm, per seed:
    ``{"summary": summarize(...), "result": run_many's result, "seed": s}``."""
    cfgs = [replace(c, seed=s) for _, c in arms for s in seeds]
    groups = {c.data_key() + (c.steps,) for c in cfgs}
    with progress_or_bar(progress, sum(g[-1] for g in groups), description) as bar:
        results = run_many(cfgs, bar)
    out, it = [], iter(zip(cfgs, results))
    for _ in arms:
        out.append([{"summary": summarize(c, r), "result": r, "seed": c.seed} for c, r in (next(it) for _ in seeds)])
    return out


def _values(runs: Sequence[Mapping], key: str) -> list[float]:
    out = []
    for r in runs:
        v = r["summary"].get(key)
        out.append(float("nan") if v is None or r["summary"]["status"] == "diverged" else float(v))
    return out


def _cell(values: Sequence[float]) -> str:
    centre, low, high, n = interval(values)
    return fmt_ci(centre, low, high, n, len(values))


def recovered(runs: Sequence[Mapping]) -> str:
    k = sum(1 for v in _values(runs, "rec_error") if math.isfinite(v) and v < RECOVERED)
    return f"{k}/{len(runs)}"


def paired(a: Sequence[float], b: Sequence[float], log: bool = True) -> dict:
    """Per-seed differences d = f(b) − f(a) (f = log10 when ``log``): mean, 95 % half-width, n, #(d < 0)."""
    f = (lambda v: math.log10(v) if v > 0 else float("nan")) if log else (lambda v: v)
    d = [f(y) - f(x) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    d = [v for v in d if math.isfinite(v)]
    mean, half, n = t_interval(d)
    return {"mean": mean, "half": half, "n": n, "below_zero": sum(v < 0 for v in d), "total": len(a)}


def paired_line(what: str, p: Mapping) -> str:
    ci = (
        "–"
        if p["n"] == 0
        else (f"{p['mean']:+.3g}" if not math.isfinite(p["half"]) else f"{p['mean']:+.3g} ± {p['half']:.2g}")
    )
    return f"| {what} | {ci} | {p['below_zero']}/{p['total']} |"


SEED_HEAD = (
    "| Schedule | Nuclear norm | Train loss | Rec error | Time to train loss | recovers W* | a_∞ |\n"
    "|---|---|---|---|---|---|---|\n"
)


def seed_row(label: str, runs: Sequence[Mapping], extra: str = "") -> str:
    cells = [_cell(_values(runs, k)) for k in ("nuclear_norm", "train_loss", "rec_error", "time_to_train_loss")]
    a = _values(runs, "a_final")
    return f"| {label} | " + " | ".join(cells) + f" | {recovered(runs)} | {t_interval(a)[0]:.3g} |{extra}"


def _describe(base: Config, seeds: Sequence[int]) -> str:
    return (
        f"n={base.n}, r={base.r}, m={base.measurements}, W0={base.init_scale:g}·I, η={base.lr:g}, "
        f"T={base.steps}, Σλ={base.wd * base.steps:g}, loss threshold {base.loss_threshold:g}, "
        f"seeds {','.join(map(str, seeds))}; mean ± 95% t-interval over seeds"
    )


# ------------------------------------------------------------------------------------------ presets
def table2_over_seeds(base: Config, seeds: Sequence[int], progress=None) -> tuple[str, dict, list]:
    arms = table2_arms(base)
    runs = run_seeds(arms, seeds, progress, "Table 2 over seeds")
    lines = [f"Table 2 over seeds ({_describe(base, seeds)}; penalty={base.penalty})\n\n", SEED_HEAD]
    lines += [seed_row(lab, r) + "\n" for (lab, _), r in zip(arms, runs)]
    return "".join(lines), _stats(arms, runs), list(zip(arms, runs))


def paper_horizon(base: Config, seeds: Sequence[int], progress=None) -> tuple[str, dict, list]:
    """Table 2 at T = PAPER_HORIZON (docs/matrix-sensing.md: the paper's times 661, 624, 716 of the arms set by
    the T/2 point give T ≈ 1240–1380) under both penalty conventions, next to the paper's numbers."""
    named = table2_named(base)
    uu = [(lab, c) for lab, c in named.values() if c.param == "uu"]
    lin = [(lab, c) for lab, c in named.values() if c.param == "linear"]
    arms = [
        (f"{lab} [{p}]", replace(c, penalty=p))
        for p in ("half", "full")
        for lab, c in uu
        if p == "half" or c.schedule != "none"
    ] + lin  # without weight decay the penalty plays no part
    runs = run_seeds(arms, seeds, progress, "Table 2 at the paper's horizon")
    by = dict(zip([a for a, _ in arms], runs))
    arms_cfg = dict(arms)
    head = (
        f"Table 2 at the paper's horizon ({_describe(base, seeds)}). [half]: ½λ‖U‖_F², [full]: λ‖U‖_F²; "
        "the linear parameterization's prox uses λ‖W‖_* in both\n\n"
        "| Schedule | penalty | Nuclear norm | paper | Train loss | Rec error | Time to train loss | paper "
        "| recovers W* | a_∞ |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for name, (lab, c) in named.items():
        if c.param != "uu":
            continue
        nuc, t = PAPER_TABLE2.get(name, (None, None))
        for p in ("half", "full"):
            if f"{lab} [{p}]" not in by:
                continue
            r = by[f"{lab} [{p}]"]
            cells = [_cell(_values(r, k)) for k in ("nuclear_norm", "train_loss", "rec_error", "time_to_train_loss")]
            pen = p if arms_cfg[f"{lab} [{p}]"].schedule != "none" else "–"
            lines.append(
                f"| {lab} | {pen} | {cells[0]} | {'–' if nuc is None else f'{nuc:.2f}'} | {cells[1]} "
                f"| {cells[2]} | {cells[3]} | {'–' if t is None else t} | {recovered(r)} "
                f"| {t_interval(_values(r, 'a_final'))[0]:.3g} |\n"
            )
    for lab, _ in lin:
        r = by[lab]
        cells = [_cell(_values(r, k)) for k in ("nuclear_norm", "train_loss", "rec_error", "time_to_train_loss")]
        lines.append(
            f"| {lab} | λ‖W‖_* | {cells[0]} | – | {cells[1]} | {cells[2]} | {cells[3]} | – "
            f"| {recovered(r)} | {t_interval(_values(r, 'a_final'))[0]:.3g} |\n"
        )
    const = named["constant"][0]
    pairs = [
        (
            f"{const}: nuclear norm, full − half",
            paired(
                _values(by[f"{const} [half]"], "nuclear_norm"),
                _values(by[f"{const} [full]"], "nuclear_norm"),
                log=False,
            ),
        ),
        (
            f"{const}: log10 rec error, full − half",
            paired(_values(by[f"{const} [half]"], "rec_error"), _values(by[f"{const} [full]"], "rec_error")),
        ),
    ]
    text = head + "".join(lines) + _paired_table(pairs)
    return text, {**_stats(arms, runs), "paired": {k: v for k, v in pairs}}, list(zip(arms, runs))


def linear_schedule_arms(base: Config) -> list[Arm]:
    """The linear parameterization under constant c, 2c turned off at T/2, linear and cosine decay to 0 at
    T/2 (peaks as Table 2's, equal Σλ = c·T) and none; W = UUᵀ with the same linear / cosine decays and 2c
    turned off, for reference."""
    named = table2_named(base)
    decays = [(f"Linear param., {named[k][0].lower()}", replace(named[k][1], param="linear")) for k in LINEAR_DECAYS]
    uu = [(f"UUᵀ, {named[k][0].lower()}", named[k][1]) for k in (*LINEAR_DECAYS, "turn_off_x2")]
    return [named["linear_param_constant"], named["linear_param_turn_off"], *decays, named["linear_param_none"], *uu]


def linear_schedules(base: Config, seeds: Sequence[int], progress=None) -> tuple[str, dict, list]:
    arms = linear_schedule_arms(base)
    runs = run_seeds(arms, seeds, progress, "linear parameterization: decaying penalties")
    by = dict(zip([a for a, _ in arms], runs))
    head = (
        f"Linear parameterization with decaying nuclear-norm penalties ({_describe(base, seeds)}; "
        f"prox step W ← prox_{{ηλ_t‖·‖_*}}(W − η∇f))\n\n"
    )
    lines = [seed_row(lab, r) + "\n" for (lab, _), r in zip(arms, runs)]
    named = table2_named(base)
    const = named["linear_param_constant"][0]
    lin_dec, cos_dec = (f"Linear param., {named[k][0].lower()}" for k in LINEAR_DECAYS)
    rec = lambda lab: _values(by[lab], "rec_error")  # noqa: E731
    pairs = [
        (f"log10 rec error: {lin_dec} − {const}", paired(rec(const), rec(lin_dec))),
        (f"log10 rec error: {cos_dec} − {const}", paired(rec(const), rec(cos_dec))),
        (f"log10 rec error: {lin_dec} − UUᵀ, linear decay", paired(rec("UUᵀ, linear decay"), rec(lin_dec))),
        (f"log10 rec error: {cos_dec} − UUᵀ, cosine decay", paired(rec("UUᵀ, cosine decay"), rec(cos_dec))),
    ]
    text = head + SEED_HEAD + "".join(lines) + _paired_table(pairs)
    return text, {**_stats(arms, runs), "paired": {k: v for k, v in pairs}}, list(zip(arms, runs))


def init_scale_arms(base: Config, scales: Sequence[float] = INIT_SCALES) -> list[Arm]:
    c = base.wd
    arms = []
    for a in scales:
        arms.append((f"α={a:g}, no weight decay", replace(base, init_scale=a, schedule="none", wd=0.0)))
        arms.append(
            (
                f"α={a:g}, constant {2 * c:g}, t-o",
                replace(base, init_scale=a, schedule="turn_off", wd=2 * c, off_at=0.5),
            )
        )
    return arms


def init_scale(base: Config, seeds: Sequence[int], progress=None) -> tuple[str, dict, list]:
    arms = init_scale_arms(base)
    runs = run_seeds(arms, seeds, progress, "matrix sensing: init-scale axis")
    head = (
        f"Init-scale axis, W0 = α·I ({_describe(base, seeds).replace(f'W0={base.init_scale:g}·I, ', '')})\n\n"
        "| α | arm | Rec error | Nuclear norm | Train loss | Time to train loss | recovers W* |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    lines, pairs = [], []
    for i in range(0, len(arms), 2):
        a = arms[i][1].init_scale
        for (lab, _), r in ((arms[i], runs[i]), (arms[i + 1], runs[i + 1])):
            cells = [_cell(_values(r, k)) for k in ("rec_error", "nuclear_norm", "train_loss", "time_to_train_loss")]
            lines.append(f"| {a:g} | {lab.split(', ', 1)[1]} | " + " | ".join(cells) + f" | {recovered(r)} |\n")
        pairs.append(
            (
                f"α={a:g}: log10 rec error, t-o − no weight decay",
                paired(_values(runs[i], "rec_error"), _values(runs[i + 1], "rec_error")),
            )
        )
    text = head + "".join(lines) + _paired_table(pairs)
    return text, {**_stats(arms, runs), "paired": {k: v for k, v in pairs}}, list(zip(arms, runs))


def _paired_table(pairs: Sequence[tuple[str, Mapping]]) -> str:
    return (
        "\nPaired over seeds (same W* and sensing matrices per seed):\n\n"
        "| difference | mean ± 95% t-interval | seeds below 0 |\n|---|---|---|\n"
        + "\n".join(paired_line(w, p) for w, p in pairs)
        + "\n"
    )


def _stats(arms: Sequence[Arm], runs: Sequence[Sequence[Mapping]]) -> dict:
    out = {}
    for (lab, cfg), r in zip(arms, runs):
        out[lab] = {
            "config": {k: v for k, v in config_dict(cfg).items() if k != "seed"},
            "seeds": [x["seed"] for x in r],
            "per_seed": [x["summary"] for x in r],
            **{
                k: dict(zip(("mean", "half_width", "n"), t_interval(_values(r, k))))
                for k in ("nuclear_norm", "train_loss", "rec_error", "time_to_train_loss")
            },
            "recovered": recovered(r),
        }
    return out


# ------------------------------------------------------------------------------------------ figure
def _mean_log_curve(runs: Sequence[Mapping], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Geometric mean over seeds of a positive metric's curve."""
    Y = np.stack([np.log10(np.clip(r["result"]["metrics"][metric], 1e-300, None)) for r in runs])
    return runs[0]["result"]["steps"], 10 ** np.nanmean(Y, axis=0)


def _figures(preset: str, base: Config, pairs: list, rd: RunDir) -> None:
    from ...report.figures import line_plot, save_png

    if preset == "init-scale":
        series = {}
        for kind in ("no weight decay", "t-o"):
            sel = [(cfg.init_scale, runs) for (lab, cfg), runs in pairs if lab.endswith(kind)]
            xs = [a for a, _ in sel]
            series[f"{kind}: mean ± 95% CI"] = (xs, [t_interval(_values(r, "rec_error"))[0] for _, r in sel])
        fig = line_plot(
            series,
            "final ‖W − W*‖_F",
            log=True,
            xlabel="init scale α (W0 = α·I)",
            title=f"Matrix sensing: init scale (T={base.steps})",
            hline=RECOVERED,
        )
        ax = fig.axes[0]
        ax.set_xscale("log")
        for line, kind in zip(ax.get_lines(), ("no weight decay", "t-o")):
            sel = [(cfg.init_scale, runs) for (lab, cfg), runs in pairs if lab.endswith(kind)]
            m = np.array([t_interval(_values(r, "rec_error"))[0] for _, r in sel])
            h = np.nan_to_num(np.array([t_interval(_values(r, "rec_error"))[1] for _, r in sel]))
            ax.fill_between([a for a, _ in sel], np.clip(m - h, 1e-12, None), m + h, color=line.get_color(), alpha=0.2)
            ax.plot([a for a, _ in sel], m, "o", color=line.get_color())
        save_png(fig, rd.file("init_scale_rec_error.png"))
        return
    series = {lab: _mean_log_curve(runs, "rec_error") for (lab, _), runs in pairs}
    title = {
        "paper-horizon": "Table 2 at the paper's horizon",
        "linear-schedules": "decaying penalties",
        "table2": "Table 2",
    }[preset] + " (geometric mean over seeds)"
    fig = line_plot(series, "‖W − W*‖_F", log=True, title=title, vline=base.steps // 2, size=(9.5, 5.0))
    fig.axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no curve hidden
    save_png(fig, rd.file(f"{preset}_rec_error.png"))


# ------------------------------------------------------------------------------------------ entry
STUDIES = {
    "table2": table2_over_seeds,
    "paper-horizon": paper_horizon,
    "linear-schedules": linear_schedules,
    "init-scale": init_scale,
}


def run_study(
    preset: str, base: Config, seeds: Sequence[int], out: Path | str, progress: Callable[[int], None] | None = None
) -> str:
    """One study into run directory ``out`` (``<preset>.md``, ``metrics.csv``, a figure, ``summary.json``)."""
    rd = RunDir(out)
    t0 = time.perf_counter()
    text, stats, pairs = STUDIES[preset](base, seeds, progress)
    rows = []
    for (lab, _cfg), runs in pairs:
        for r in runs:
            rows += [{"seed": r["seed"], **row} for row in metric_rows(r["result"], lab)]
    rd.write_metrics(rows)
    rd.write_text(f"{preset}.md", text)
    _figures(preset, base, pairs, rd)
    rd.finish(
        {
            "experiment": "matrix-sensing",
            "reproduce": preset,
            "seeds": list(seeds),
            "arms": stats,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    return text

"""`mirrorflow report`: tidy CSV, markdown table of mean ± 95% t-interval across seeds, figures."""

import csv
import json
import math
import statistics
import textwrap

import numpy as np
import pytest
from scipy import stats

from mirrorflow.engine.grid import resolve
from mirrorflow.engine.sweep import sweep
from mirrorflow.experiments import load
from mirrorflow.report import aggregate as A
from mirrorflow.report.stats import t_interval

PROBE = textwrap.dedent('''
    """Tiny experiment for report tests: value = x**2 + seed**1.5, 'diverged' (no value) when x > 10."""
    from dataclasses import dataclass

    from mirrorflow.config import config_dict
    from mirrorflow.store import RunDir


    @dataclass(frozen=True)
    class Config:
        x: float = 1.0
        kind: str = "a"
        seed: int = 0

        def validate(self):
            pass


    def run(cfg, out, progress=None):
        rd = RunDir(out)
        rd.write_config({"experiment": "report-probe", **config_dict(cfg)})
        diverged = cfg.x > 10
        v = float("nan") if diverged else cfg.x ** 2 + cfg.seed ** 1.5
        rd.write_metrics([{"step": s, "loss": (v if s else 1.0) + 0.1 * (3 - s)} for s in range(4)])
        return rd.finish({"value": v, "nested": {"twice": 2 * v}, "status": "diverged" if diverged else "finished",
                          "seconds": 0.01})
''')


@pytest.fixture
def probe_sweep(tmp_path, plugin_experiment):
    grid, points = resolve(
        "report-probe", load(plugin_experiment("report-probe", PROBE)), None, ["x=1,2,11", "kind=a,b", "seeds=3"]
    )
    out = tmp_path / "sweep"
    res = sweep(grid, points, out, workers=1)
    assert res.completed == 18
    return out, points


def t_halfwidth(xs):
    """Independent reference: half the width of scipy's 95% t-interval of the mean."""
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=stats.sem(xs))
    return (hi - lo) / 2


def test_ci95_is_the_t_interval():
    xs = [1.0, 2.5, 2.0, 4.0]
    mean, half, n = t_interval(xs)
    assert (mean, n) == (pytest.approx(statistics.mean(xs)), 4)
    assert half == pytest.approx(t_halfwidth(xs), rel=1e-12)
    assert half > 1.96 * statistics.stdev(xs) / 2  # wider than the normal interval for n = 4
    m, h, k = t_interval([3.0, float("nan"), 5.0, float("inf")])
    assert (m, k) == (4.0, 2) and h == pytest.approx(t_halfwidth([3.0, 5.0]))
    assert t_interval([7.0])[0] == 7.0 and math.isnan(t_interval([7.0])[1])
    assert t_interval([])[2] == 0


def test_report_files_tidy_csv_and_table(probe_sweep):
    out, points = probe_sweep
    rep = A.write_report(out)
    rows = list(csv.DictReader((out / "report" / "runs.csv").read_text().splitlines()))
    assert len(rows) == 18 and {r["run_id"] for r in rows} == {p.run_id for p in points}
    for r in rows:  # one row per run: config and summary values side by side
        x, seed = float(r["x"]), int(r["seed"])
        if x > 10:
            assert r["status"] == "diverged" and math.isnan(float(r["value"]))
        else:
            assert float(r["value"]) == pytest.approx(x**2 + seed**1.5)
            assert float(r["nested.twice"]) == pytest.approx(2 * (x**2 + seed**1.5))
    curves = list(csv.DictReader((out / "report" / "curves.csv").read_text().splitlines()))
    assert len(curves) == 18 * 4 and set(curves[0]) == {"run_id", "x", "kind", "seed", "step", "loss"}

    table = (out / "report" / "summary.md").read_text()
    assert table == rep.markdown
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    assert lines[0] == "| x | kind | runs | diverged | value | nested.twice |"
    body = {tuple(c.strip() for c in ln.strip("|").split("|")[:2]): ln for ln in lines[2:]}
    assert len(body) == 6  # 3 x values × 2 kinds; seeds aggregated
    seeds = [s**1.5 for s in range(3)]
    for x in (1, 2):
        vals = [x**2 + s for s in seeds]
        cell = f"{statistics.mean(vals):.4g} ± {t_halfwidth(vals):.2g}"
        assert f"| 3 | 0 | {cell} |" in body[(str(x), "a")]
    assert "| 3 | 3 | – | – |" in body[("11", "b")]  # all diverged: no value, counted


def test_partial_values_show_k_of_n_and_missing_runs_are_counted(probe_sweep):
    out, points = probe_sweep
    import shutil

    victim = next(p for p in points if p.config.x == 1 and p.config.kind == "a" and p.config.seed == 2)
    shutil.rmtree(out / victim.run_id)  # a run not done yet
    sw = A.collect(out)
    assert (sw.planned, len(sw.runs), sw.missing) == (18, 17, 1)
    assert "17 finished of 18 planned runs; 1 not run yet" in A.describe(sw)
    row = next(r for r in A.summary_table(sw).rows if r[:2] == ["1", "a"])
    assert row[2] == "2"
    # a summary with a None value for one seed → (k/n)
    s = json.loads((out / points[0].run_id / "summary.json").read_text())
    assert points[0].config.x == 1 and points[0].config.kind == "a"
    s["value"] = None
    (out / points[0].run_id / "summary.json").write_text(json.dumps(s))
    row = next(r for r in A.summary_table(A.collect(out)).rows if r[:2] == ["1", "a"])
    assert row[2] == "2" and row[4] == f"{1**2 + 1**1.5:.4g} (1/2)"  # only seed 1 has a value: no interval


def test_report_without_manifest_infers_the_axes(probe_sweep):
    out, _ = probe_sweep
    (out / "sweep.yaml").unlink()
    sw = A.collect(out)
    assert sw.axes == ["x", "kind", "seed"] and sw.group_axes == ["x", "kind"]
    assert len(A.groups(sw)) == 6


def test_figures_one_per_metric_and_learning_curves(probe_sweep):
    out, _ = probe_sweep
    figs = A.figures(A.collect(out))
    names = [n for n, _, _ in figs]
    assert names == ["final_value.png", "final_nested_twice.png", "curve_loss.png"]
    fig = figs[0][2]
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x"  # the numeric axis is the x axis, one line per kind
    assert len(ax.get_legend().get_texts()) == 2
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_xdata(), [1, 2, 11])
    seeds = [s**1.5 for s in range(3)]
    np.testing.assert_allclose(line.get_ydata()[:2], [statistics.mean([x**2 + s for s in seeds]) for x in (1, 2)])
    assert math.isnan(line.get_ydata()[2])  # diverged everywhere: no point


def test_paired_cells_give_interval_signs_and_seeds_needed():
    from mirrorflow.report.stats import paired_cells, paired_difference, seeds_needed

    a, b = [0.90, 0.92, 0.88, 0.91], [0.93, 0.92, 0.91, 0.95]
    d = paired_difference(a, b, effect=0.017)
    diffs = [y - x for x, y in zip(a, b)]
    half = stats.t.ppf(0.975, 3) * statistics.stdev(diffs) / 2
    assert d.mean == pytest.approx(statistics.mean(diffs)) and d.half_width == pytest.approx(half)
    cells = paired_cells(d, "+.1f", 100)
    assert cells == [
        f"{100 * d.mean:+.1f} [{100 * (d.mean - half):+.1f}, {100 * (d.mean + half):+.1f}]",
        "0/3",
        "4",
        str(seeds_needed(statistics.stdev(diffs), 0.017)),
    ]
    assert paired_cells(paired_difference([1.0], [2.0]))[0] == "+1.000 [n < 2]"
    assert paired_cells(paired_difference([1.0, 2.0], [1.5, 2.5]))[3] == "–"  # no effect size given

"""Phase diagrams: grids per schedule as batched programs on every experiment with a batched engine, cells
equal single runs, seeds and intervals, the automatic switch-off in the batch, the turned-off-wins mask,
winners and margins, resuming, the run store, heatmaps, ``report`` on a phase directory, device plumbing
and bad input (one line naming the key, nothing left behind)."""

import json
import math

import numpy as np
import pytest
import torch

from mirrorflow.app.phase import parse, parse_axis, run_phase, turn_off_wins, winners
from mirrorflow.app.phase.programs import PROGRAMS
from mirrorflow.cli import main
from mirrorflow.config import build, config_dict
from mirrorflow.engine.batched import run_batched, schedule_table
from mirrorflow.errors import ConfigError
from mirrorflow.experiments import diagonal as dn
from mirrorflow.experiments import matrix_sensing as ms
from mirrorflow.experiments import sparse_coding as sc
from mirrorflow.report.stats import t_interval
from mirrorflow.schedules import constant
from mirrorflow.store import read_csv

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["n=6", "r=1", "steps=300", "lr=0.2"]
GRID = ["x=wd:0.01:0.3:4:log", "y=init_scale:0.001:0.1:3:log", "metric=rec_error"]


@pytest.fixture(scope="module")
def phase_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("phase") / "run"
    return run_phase("matrix-sensing", GRID + SMALL, out)


@pytest.mark.slow
def test_phase_run_store_and_cells(phase_run):
    out, summary = phase_run
    names = {p.name for p in out.iterdir()}
    assert {
        "config.yaml",
        "cells.csv",
        "summary.json",
        "winner.png",
        "phase_rec_error.png",
        "phase_nuclear_norm.png",
        "phase_time_to_train_loss.png",
    } <= names
    rows = read_csv(out / "cells.csv")
    assert len(rows) == 3 * 12 and summary["cells_per_schedule"] == 12
    assert summary["rows"] == 12 + 12 + 3 and summary["groups"] == 1  # `none` once per init scale
    by = {(r["schedule"], float(r["wd"]), float(r["init_scale"])): r for r in rows}
    # a cell of the batched grid equals the same configuration run on its own
    cfg = build(
        ms.Config,
        {
            "n": 6,
            "r": 1,
            "steps": 300,
            "lr": 0.2,
            "log_every": 300,
            "schedule": "turn_off",
            "wd": 0.3,
            "init_scale": 0.1,
        },
    )
    alone = ms.summarize(cfg, ms.run_many([cfg])[0])
    cell = by[("turn_off", 0.3, 0.1)]
    assert float(cell["rec_error"]) == pytest.approx(alone["rec_error"], rel=1e-9)
    assert float(cell["nuclear_norm"]) == pytest.approx(alone["nuclear_norm"], rel=1e-9)
    # `none` ignores λ: one value per init scale along the wd axis
    for s in (0.001, 0.1):
        vals = {r["rec_error"] for k, r in by.items() if k[0] == "none" and k[2] == pytest.approx(s)}
        assert len(vals) == 1
    # the outlined cells are exactly where turn_off beats both (1 % margin)
    wins = 0
    for (sch, wd, a), r in by.items():
        if sch != "turn_off":
            continue
        t, c, n = (float(by[(s, wd, a)]["rec_error"]) for s in ("turn_off", "constant", "none"))
        expect = t < 0.99 * min(c, n)
        assert (r["turn_off_wins"] == "True") == expect
        wins += expect
    assert summary["turn_off_wins_fraction"] == pytest.approx(wins / 12)


def test_phase_rerun_finds_finished_grid(phase_run, capsys):
    out, summary = phase_run
    again_out, again = run_phase("matrix-sensing", GRID + SMALL, out)
    assert again == summary


def test_turn_off_wins_treats_nan_as_worst_and_applies_margin():
    v = lambda *a: np.array([a], dtype=float)  # noqa: E731
    grids = {
        "turn_off": {"m": v(1.0, 1.0, np.nan, 0.995)},
        "constant": {"m": v(2.0, np.nan, 1.0, 1.0)},
        "none": {"m": v(3.0, 0.5, 1.0, 1.0)},
    }
    assert turn_off_wins(grids, "m", 0.01).tolist() == [[True, False, False, False]]
    assert turn_off_wins(grids, "m", 0.0).tolist() == [[True, False, False, True]]
    assert turn_off_wins({"turn_off": grids["turn_off"]}, "m", 0.01) is None


def test_axis_parsing():
    keys = {"wd": float, "lr": float, "k": int}
    ax = parse_axis("x", "wd:1e-3:1:4:log", keys)
    assert ax.values == pytest.approx([1e-3, 1e-2, 1e-1, 1.0])
    assert parse_axis("y", "lr:0.1:0.3:3", keys).values == pytest.approx([0.1, 0.2, 0.3])
    assert parse_axis("y", "k:1:4:3", keys).values.tolist() == [1.0, 2.0, 4.0]  # integer keys are rounded


@pytest.mark.parametrize(
    "tokens,match",
    [
        (["x=width:1:2:4", "y=init_scale:0.01:0.1:4"], r"^x: unknown axis key 'width'"),
        (["x=wd:1:0.1:4", "y=init_scale:0.01:0.1:4"], r"^x: range of wd must have LO < HI"),
        (["x=wd:0:1:4:log", "y=init_scale:0.01:0.1:4"], r"^x: a log range of wd needs LO > 0"),
        (["x=wd:0.1:1:4:cubic", "y=init_scale:0.01:0.1:4"], r"^x: spacing must be"),
        (["x=wd:0.1:1:1000", "y=init_scale:0.01:0.1:1000"], r"^y: too many cells"),
        (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:2.5"], r"^y: COUNT must be an integer"),
        (["x=wd:0.1:1:4"], r"^y: missing axis"),
        (["x=wd:0.1:1:4", "y=wd:0.01:0.1:4"], r"^y: both axes vary 'wd'"),
        (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "metric=accuracy"], r"^metric: unknown metric to compare by"),
        (
            ["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "metric=nuclear_norm"],
            r"^metric: unknown metric to compare by "
            r"\(lower is better\) 'nuclear_norm'",
        ),
        (["x=off:0.5:2:4", "y=init_scale:0.01:0.1:4"], r"^x: off is the switch point as a fraction of the run"),
        (["x=lr:0:1:4", "y=init_scale:0.01:0.1:4"], r"^x: lr must be > 0 over the whole axis, got LO=0"),
        (["x=off:0.1:0.9:4", "y=init_scale:0.01:0.1:4", "off=0.3"], r"^off: off is an axis; drop off=0.3"),
        (["x=off_at:0.1:0.9:4", "y=wd:0.01:0.1:4"], r"^x: the switch point.s axis is off \(a fraction of the run"),
        (["x=off:0.1:0.9:4", "y=wd:0.01:0.1:4", "auto=plateau:loss"], r"^auto: unknown signal 'loss'"),
        (["x=off:0.1:0.9:4", "y=wd:0.01:0.1:4", "auto=plateau:train_loss:-1"], r"^auto: tol must be"),
        (["x=off:0.1:0.9:4", "y=wd:0.01:0.1:4", "auto=sometimes"], r"^auto: expected plateau"),
        (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "seeds=1,1"], r"^seeds must list distinct integers"),
        (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "theory=4"], r"^theory: no prediction: .*commute"),
        (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "off=1000"], r"^off: the switch point is a fraction of the run"),
        (["x=off:0.1:0.9:4", "y=init_scale:0.01:0.1:4", "lr=0"], r"^lr: expected a finite number > 0, got 0"),
        (["x=off:0.1:0.9:4", "y=init_scale:0.01:0.1:4", "wd=-1"], r"^wd: expected a finite number ≥ 0, got -1"),
        (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "widht=3"], r"unknown config key 'widht'"),
        (["x=wd:0.1:1:4", "y=steps:0:10:3"], r"steps must be positive"),
        (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "device=tpu9"], r"^device must be one of .*'tpu9'"),
        (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "schedules=cosnt"], r"^schedules: unknown schedule 'cosnt'"),
        (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "schedules="], r"^schedules: give at least one"),
        (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "margin=2"], r"^margin must be in \[0, 1\)"),
    ],
)
def test_bad_input_names_the_key(tokens, match):
    with pytest.raises(ConfigError, match=match):
        parse("matrix-sensing", tokens, ms)


def test_cli_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "p"
    with pytest.raises(SystemExit) as e:
        main(["phase", "matrix-sensing", "x=width:1:2:4", "y=init_scale:0.01:0.1:4", "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: x: unknown axis key 'width'")
    assert not out.exists()


def test_device_plumbing_on_cpu():
    """device=cpu in the cells' config gives the same numbers as the default; cuda is refused where it is absent."""
    cfgs = [build(ms.Config, {"n": 5, "r": 1, "steps": 50, "wd": w, "schedule": "turn_off"}) for w in (0.01, 0.1)]
    a = ms.run_many(cfgs)
    b = ms.run_many([build(ms.Config, {**config_dict(c), "device": "cpu"}) for c in cfgs])
    for ra, rb in zip(a, b):
        assert np.array_equal(ra["metrics"]["rec_error"], rb["metrics"]["rec_error"])
    tokens = ["x=wd:0.1:1:2", "y=init_scale:0.01:0.1:2", "device=cuda"] + SMALL
    if torch.cuda.is_available():
        spec = parse("matrix-sensing", tokens, ms)
        assert spec.device == "cuda"
    else:
        with pytest.raises(ConfigError, match=r"^device=cuda: CUDA is not available on this machine"):
            parse("matrix-sensing", tokens, ms)


def test_heatmaps_hatch_winning_cells_and_log_axes():
    from matplotlib.collections import PatchCollection

    from mirrorflow.report.phase import phase_heatmaps, winner_map

    xs, ys = np.geomspace(1e-3, 1, 4), np.geomspace(1e-2, 1e-1, 3)
    vals = {s: np.full((3, 4), k + 1.0) for k, s in enumerate(("constant", "turn_off", "none"))}
    vals["turn_off"][1, 2] = 0.01
    vals["none"][0, 0] = np.nan
    wins = np.zeros((3, 4), dtype=bool)
    wins[1, 2] = True
    fig = phase_heatmaps(xs, ys, vals, "rec_error", "wd", "init_scale", True, True, wins, title="Q? lower is better")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["constant", "turn off", "none"]
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in panels)
    assert fig._suptitle.get_text() == "Q? lower is better"
    for ax in panels:  # the winning cell is hatched in the turn-off panel (white and black), no outline
        hatched = [c for c in ax.collections if isinstance(c, PatchCollection)]
        if ax.get_title() != "turn off":
            assert hatched == []
            continue
        assert [c.get_hatch() for c in hatched] == ["///", "\\\\\\"]
        assert len(hatched[0].get_paths()) == 1 and len(ax.lines) == 0
    hatched = [c for c in panels[1].collections if isinstance(c, PatchCollection)]
    rect = hatched[0].get_paths()[0].vertices  # half-way to the neighbours in log10
    assert sorted({round(math.log10(v), 6) for v in rect[:, 0]}) == pytest.approx([-1.5, -0.5], abs=1e-6)
    fig = winner_map(
        xs,
        ys,
        vals,
        "rec_error",
        "wd",
        "init_scale",
        True,
        True,
        wins,
        margin=np.full((3, 4), 0.5),
        clear=np.ones((3, 4), dtype=bool),
    )
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["constant", "turn off", "none", "turned off beats both"]
    assert fig.axes[1].get_title() == "winner's margin over the runner-up"


def test_cli_phase_one_schedule(tmp_path, capsys):
    """One schedule: heatmaps but no comparison (no winner map, no wins fraction)."""
    out = tmp_path / "p"
    main(
        [
            "phase",
            "matrix-sensing",
            "x=wd:0.01:0.1:2:log",
            "y=lr:0.1:0.2:2",
            "schedules=constant",
            "metrics=rec_error",
            "n=4",
            "r=1",
            "steps=40",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert "cells_per_schedule: 4" in text and f"run directory: {out}" in text
    assert sorted(p.name for p in out.iterdir()) == [
        "cells.csv",
        "config.yaml",
        "groups",
        "phase_rec_error.png",
        "summary.json",
    ]
    assert "turn_off_wins_fraction" not in text


# ------------------------------------------------------------------ diagonal networks, switch-time maps
DN = ["n_samples=6", "dim=12", "sparsity=2", "steps=200", "off_at=40", "model=mw", "converged_loss=1e-3"]
DN_GRID = ["x=off:0.1:0.9:3", "y=wd:0.1:1:2:log", "seeds=0,1", "auto=plateau:train_loss:0.1:5", "auto_every=10"]


@pytest.fixture(scope="module")
def dn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("phase") / "dn"
    return run_phase("diagonal", DN_GRID + DN, out)


def _dn_alone(seed: int, wd: float, steps_on: int, total: int = 200) -> dict:
    """One diagonal run alone: λ = ``wd`` for ``steps_on`` steps, then 0 (``steps_on = total``: λ all along)."""
    cfg = build(
        dn.Config,
        {
            "n_samples": 6,
            "dim": 12,
            "sparsity": 2,
            "model": "mw",
            "seed": seed,
            "weight_decays": str(wd),
            "steps": total,
            "off_at": min(steps_on, total - 1),
            "log_every": 10,
        },
    )
    if steps_on < total:
        trace, _ = dn.run_sweep(cfg)
    else:  # never switched off: a config's off_at is a step inside the run, so run the problem directly
        data = dn.make_data(cfg.n_samples, cfg.dim, cfg.sparsity, cfg.seed)
        problem = dn.DiagonalNetwork(data, cfg.model, 1, cfg.init_scale, device=cfg.device)
        lam = schedule_table([constant(wd)], total, device=problem.device)
        trace = run_batched(problem, lam, cfg.step_size, log_every=cfg.log_every)
    return {"dist": float(trace.final("dist")[0]), "train_loss": trace.metrics["train_loss"][0], "steps": trace.steps}


@pytest.mark.slow
def test_diagonal_switch_map_cells_are_single_runs_with_seed_intervals(dn_run):
    out, summary = dn_run
    assert summary["schedules"] == ["constant", "turn_off", "none", "auto"]  # auto by default on an off axis
    assert summary["groups"] == 2  # one batched program per seed (a seed draws the data)
    rows = read_csv(out / "cells.csv")
    assert len(rows) == 4 * 6
    cell = next(r for r in rows if r["schedule"] == "turn_off" and float(r["off"]) == 0.5 and float(r["wd"]) == 1.0)
    per_seed = [_dn_alone(s, 1.0, 100)["dist"] for s in (0, 1)]  # off = 0.5 of 200 steps: λ for 100 steps
    mean, half, _ = t_interval(per_seed)
    assert float(cell["dist"]) == pytest.approx(mean, rel=1e-9)
    assert float(cell["dist_half"]) == pytest.approx(half, rel=1e-9)


def _auto_fires_at(seed: int, wd: float) -> int | None:
    """Where AutoTurnOff (plateau of the train loss, tol 0.1, window 5), fed the train loss of a constant-λ
    run every 10 steps, sets λ = 0 (its ``off_from``)."""
    from mirrorflow.training.auto_off import AutoTurnOff

    const = _dn_alone(seed, wd, 200)
    auto = AutoTurnOff(wd, signal="train_loss", mode="plateau", tol=0.1, window=5)
    for step, loss in zip(const["steps"][1:], const["train_loss"][1:]):
        auto.observe(int(step) - 1, {"train_loss": float(loss)})  # measured after `step` updates
    return auto.off_from


def test_auto_switch_off_runs_in_the_batch_where_auto_turn_off_fires(dn_run):
    """The auto rows' switch step is where AutoTurnOff fires on the same signal; their final distance equals
    a fixed turn-off at that step."""
    out, summary = dn_run
    fired = 0
    for wd in (0.1, 1.0):
        offs = [_auto_fires_at(s, wd) for s in (0, 1)]
        rows = [r for r in read_csv(out / "cells.csv") if r["schedule"] == "auto" and float(r["wd"]) == wd]
        assert len(rows) == 3  # one auto row per λ, the same in every off column
        if None in offs:
            continue
        fired += 1
        assert [float(r["auto_off"]) for r in rows] == pytest.approx([sum(offs) / 2 / 200] * 3)
        mean = np.mean([_dn_alone(s, wd, o)["dist"] for s, o in zip((0, 1), offs)])
        assert float(rows[0]["dist"]) == pytest.approx(mean, rel=1e-9)
        versus = next(v for v in summary["best_switch"] if v["wd"] == pytest.approx(wd))
        assert versus["auto_off"] == pytest.approx(sum(offs) / 2 / 200)
        fixed = {
            float(r["off"]): float(r["dist"])
            for r in read_csv(out / "cells.csv")
            if r["schedule"] == "turn_off" and float(r["wd"]) == wd
        }
        best = min(fixed, key=fixed.get)
        near = [o for o, v in fixed.items() if v <= 2 * fixed[best]]
        assert versus["best_off"] == best and versus["near_best"] == [min(near), max(near)]
    assert fired  # the signal plateaus within the run for at least one λ


def test_theory_marks_are_predict_limit_against_the_trained_point(dn_run):
    """Theorem 3.11 on the map: each checked turn_off cell's gap is ‖x_pred − x‖/‖x‖ with x_pred from
    geometry.predict_limit at the row's a_∞; unconverged runs are marked, not compared; constant is never
    checked (λ never off)."""
    from mirrorflow.experiments.diagonal import initial_params, reparameterization
    from mirrorflow.geometry import predict_limit

    out, summary = dn_run
    rows = read_csv(out / "cells.csv")
    assert {r["theory"] for r in rows if r["schedule"] == "constant"} == {""}
    checked = [r for r in rows if r["schedule"] == "turn_off" and r["theory"]]
    assert len(checked) == 6 and summary["theory"]["turn_off"] == {
        k: sum(r["theory"] == k for r in checked) for k in {r["theory"] for r in checked}
    }
    r = next(r for r in checked if r["theory"] in ("match", "mismatch"))
    wd, off = float(r["wd"]), float(r["off"])
    cfg = build(
        dn.Config,
        {
            "n_samples": 6,
            "dim": 12,
            "sparsity": 2,
            "model": "mw",
            "seed": 0,
            "weight_decays": str(wd),
            "steps": 200,
            "off_at": round(off * 200),
            "log_every": 200,
        },
    )
    trace, data = dn.run_sweep(cfg)
    x = dn.final_x(cfg, trace, data)[0]
    rep = reparameterization("mw", 12)
    pred = predict_limit(rep, initial_params(rep, "mw", 1.0), float(trace.final("a")[0]), data.Z, data.y)
    assert float(r["theory_gap"]) == pytest.approx(float((torch.as_tensor(pred) - x).norm() / x.norm()), rel=1e-6)
    assert (r["theory"] == "match") == (float(r["theory_gap"]) <= 0.05)
    for r in checked:
        if r["theory"] == "not converged":
            assert r["theory_gap"] in ("", "nan")


@pytest.mark.slow
def test_phase_resumes_from_finished_groups(dn_run, tmp_path):
    out, summary = dn_run
    import shutil

    copy = tmp_path / "dn"
    shutil.copytree(out, copy)
    (copy / "summary.json").unlink()  # killed before the end, one program finished
    groups = sorted((copy / "groups").glob("*.json"))
    groups[0].unlink()
    _, again = run_phase("diagonal", DN_GRID + DN, copy)
    assert again["groups_resumed"] == 1 and again["row_steps_per_second"] is None
    assert read_csv(copy / "cells.csv") == read_csv(out / "cells.csv")
    (copy / "summary.json").unlink()  # killed again, now with another auto rule: nothing is resumed
    other = [t for t in DN_GRID if not t.startswith("auto=")] + ["auto=plateau:train_loss:0.2:5"]
    _, third = run_phase("diagonal", other + DN, copy)
    assert third["groups_resumed"] == 0 and third["auto"] == "plateau:train_loss:0.2:5"


@pytest.mark.slow
def test_report_on_a_phase_directory(dn_run, tmp_path, capsys):
    out, summary = dn_run
    main(["report", str(out), "--out", str(tmp_path / "rep")])
    text = capsys.readouterr().out
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"index.html", "summary.md", "winner.png", "phase_dist.png", "phase_l1_l2.png"} <= names
    frac = 100 * summary["turn_off_wins_fraction"]
    assert f"in {frac:.1f} % of the cells" in text
    assert "Automatic switch-off (plateau:train_loss:0.1:5) against the best fixed switch" in text
    assert "runs.csv" not in names  # not the sweep report


def test_winners_margin_and_clarity():
    g = lambda m, h: {"m": np.array([m], dtype=float), "m_half": np.array([h], dtype=float)}  # noqa: E731
    grids = {
        "constant": g([1.0, 1.0, np.nan], [0.1, 0.1, np.nan]),
        "turn_off": g([0.5, 0.95, 2.0], [0.1, 0.1, 0.0]),
        "none": g([2.0, 3.0, np.nan], [0.0, 0.0, np.nan]),
    }
    win, margin, clear = winners(grids, "m", 0.01)
    assert win.tolist() == [[1, 1, 1]]
    assert margin[0, :2] == pytest.approx([0.5, 0.05])
    assert margin[0, 2] == np.inf  # no finite runner-up
    assert clear.tolist() == [[True, False, True]]  # 0.95 ± 0.1 overlaps 1.0 ± 0.1


@pytest.mark.slow
def test_sparse_coding_phase_cell_equals_a_single_run(tmp_path):
    tokens = [
        "x=k:1:2:2",
        "y=wd:0.001:0.01:2:log",
        "schedules=constant,turn_off",
        "image_size=4",
        "n_images=20",
        "batch_size=10",
        "n_atoms=3",
        "iterations=4",
        "seeds=3",
    ]
    out, summary = run_phase("sparse-coding", tokens, tmp_path / "sc")
    assert summary["groups"] == 1 and summary["metric"] == "mse"
    cfg = build(
        sc.Config,
        {
            "image_size": 4,
            "n_images": 20,
            "batch_size": 10,
            "n_atoms": 3,
            "iterations": 4,
            "ks": "2",
            "alphas": "0.01",
            "seeds": "3",
        },
    )
    alone = float(sc.run_sweep(cfg).final("mse")[0])
    cell = next(
        r
        for r in read_csv(out / "cells.csv")
        if r["schedule"] == "constant" and float(r["k"]) == 2 and float(r["wd"]) == pytest.approx(0.01)
    )
    assert float(cell["mse"]) == pytest.approx(alone, rel=1e-9)
    # the axes and titles use sparse coding's own names: wd is its regularization strength α
    from mirrorflow.report.phase import title_of

    assert summary["labels"]["wd"] == "regularization strength α" and summary["symbols"]["wd"] == "α"
    assert "α 0.01" in title_of({**summary, "fixed": {"wd": 0.01}}, "q")


def test_every_batched_experiment_has_a_phase_program():
    assert set(PROGRAMS) == {"matrix-sensing", "diagonal", "sparse-coding"}
    with pytest.raises(ConfigError, match=r"^experiment 'lora' has no batched engine for phase diagrams"):
        parse("lora", ["x=wd:0.1:1:2", "y=lr:0.1:1:2"], type("M", (), {"Config": ms.Config}))


def test_observe_hook_switches_rows_off_and_recomputes_a():
    from mirrorflow.engine.batched import run_batched
    from mirrorflow.experiments.diagonal import DiagonalNetwork, make_data

    data = make_data(6, 12, 2, 0)
    prob = DiagonalNetwork(data, "mw", 2, [1.0, 0.5])
    lam = torch.full((2, 30), 0.2, dtype=torch.float64)
    seen = []

    def observe(t, metrics):
        seen.append(t)
        return {1: t} if t == 10 else None

    tr = run_batched(prob, lam, 0.05, log_every=10, observe=observe)
    assert seen == [10, 20, 30]
    assert tr.final("a").tolist() == pytest.approx([-0.05 * 0.2 * 30, -0.05 * 0.2 * 10])
    assert (lam == 0.2).all()  # the caller's table is left alone


@pytest.mark.slow
def test_facets_one_phase_per_value_and_their_report(tmp_path, capsys):
    out = tmp_path / "fac"
    tokens = [
        "x=wd:0.01:0.3:2:log",
        "y=init_scale:0.001:0.1:2:log",
        "facet=lr:0.1,0.3",
        "metrics=rec_error",
        "n=5",
        "r=1",
        "steps=60",
    ]
    main(["phase", "matrix-sensing", *tokens, "--out", str(out), "--dry-run"])
    assert capsys.readouterr().out.splitlines()[0].startswith("lr=0.1: experiment=matrix-sensing x=wd:0.01:0.3:2:log")
    assert not out.exists()
    _, summary = run_phase("matrix-sensing", tokens, out)
    assert summary["facet"] == "lr" and list(summary["facets"]) == ["lr=0.1", "lr=0.3"]
    for name, lr in (("lr=0.1", 0.1), ("lr=0.3", 0.3)):
        sub = json.loads((out / name / "summary.json").read_text())
        assert sub["fixed"]["lr"] == lr  # each facet is a complete phase run with lr fixed
        assert summary["facets"][name]["turn_off_wins_fraction"] == sub["turn_off_wins_fraction"]
    alone = ms.summarize(
        *(lambda c: (c, ms.run_many([c])[0]))(
            build(
                ms.Config,
                {
                    "n": 5,
                    "r": 1,
                    "steps": 60,
                    "lr": 0.3,
                    "log_every": 60,
                    "schedule": "turn_off",
                    "wd": 0.3,
                    "init_scale": 0.1,
                },
            )
        )
    )
    cell = next(
        r
        for r in read_csv(out / "lr=0.3" / "cells.csv")
        if r["schedule"] == "turn_off" and float(r["wd"]) == 0.3 and float(r["init_scale"]) == 0.1
    )
    assert float(cell["rec_error"]) == pytest.approx(alone["rec_error"], rel=1e-9)
    assert (out / "winner_facets.png").is_file()
    main(["report", str(out), "--out", str(tmp_path / "rep")])
    assert "| lr=0.3 |" in capsys.readouterr().out
    assert (tmp_path / "rep" / "lr=0.1" / "winner.png").is_file() and (tmp_path / "rep" / "index.html").is_file()
    with pytest.raises(ConfigError, match=r"^facet: wd is already the x axis"):
        run_phase("matrix-sensing", ["x=wd:0.01:0.3:2", "y=init_scale:0.001:0.1:2", "facet=wd:1,2"], out)
    with pytest.raises(ConfigError, match=r"^facet: expected KEY:V1,V2"):
        run_phase("matrix-sensing", ["x=wd:0.01:0.3:2", "y=init_scale:0.001:0.1:2", "facet=lr"], out)

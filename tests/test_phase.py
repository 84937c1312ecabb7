"""Phase diagrams: grids per schedule as batched programs, cells equal single runs, the turned-off-wins mask,
the run store, heatmaps, device plumbing and bad input (one line naming the key, nothing left behind)."""
import math

import numpy as np
import pytest
import torch

from mirrorflow.cli import main
from mirrorflow.config import build, config_dict
from mirrorflow.errors import ConfigError
from mirrorflow.experiments import matrix_sensing as ms
from mirrorflow.experiments.phase import parse, parse_axis, run_phase, turn_off_wins
from mirrorflow.store import read_csv

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["n=6", "r=1", "steps=300", "lr=0.2"]
GRID = ["x=wd:0.01:0.3:4:log", "y=init_scale:0.001:0.1:3:log", "metric=rec_error"]


@pytest.fixture(scope="module")
def phase_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("phase") / "run"
    return run_phase("matrix-sensing", GRID + SMALL, out)


def test_phase_run_store_and_cells(phase_run):
    out, summary = phase_run
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "cells.csv", "summary.json", "winner.png", "phase_rec_error.png",
            "phase_nuclear_norm.png", "phase_time_to_train_loss.png"} <= names
    rows = read_csv(out / "cells.csv")
    assert len(rows) == 3 * 12 and summary["cells_per_schedule"] == 12
    assert set(summary["seconds"]) == {"constant", "turn_off", "none"}
    by = {(r["schedule"], float(r["wd"]), float(r["init_scale"])): r for r in rows}
    # a cell of the batched grid equals the same configuration run on its own
    cfg = build(ms.Config, {"n": 6, "r": 1, "steps": 300, "lr": 0.2, "log_every": 300, "schedule": "turn_off",
                            "wd": 0.3, "init_scale": 0.1})
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
    grids = {"turn_off": {"m": v(1.0, 1.0, np.nan, 0.995)},
             "constant": {"m": v(2.0, np.nan, 1.0, 1.0)},
             "none": {"m": v(3.0, 0.5, 1.0, 1.0)}}
    assert turn_off_wins(grids, "m", 0.01).tolist() == [[True, False, False, False]]
    assert turn_off_wins(grids, "m", 0.0).tolist() == [[True, False, False, True]]
    assert turn_off_wins({"turn_off": grids["turn_off"]}, "m", 0.01) is None


def test_axis_parsing():
    ax = parse_axis("x", "wd:1e-3:1:4:log", ms.Config)
    assert ax.values == pytest.approx([1e-3, 1e-2, 1e-1, 1.0])
    assert parse_axis("y", "lr:0.1:0.3:3", ms.Config).values == pytest.approx([0.1, 0.2, 0.3])


@pytest.mark.parametrize("tokens,match", [
    (["x=width:1:2:4", "y=init_scale:0.01:0.1:4"], r"^x: unknown axis key 'width'"),
    (["x=wd:1:0.1:4", "y=init_scale:0.01:0.1:4"], r"^x: range of wd must have LO < HI"),
    (["x=wd:0:1:4:log", "y=init_scale:0.01:0.1:4"], r"^x: a log range of wd needs LO > 0"),
    (["x=wd:0.1:1:4:cubic", "y=init_scale:0.01:0.1:4"], r"^x: spacing must be"),
    (["x=wd:0.1:1:1000", "y=init_scale:0.01:0.1:1000"], r"^y: too many cells"),
    (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:2.5"], r"^y: COUNT must be an integer"),
    (["x=wd:0.1:1:4"], r"^y: missing axis"),
    (["x=wd:0.1:1:4", "y=wd:0.01:0.1:4"], r"^y: both axes vary 'wd'"),
    (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "metric=accuracy"], r"^metric: unknown metric 'accuracy'"),
    (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "widht=3"], r"unknown config key 'widht'"),
    (["x=wd:0.1:1:4", "y=steps:0:10:3"], r"steps must be positive"),
    (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "device=tpu9"], r"^device: unknown device 'tpu9'"),
    (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "schedules=cosnt"], r"^schedules: unknown schedule 'cosnt'"),
    (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "schedules="], r"^schedules: give at least one"),
    (["x=wd:0.1:1:4", "y=init_scale:0.01:0.1:4", "margin=2"], r"^margin must be in \[0, 1\)"),
])
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
        with pytest.raises(ConfigError, match=r"^device: 'cuda' was asked for but CUDA is not available"):
            parse("matrix-sensing", tokens, ms)


def test_heatmaps_outline_and_log_axes():
    from mirrorflow.report.phase import phase_heatmaps, winner_map

    xs, ys = np.geomspace(1e-3, 1, 4), np.geomspace(1e-2, 1e-1, 3)
    vals = {s: np.full((3, 4), k + 1.0) for k, s in enumerate(("constant", "turn_off", "none"))}
    vals["turn_off"][1, 2] = 0.01
    vals["none"][0, 0] = np.nan
    wins = np.zeros((3, 4), dtype=bool)
    wins[1, 2] = True
    fig = phase_heatmaps(xs, ys, vals, "rec_error", "wd", "init_scale", True, True, wins)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["constant", "turn off", "none"]
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in panels)
    assert all(len(ax.lines) == 4 for ax in panels)  # one outlined cell: four edges
    x_edges = sorted({round(math.log10(v), 6) for ln in panels[1].lines for v in ln.get_xdata()})
    assert x_edges == pytest.approx([-1.5, -0.5], abs=1e-6)  # half-way to the neighbours in log10
    fig = winner_map(xs, ys, vals, "rec_error", "wd", "init_scale", True, True, wins)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["constant", "turn off", "none", "turned off beats both"]


def test_cli_phase_one_schedule(tmp_path, capsys):
    """One schedule: heatmaps but no comparison (no winner map, no wins fraction)."""
    out = tmp_path / "p"
    main(["phase", "matrix-sensing", "x=wd:0.01:0.1:2:log", "y=lr:0.1:0.2:2", "schedules=constant",
          "metrics=rec_error", "n=4", "r=1", "steps=40", "--out", str(out)])
    text = capsys.readouterr().out
    assert "cells_per_schedule: 4" in text and f"run directory: {out}" in text
    assert sorted(p.name for p in out.iterdir()) == ["cells.csv", "config.yaml", "phase_rec_error.png",
                                                      "summary.json"]
    assert "turn_off_wins_fraction" not in text

"""Grid specs: YAML and CLI axes × seeds → resolved configs with deterministic run ids; bad specs → one line."""

import dataclasses
import itertools

import pytest

from mirrorflow.config import build, config_dict
from mirrorflow.engine import grid as G
from mirrorflow.errors import ConfigError
from mirrorflow.experiments import load
from mirrorflow.experiments import matrix_sensing as M
from mirrorflow.store import run_id

TINY = ["n=8", "r=2", "steps=200"]


@dataclasses.dataclass(frozen=True)
class ListConfig:
    """A config with a tuple-typed field, like diagonal's ``weight_decays``."""

    weight_decays: tuple[float, ...] = (0.0, 0.1)
    lr: float = 0.1
    seed: int = 0
    name: str | None = None

    def validate(self):
        pass


def test_cli_axes_times_seeds_expand_to_the_product_with_the_run_ids_of_mirrorflow_run():
    grid, points = G.resolve(
        "matrix-sensing",
        load("matrix-sensing"),
        None,
        [*TINY, "wd=0,0.01,0.1", "schedule=constant,turn_off", "seeds=3"],
    )
    assert grid.axes == ["wd", "schedule", "seed"]
    assert len(points) == 3 * 2 * 3
    got = {(p.params["wd"], p.params["schedule"], p.params["seed"]) for p in points}
    assert got == set(itertools.product([0.0, 0.01, 0.1], ["constant", "turn_off"], range(3)))
    for p in points:
        assert p.config.n == 8 and p.config.r == 2 and p.config.steps == 200
        expected = build(
            M.Config,
            {
                "n": 8,
                "r": 2,
                "steps": 200,
                "wd": p.params["wd"],
                "schedule": p.params["schedule"],
                "seed": p.params["seed"],
            },
        )
        assert p.config == expected
        # the same id `mirrorflow run` gives this configuration (cli.run: experiment + resolved config)
        assert p.run_id == run_id({"experiment": "matrix-sensing", **config_dict(expected)}, prefix="matrix-sensing")
    assert len({p.run_id for p in points}) == len(points)


def test_ids_are_deterministic_and_depend_on_the_resolved_config_only():
    a = [p.run_id for p in G.resolve("matrix-sensing", load("matrix-sensing"), None, [*TINY, "wd=0,0.1", "seeds=2"])[1]]
    b = [
        p.run_id
        for p in G.resolve(
            "matrix-sensing", load("matrix-sensing"), None, ["steps=200", "r=2", "wd=0.0,1e-1", "n=8", "seeds=2"]
        )[1]
    ]
    assert a == b  # token order and number spelling do not matter (ids across processes: test_sweep_resume)
    d = [
        p.run_id
        for p in G.resolve("matrix-sensing", load("matrix-sensing"), None, [*TINY, "wd=0,0.1", "seeds=2", "lr=0.2"])[1]
    ]
    assert not set(d) & set(a)
    # duplicates after resolution are one run
    dup = G.resolve("matrix-sensing", load("matrix-sensing"), None, [*TINY, "wd=0.1,0.10,1e-1"])[1]
    assert len(dup) == 1


def test_yaml_spec_base_grid_union_and_cli_override(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "experiment: matrix-sensing\n"
        "seeds: 2\n"
        "base: {n: 8, r: 2, steps: 200}\n"
        "grid:\n"
        "  - {schedule: [constant], wd: [0.01, 0.1]}\n"
        "  - {schedule: [turn_off], wd: [0.2], off_at: [0.1, 0.5]}\n"
    )
    grid, points = G.resolve("matrix-sensing", load("matrix-sensing"), spec)
    assert len(points) == (2 + 2) * 2
    assert set(grid.axes) == {"schedule", "wd", "off_at", "seed"}
    turned = [p for p in points if p.config.schedule == "turn_off"]
    assert {(p.config.wd, p.config.off_at) for p in turned} == {(0.2, 0.1), (0.2, 0.5)}
    assert all(p.config.off_at == 0.5 for p in points if p.config.schedule == "constant")  # default kept
    # a spec with the old key name `off` (and `off=` on the command line) is the same sweep
    old = tmp_path / "old.yaml"
    old.write_text(spec.read_text().replace("off_at:", "off:"))
    assert [p.run_id for p in G.resolve("matrix-sensing", load("matrix-sensing"), old)[1]] == [p.run_id for p in points]
    cli = G.resolve("matrix-sensing", load("matrix-sensing"), None, [*TINY, "schedule=turn_off", "off=0.1,0.5"])[1]
    assert sorted(p.config.off_at for p in cli) == [0.1, 0.5]
    # CLI replaces the YAML's entry for a key, and its seeds
    _, points2 = G.resolve("matrix-sensing", load("matrix-sensing"), spec, ["wd=0.3", "seeds=1", "n=6"])
    assert {p.config.wd for p in points2} == {0.3}
    assert {p.config.n for p in points2} == {6}
    assert {p.config.seed for p in points2} == {0}
    assert len(points2) == 1 + 2


def test_seeds_are_a_list_or_a_range_and_the_count_form_says_its_range(tmp_path, capsys):
    """seeds= reads as in reproduce and phase (config.parse_seeds): 0,1,2 or 0..2 (or both); the older lone
    count seeds=3 still means seeds 0..2 — the same run ids — with a one-line note naming the range."""
    ms = load("matrix-sensing")

    def seeds(*tokens):
        return [p.config.seed for p in G.resolve("matrix-sensing", ms, None, [*TINY, *tokens])[1]]

    assert seeds("seeds=0..2") == seeds("seeds=0,1,2") == [0, 1, 2]
    assert capsys.readouterr().err == ""
    assert seeds("seeds=3") == [0, 1, 2]
    assert capsys.readouterr().err == "note: seeds=3 (a count) runs seeds 0..2; seeds=0..2 says the same\n"
    assert seeds("seeds=5,7..8") == [5, 7, 8]
    spec = tmp_path / "s.yaml"
    spec.write_text("seeds: [4, 1]\n")
    assert [p.config.seed for p in G.resolve("matrix-sensing", ms, spec, TINY)[1]] == [4, 1]
    spec.write_text("seeds: 1..2\n")
    assert [p.config.seed for p in G.resolve("matrix-sensing", ms, spec, TINY)[1]] == [1, 2]


def test_lists_versus_axes_for_tuple_fields():
    base, axes, seeds = G.parse_cli(["weight_decays=0,0.1,0.3", "lr=0.1,0.2"], ListConfig)
    assert base == {"weight_decays": ["0", "0.1", "0.3"]}  # unbracketed on a tuple field: ONE value
    assert axes == {"lr": ["0.1", "0.2"]} and seeds is None
    base, axes, _ = G.parse_cli(["weight_decays=[0,0.1],[0.3]", "name='a,b'"], ListConfig)
    assert axes == {"weight_decays": [["0", "0.1"], ["0.3"]]}  # bracketed values: an axis of tuples
    assert base == {"name": "a,b"}
    grid = G.Grid("x", base, [axes], seeds=(0, 1))
    pts = G.expand(grid, ListConfig)
    assert [p.config.weight_decays for p in pts] == [(0.0, 0.1), (0.0, 0.1), (0.3,), (0.3,)]
    assert [p.config.seed for p in pts] == [0, 1, 0, 1]
    assert pts[0].params == {"weight_decays": [0.0, 0.1], "seed": 0}
    with pytest.raises(ConfigError, match="lr: is not a list-valued field"):
        G.parse_cli(["lr=[0.1,0.2]"], ListConfig)
    with pytest.raises(ConfigError, match="bracket every value"):
        G.parse_cli(["weight_decays=[0,0.1],0.3"], ListConfig)


def test_yaml_tuple_axis_needs_a_list_of_lists(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("base: {weight_decays: [0.0, 0.5]}\ngrid: {lr: [0.1, 0.2]}\n")
    g = G.load_yaml(spec, "x", ListConfig)
    assert [p.config.weight_decays for p in G.expand(g, ListConfig)] == [(0.0, 0.5), (0.0, 0.5)]
    spec.write_text("grid: {weight_decays: [0.0, 0.5]}\n")
    with pytest.raises(ConfigError, match="list of lists"):
        G.load_yaml(spec, "x", ListConfig)


@pytest.mark.parametrize(
    "text, tokens, message",
    [
        ("grid: {wd: 0.1}\n", [], "grid.wd must be a list of values"),
        ("grid: {wd: []}\n", [], "grid.wd is an empty list"),
        ("grid: {wdd: [0.1]}\n", [], "unknown config key 'wdd'"),
        ("base: {n: 8}\nsweep: {}\n", [], "unknown section 'sweep'"),
        ("experiment: diagonal\n", [], "is for experiment 'diagonal'"),
        ("grid: {wd: [0.1\n", [], "invalid YAML"),
        ("seeds: 0\n", [], "seeds=0 is a count of seeds and must be 1..100000"),
        ("seeds: [0, 0]\n", [], "seeds must list distinct integers"),
        ("base: {n: 8}\n", ["seeds=2..1"], "seeds must be integers or ranges A..B"),
        ("base: {n: 8}\n", ["r=2,20"], "grid point {r=20}: r must be in 1..n=8"),
        ("base: {n: 8}\n", ["seeds=2", "seed=1"], "either seeds=... or seed"),
        ("base: {n: 8}\n", ["wd"], "expected key=value"),
        ("base: {n: 8}\n", ["wd=0.1,"], "empty value"),
    ],
)
def test_bad_specs_raise_one_config_error_naming_the_problem(tmp_path, text, tokens, message):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("{", r"\{").replace(".", r"\.")):
        G.resolve("matrix-sensing", load("matrix-sensing"), spec, tokens)


def mf(capsys, *args):
    """``mirrorflow ARGS`` through the real entry point, in this process: (exit code, stdout, stderr)."""
    from mirrorflow.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_bad_spec_is_one_line_and_exit_2(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("grid: {wd: [0.1, oops]}\n")
    for args in (
        ["sweep", "matrix-sensing", spec, "--out", tmp_path / "o"],
        ["sweep", "matrix-sensing", tmp_path / "missing.yaml", "--out", tmp_path / "o"],
        ["sweep", "matrix-sensing", spec, spec, "--out", tmp_path / "o"],
        ["sweep", "no-such-experiment", "wd=0.1"],
        ["sweep", "matrix-sensing", "n=8", "--backend", "spark", "--out", tmp_path / "o"],
        ["sweep", "matrix-sensing", "n=8", "--address", "localhost:1", "--out", tmp_path / "o"],
        ["report", tmp_path / "nothing-here"],
    ):
        code, out, err = mf(capsys, *args)
        assert code == 2, (args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "wd: expected a number, got 'oops'" in mf(capsys, "sweep", "matrix-sensing", spec)[2]
    assert not (tmp_path / "o").exists()  # nothing written for a bad spec


def test_dry_run_lists_the_runs(tmp_path, capsys):
    code, out, err = mf(
        capsys, "sweep", "matrix-sensing", *TINY, "wd=0,0.1", "seeds=2", "--out", tmp_path / "o", "--dry-run"
    )
    assert code == 0, err
    ids = [ln.split()[0] for ln in out.splitlines() if ln.startswith("matrix-sensing-")]
    assert ids == [
        q.run_id for q in G.resolve("matrix-sensing", load("matrix-sensing"), None, [*TINY, "wd=0,0.1", "seeds=2"])[1]
    ]
    assert not (tmp_path / "o").exists()


def test_load_checks_the_experiment_protocol(plugin_experiment):
    """experiments.load checks a module against engine/protocol.py's Experiment by type: a module without
    ``run`` is refused, naming what it lacks."""
    name = plugin_experiment(
        "no-run-probe",
        "from dataclasses import dataclass\n\n\n@dataclass(frozen=True)\nclass Config:\n    x: int = 0\n",
    )
    with pytest.raises(TypeError, match="no_run_probe is not an Experiment .* it lacks run$"):
        load(name)

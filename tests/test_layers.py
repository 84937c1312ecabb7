"""The package's layering is enforced by import-linter (.importlinter): imports point downward only, no cycles,
and every top-level module of the package has its layer."""

import configparser
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True))"
)


def lint(config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", RUN, str(config)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_contracts_are_kept():
    res = lint(ROOT / ".importlinter")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "5 kept, 0 broken" in res.stdout


def layers() -> list[set[str]]:
    """The layers contract of .importlinter, top to bottom, each layer a set of module names."""
    ini = configparser.ConfigParser()
    ini.read(ROOT / ".importlinter")
    rows = [r.strip() for r in ini["importlinter:contract:layers"]["layers"].splitlines() if r.strip()]
    return [{m.strip() for m in r.split("|")} for r in rows]


def test_every_top_level_module_has_a_layer():
    """A new module (or package) directly under mirrorflow/ must be placed in the layers contract, so that
    import-linter checks its imports too."""
    pkg = ROOT / "src" / "mirrorflow"
    modules = {
        f"mirrorflow.{p.stem}"
        for p in pkg.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())
    }
    named = set().union(*layers())
    assert modules - named == set()
    assert named - modules == set()
    order = [next(iter(layer)) for layer in layers()]
    assert order.index("mirrorflow.cli") < order.index("mirrorflow.app") < order.index("mirrorflow.experiments")
    assert "mirrorflow.runtime" in layers()[-2]  # the bottom group, with store, config and data


def lint_edited(tmp_path, old: str, new: str) -> subprocess.CompletedProcess:
    """import-linter on .importlinter with ``old`` replaced by ``new`` (which must occur)."""
    text = (ROOT / ".importlinter").read_text()
    assert old in text
    cfg = tmp_path / "contracts.ini"
    cfg.write_text(text.replace(old, new))
    return lint(cfg)


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    """The same check fails when a real import points upward: training imports schedules, so a contract
    that puts schedules above training is broken."""
    res = lint_edited(
        tmp_path,
        "    mirrorflow.training | mirrorflow.models\n    mirrorflow.geometry\n    mirrorflow.schedules\n",
        "    mirrorflow.schedules\n    mirrorflow.training | mirrorflow.models\n    mirrorflow.geometry\n",
    )
    assert res.returncode != 0
    assert "mirrorflow.training" in res.stdout and "BROKEN" in res.stdout


def test_a_direct_import_of_the_forbidden_package_breaks_the_cli_contract(tmp_path):
    """The cli-through-app contract is a real check: cli imports mirrorflow.app directly, so the same contract
    naming app as forbidden is broken (cli → experiments would be, the same way)."""
    res = lint_edited(
        tmp_path, "forbidden_modules =\n    mirrorflow.experiments\n", "forbidden_modules =\n    mirrorflow.app\n"
    )
    assert res.returncode != 0
    assert "mirrorflow.cli -> mirrorflow.app" in res.stdout and "BROKEN" in res.stdout


def test_every_experiment_is_in_the_independence_contract():
    from mirrorflow.experiments import EXPERIMENTS

    ini = configparser.ConfigParser()
    ini.read(ROOT / ".importlinter")
    named = {m.strip() for m in ini["importlinter:contract:experiments-independent"]["modules"].split()}
    assert named == set(EXPERIMENTS.values())


def test_the_kit_below_lora_and_attention_is_a_real_check(tmp_path):
    """lora and attention import transformer_kit, so a contract that puts the kit above them is broken."""
    res = lint_edited(
        tmp_path, "    lora | attention\n    transformer_kit\n", "    transformer_kit\n    lora | attention\n"
    )
    assert res.returncode != 0 and "mirrorflow.experiments.lora" in res.stdout


def test_no_module_imports_its_own_package():
    """A submodule imports its siblings, never its package's __init__ (which re-exports the submodules: an
    init ↔ submodule loop)."""
    import grimp

    graph = grimp.build_graph("mirrorflow")
    loops = [
        m for m in graph.modules if "." in m and graph.direct_import_exists(importer=m, imported=m.rsplit(".", 1)[0])
    ]
    assert loops == []
    assert "mirrorflow.experiments.lora.run" in graph.modules  # the graph holds the subpackages' modules

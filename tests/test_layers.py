"""The package's layering is enforced by import-linter (.importlinter): imports point downward only, no cycles."""

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
    assert "2 kept, 0 broken" in res.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    """The same check fails when a real import points upward: training imports schedules, so a contract
    that puts schedules above training is broken."""
    text = (ROOT / ".importlinter").read_text()
    swapped = text.replace(
        "    mirrorflow.training | mirrorflow.models\n    mirrorflow.geometry\n    mirrorflow.schedules\n",
        "    mirrorflow.schedules\n    mirrorflow.training | mirrorflow.models\n    mirrorflow.geometry\n",
    )
    assert swapped != text
    cfg = tmp_path / "contracts.ini"
    cfg.write_text(swapped)
    res = lint(cfg)
    assert res.returncode != 0
    assert "mirrorflow.training" in res.stdout and "BROKEN" in res.stdout

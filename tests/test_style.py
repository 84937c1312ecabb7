"""The code is formatted and linted by ruff (its settings: ``[tool.ruff]`` in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ["src", "tests", "scripts", "benchmarks"]


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint_is_clean():
    res = ruff("check", "--no-cache", *TREES)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_format_is_clean():
    res = ruff("format", "--no-cache", "--check", *TREES)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_finds_a_real_problem(tmp_path):
    """The same check fails on code with an unused import and a long line."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\nX = '" + "x" * 130 + "'\n")
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1
    assert "F401" in res.stdout and "E501" in res.stdout

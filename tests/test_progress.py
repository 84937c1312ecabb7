"""Progress bars go to stderr and only to a terminal; stdout carries the results alone."""

import io
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from mirrorflow.engine.progress import SweepProgress, progress_or_bar

ROOT = Path(__file__).resolve().parents[1]
BAR = "━"


def _read_all(fd: int) -> str:
    """Everything written to the pty so far (a single read may return only part of it)."""
    chunks = []
    while select.select([fd], [], [], 0.5)[0]:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def _drive(total=20):
    with progress_or_bar(None, total, "steps") as advance:
        for _ in range(total):
            advance(1)


def test_bar_is_drawn_on_a_terminal_stderr_and_not_on_stdout(monkeypatch):
    master, slave = pty.openpty()
    term = os.fdopen(slave, "w")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(sys, "stdout", out)
    try:
        _drive()
        with SweepProgress("runs", "OUT", print) as sp:  # the sweep's count line is a result: stdout
            adv = sp(3, 1, 2)
            adv(2)
        term.flush()
        drawn = _read_all(master)
    finally:
        term.close()
        os.close(master)
    assert BAR in drawn and "20/20" in drawn and "2/2" in drawn
    assert out.getvalue() == "3 runs in OUT: 1 finished before, 2 to run\n"


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch):
    err, out = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    _drive()
    assert err.getvalue() == "" and out.getvalue() == ""


@pytest.mark.slow
def test_piped_command_output_holds_the_results_only(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "mirrorflow",
            "reproduce",
            "matrix-sensing",
            "n=6",
            "r=1",
            "steps=40",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert BAR not in p.stdout and BAR not in p.stderr and "40/" not in p.stderr
    assert "| No weight decay |" in p.stdout and p.stdout.rstrip().endswith(f"run directory: {tmp_path / 'o'}")

"""Every ```python block of the README and of the docs listed in DOCS runs as written, and what it prints
matches the ```output block that follows it (if any). ```bash blocks made only of `mirrorflow ...`
commands run too (through ``python -m mirrorflow``), with the doc's ```yaml block saved as spec.yaml.

A block runs in a fresh namespace (python) or process (bash), in an empty temporary directory. A block
that must not run carries its reason in the fence line: ```python no-run: <reason> (the harness refuses a
bare no-run). ```output blocks are compared line by line after stripping trailing spaces."""
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/training-tools.md", "docs/sweeps.md", "docs/geometry.md", "docs/tracker-and-phase.md"]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)


def blocks(path: str) -> list[tuple[str, str, str | None, int]]:
    """(info string, code, expected output or None, line) of each python block of a markdown file."""
    text = (ROOT / path).read_text()
    found = [(m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1, m.end()) for m in FENCE.finditer(text)]
    out = []
    for i, (info, code, line, end) in enumerate(found):
        if not (info.startswith("python") or (info.startswith("bash") and _cli_only(code))):
            continue
        expected = None
        if i + 1 < len(found) and found[i + 1][0] == "output" and not text[end : text.index("```output", end)].strip():
            expected = found[i + 1][1]
        out.append((info, code, expected, line))
    return out


def _cli_only(code: str) -> bool:
    lines = [ln for ln in code.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return bool(lines) and all(ln.startswith("mirrorflow ") for ln in lines)


def _spec(doc: str) -> str | None:
    found = [m.group(2) for m in FENCE.finditer((ROOT / doc).read_text()) if m.group(1).strip() == "yaml"]
    return found[0] if found else None


CASES = [(doc, info, code, expected, line) for doc in DOCS for info, code, expected, line in blocks(doc)]


@pytest.mark.parametrize("doc", [d for d in DOCS if _spec(d) is not None])
def test_yaml_sweep_spec_resolves(doc, tmp_path):
    """The doc's sweep spec (```yaml) resolves into valid configs: `mirrorflow sweep ... --dry-run`."""
    import yaml

    spec = _spec(doc)
    (tmp_path / "spec.yaml").write_text(spec)
    experiment = yaml.safe_load(spec)["experiment"]
    out = subprocess.run([sys.executable, "-m", "mirrorflow", "sweep", experiment, "spec.yaml", "--out", "d", "--dry-run"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "12 runs into d"  # (2 + 2) points × 3 seeds


def test_the_docs_have_python_blocks():
    assert {doc for doc, *_ in CASES} >= {"README.md", "docs/training-tools.md"}


@pytest.mark.parametrize("doc,info,code,expected,line", CASES, ids=[f"{c[0]}:{c[4]}" for c in CASES])
def test_doc_block_runs_and_prints_what_the_doc_shows(doc, info, code, expected, line, tmp_path, monkeypatch):
    if "no-run" in info:
        assert re.search(r"no-run:\s*\S", info), f"{doc}:{line}: a no-run block must say why (```python no-run: reason)"
        return
    monkeypatch.chdir(tmp_path)
    if info.startswith("bash"):
        if _spec(doc) is not None:
            (tmp_path / "spec.yaml").write_text(_spec(doc))
        for line in code.splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                out = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True)
                assert out.returncode == 0, f"{doc}:{line}: exit {out.returncode}\n{out.stderr[-3000:]}"
        return
    buf = io.StringIO()
    saved_env = dict(os.environ)  # a block may set WANDB_MODE & co. for itself
    try:
        with contextlib.redirect_stdout(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(compile(code, f"{doc}:{line}", "exec"), {"__name__": "__main__"})
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    if expected is not None:
        got = [ln.rstrip() for ln in buf.getvalue().rstrip("\n").split("\n")]
        assert got == [ln.rstrip() for ln in expected.rstrip("\n").split("\n")], f"{doc}:{line} prints something else"

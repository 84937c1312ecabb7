"""One static, self-contained HTML page for a sweep report: the summary table, every figure embedded as a
base64 PNG (``<img src="data:image/png;base64,...">``) and the data files (CSV, markdown) embedded as
download links (``data:`` URIs), so the single file works when it is sent alone. No scripts, no external
resources; the layout fits a 1200-pixel-wide window (wide tables scroll inside their box).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em;box-sizing:border-box}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.param{text-align:left;font-family:monospace}
.figs{display:flex;flex-wrap:wrap;gap:1.2em}
figure{margin:0;flex:1 1 480px;max-width:100%;min-width:0}figure img{width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.note{color:#555;font-size:.9em}.scroll{overflow-x:auto;max-width:100%}
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


def data_link(name: str, data: bytes) -> str:
    """A download link carrying the file itself (a ``data:`` URI)."""
    mime = {"csv": "text/csv", "md": "text/markdown"}.get(name.rsplit(".", 1)[-1], "application/octet-stream")
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f'<a download="{html.escape(name)}" href="{uri}">{html.escape(name)}</a>'


def render_page(
    title: str,
    description: str,
    table,
    figures: Sequence[tuple[str, bytes]],
    links: Sequence[tuple[str, bytes]] = (),
    failed: Mapping[str, str] | None = None,
) -> str:
    """The report page. ``table`` is an :class:`mirrorflow.report.aggregate.Table`; ``figures`` are
    ``(caption, png bytes)``; ``links`` are ``(file name, contents)`` of the data files, embedded."""
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
        items = " · ".join(data_link(n, d) for n, d in links)
        parts.append(f'<p class="note">Data (embedded in this page): {items}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

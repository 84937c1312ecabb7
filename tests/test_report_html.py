"""The report's single HTML page, opened in headless Chromium: it loads and every embedded figure decodes.

Needs Debian's chromium (``scripts/install-chromium.sh``)."""

import base64
import re
import shutil
import subprocess

import pytest

from mirrorflow.cli import main

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
    "--window-size=1200,900",
]

# Appended to a copy of the page: after `load`, write every image's decoded size into the DOM.
CHECKER = """<img id="broken-control" src="data:image/png;base64,iVBORw0KGgoAAAAA" alt="control">
<pre id="imgcheck">pending</pre><script>
window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll("img").forEach(function (im) {
    out.push((im.id || "fig") + ":" + (im.complete ? 1 : 0) + ":" + im.naturalWidth + "x" + im.naturalHeight);
  });
  out.push("width:" + document.documentElement.scrollWidth + ":" + window.innerWidth);
  document.getElementById("imgcheck").textContent = out.join(" ");
});
</script></body>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is missing: run scripts/install-chromium.sh (Debian's chromium package)")


def test_report_page_loads_in_headless_chromium_and_every_figure_renders(tmp_path, capsys):
    out = tmp_path / "sweep"
    axes = ["n=8", "r=2", "steps=200", "wd=0,0.1", "seeds=2"]
    try:
        main(["sweep", "matrix-sensing", *axes, "--out", str(out), "--workers", "1"])
    except SystemExit as e:
        assert e.code in (0, None)
    main(["report", str(out)])
    printed = capsys.readouterr().out
    page = out / "report" / "index.html"
    assert f"report: {page}" in printed and "| wd | runs | diverged |" in printed
    html = page.read_text()
    assert "<script" not in html and "http" not in html  # static, self-contained
    pngs = sorted((out / "report").glob("*.png"))
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == len(pngs) >= 4
    assert sorted(base64.b64decode(u) for u in uris) == sorted(p.read_bytes() for p in pngs)

    checked = tmp_path / "checked.html"
    checked.write_text(html.replace("</body>", CHECKER))
    dom = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", checked.as_uri()],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    m = re.search(r'<pre id="imgcheck">([^<]*)</pre>', dom)
    assert m, dom[-2000:]
    entries = [e.split(":") for e in m.group(1).split()]
    figs = [e for e in entries if e[0] == "fig"]
    assert len(figs) == len(pngs)
    for _, complete, size in figs:
        w, h = map(int, size.split("x"))
        assert complete == "1" and w > 100 and h > 100
    control = [e for e in entries if e[0] == "broken-control"]
    assert control and control[0][2] == "0x0"  # a PNG that does not decode is caught by this check
    # the page fits a 1200-pixel window: nothing sticks out sideways
    ((_, width, inner),) = [e for e in entries if e[0] == "width"]
    assert int(inner) == 1200 and int(width) <= int(inner), entries
    # the data files travel inside the page (it works when sent alone): no relative links
    assert 'href="data:text/csv;base64,' in html and not re.search(r'href="(?!data:)', html)
    # the table made it into the rendered page, one row per weight decay
    assert dom.count('<td class="param">') == 2 and "Sweep report: matrix-sensing" in dom

"""report.html in a real browser (headless Chromium, when installed): the verdict is on the first screen, every
image loads, the script runs without an error, and the tables sort and filter.

The page is opened as a copy with two scripts added, one before everything that records errors and one that,
once the page has loaded, measures it, clicks a header, types a filter and writes what it saw into the page as
JSON; Chromium's --dump-dom hands that page back."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from wattbench.report import write_report

DATA = Path(__file__).parent / "data" / "report"
RUNS = [DATA / name for name in ("fixture_h100.json", "cpu_run.json", "fixture_l4.json", "fixture_llm_h100.json",
                                 "fixture_llm_l4.json")]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((path for path in map(shutil.which, BROWSERS) if path), None)
#: A laptop's first screen.
WIDTH, HEIGHT = 1366, 768

pytestmark = pytest.mark.skipif(BROWSER is None, reason=f"no headless browser installed (looked for "
                                                        f"{', '.join(BROWSERS)})")

RECORD_ERRORS = """<script>window.wattbenchErrors = [];
window.addEventListener("error", function (e) { window.wattbenchErrors.push(String(e.message)); });</script>"""

MEASURE = """<script>window.addEventListener("load", function () {
  var out = {errors: window.wattbenchErrors, height: window.innerHeight};
  var verdict = document.getElementById("verdict");
  out.verdictTop = verdict.getBoundingClientRect().top;
  out.verdictFirstRowBottom = verdict.querySelector("tbody tr").getBoundingClientRect().bottom;
  out.images = Array.prototype.map.call(document.images, function (img) {
    return {alt: img.alt, loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth};
  });
  var table = document.getElementById("records-table");
  var column = Array.prototype.map.call(table.tHead.rows[0].cells, function (th) { return th.textContent; })
    .indexOf("median ms");
  table.tHead.rows[0].cells[column].click();
  out.sorted = Array.prototype.map.call(table.tBodies[0].rows, function (row) {
    return row.cells[column].textContent; });
  out.sortState = table.tHead.rows[0].cells[column].getAttribute("aria-sort");
  var filter = document.querySelector('input[data-table="records-table"]');
  filter.value = "gemm.infer bf16";
  filter.dispatchEvent(new Event("input"));
  out.shown = Array.prototype.filter.call(table.tBodies[0].rows, function (row) {
    return row.style.display !== "none"; }).map(function (row) { return row.textContent; });
  out.count = document.getElementById("records-table-count").textContent;
  var pre = document.createElement("pre");
  pre.id = "wattbench-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    """What the browser measured on the report of the fixtures (and the CPU run)."""
    folder = tmp_path_factory.mktemp("browser")
    assert write_report(RUNS, folder / "report", trace=DATA / "fixture_h100_trace.csv").out == folder / "report"
    page = (folder / "report" / "report.html").read_text()
    checked = folder / "checked.html"
    checked.write_text(page.replace("<head>", "<head>" + RECORD_ERRORS, 1).replace("</body>", MEASURE + "</body>"))
    done = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={folder / 'profile'}", f"--window-size={WIDTH},{HEIGHT}",
                           "--virtual-time-budget=10000", "--dump-dom", checked.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="wattbench-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the browser gave back no measurement (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1))), page


def test_the_verdict_is_on_the_first_screen(seen):
    measured, _ = seen
    screen = measured["height"]  # the window less the browser's own bars
    assert 600 <= screen <= HEIGHT
    assert 0 < measured["verdictTop"] < measured["verdictFirstRowBottom"] <= screen


def test_every_image_loads(seen):
    measured, page = seen
    assert len(measured["images"]) == page.count("<img ") > 0
    assert all(image["loaded"] and image["width"] > 400 for image in measured["images"]), measured["images"]


def test_the_script_runs_without_an_error(seen):
    measured, _ = seen
    assert measured["errors"] == []


def test_a_click_sorts_a_column_as_numbers_and_typing_filters_the_rows(seen):
    measured, _ = seen
    assert measured["sortState"] == "ascending"
    numbers = [float(cell) for cell in measured["sorted"] if cell != "-"]
    assert numbers == sorted(numbers) and len(numbers) > 10
    assert measured["shown"] and all("gemm.infer" in row and "bf16" in row for row in measured["shown"])
    assert measured["count"] == f"{len(measured['shown'])} of {len(measured['sorted'])} rows"

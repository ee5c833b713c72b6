"""report.html: one self-contained page (styles, script and every figure inside it), which works offline and can
be mailed. Its tables sort by a click on a header and the big ones filter as you type, with an inline script and
no network."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from wattbench.report.document import Report, Section

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:0 1.5em 2em;max-width:1500px;
 color:#1a1a1a;font-size:14px;line-height:1.4}
h1{font-size:22px;margin:14px 0 2px}h2{font-size:18px;margin:18px 0 6px}h3{font-size:15px;margin:0;display:inline}
p{margin:4px 0}ul{margin:4px 0;padding-left:20px}
.lead{color:#444;margin:0 0 8px}
.banner{background:#fff4c2;border:1px solid #e0c040;padding:6px 10px;margin:8px 0;border-radius:4px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
td,th{border:1px solid #d0d0d0;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef1f4;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
#verdict{border:2px solid #0072B2;border-radius:6px;padding:4px 14px 8px;background:#f7fbfe}
#verdict h2{margin-top:8px}
#verdict table td:first-child{font-weight:600}
#verdict-table td:not(:nth-last-child(2)){white-space:nowrap}
#verdict h3{display:block;margin:12px 0 4px}
.tied{color:#8a5a00}.clear{color:#006b3c}
figure{margin:10px 0 22px}figure img{max-width:100%;border:1px solid #ddd}
figcaption{color:#333;margin-top:4px}figcaption b{display:block}
details{border-top:1px solid #ddd;padding:6px 0}summary{cursor:pointer}
details>div{margin:6px 0 0 16px;overflow-x:auto}
.filter{margin:4px 0;padding:3px 6px;width:28em;font-size:13px}
.count{color:#555;margin-left:8px;font-size:12px}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}
.best{font-weight:700}
"""

#: Sorting (numbers as numbers, missing figures last) and filtering (every word must appear in the row).
SCRIPT = """
(function () {
  function number(cell) {
    var value = parseFloat(cell.textContent.replace(/^\\s*[+\\u00d7x]/, ""));
    return isNaN(value) ? null : value;
  }
  function sortBy(table, column, header) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = a.cells[column], y = b.cells[column], nx = number(x), ny = number(y), order;
      if (nx !== null && ny !== null) { order = nx - ny; }
      else if (nx !== null) { return -1; }
      else if (ny !== null) { return 1; }
      else { order = x.textContent.localeCompare(y.textContent); }
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.title = "click to sort";
      header.addEventListener("click", function () { sortBy(table, column, header); });
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("input.filter"), function (input) {
    var table = document.getElementById(input.getAttribute("data-table"));
    var count = document.getElementById(input.getAttribute("data-table") + "-count");
    input.addEventListener("input", function () {
      var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean), shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var text = row.textContent.toLowerCase();
        var keep = words.every(function (word) { return text.indexOf(word) >= 0; });
        row.style.display = keep ? "" : "none";
        shown += keep ? 1 : 0;
      });
      count.textContent = shown + " of " + table.tBodies[0].rows.length + " rows";
    });
  });
})();
"""


def _shade(fraction: float) -> str:
    """A cell's background: darker blue for a better value within its row (the palette's blue)."""
    return f' style="background:rgba(0,114,178,{0.08 + 0.5 * fraction:.2f})"'


def table_html(section: Section) -> str:
    table, anchor = section.table, f"{section.anchor}-table"
    classes = ' class="sortable"' if section.sortable else ""
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in table.columns)
    body = []
    for i, row in enumerate(table.itertuples(index=False)):
        cells = []
        for j, value in enumerate(row):
            shade = section.shades.iat[i, j] if section.shades is not None else math.nan
            style = _shade(shade) if isinstance(shade, float) and math.isfinite(shade) else ""
            best = ' class="best"' if style and shade == 1.0 else ""
            cells.append(f"<td{style}{best}>{html.escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    parts = []
    if section.filterable:
        parts.append(f'<input class="filter" type="search" data-table="{anchor}" placeholder="filter rows: type '
                     f'words that must all appear, e.g. gemm bf16" aria-label="filter {html.escape(section.title)}">'
                     f'<span class="count" id="{anchor}-count">{len(table)} rows</span>')
    parts.append(f'<table id="{anchor}"{classes}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')
    return "".join(parts)


def section_body(section: Section, level: int = 2) -> str:
    parts = []
    if section.bullets:
        parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in section.lines) + "</ul>")
    else:
        parts += [f"<p>{html.escape(line)}</p>" for line in section.lines]
    if section.table is not None:
        parts.append(table_html(section))
    parts += [f"<pre>{html.escape(block)}</pre>" for block in section.preformatted]
    for part in section.subsections:
        parts.append(f'<section id="{part.anchor}"><h{level + 1}>{html.escape(part.title)}</h{level + 1}>'
                     f"{section_body(part, level + 1)}</section>")
    return "".join(parts)


def to_html(report: Report, plot_dir: Path) -> str:
    """The page: the verdict and its companions first, then the plots, then every detail behind a click."""
    body = [f"<header><h1>{html.escape(report.title)}</h1>"]
    body += [f'<p class="lead">{html.escape(line)}</p>' for line in report.lead]
    body += [f'<p class="banner">{html.escape(line)}</p>' for line in report.banner]
    body.append("</header>")
    for section in report.top:
        body.append(f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>{section_body(section)}'
                    "</section>")
    body.append('<section id="plots"><h2>Plots</h2>')
    body += [f"<p>{html.escape(line)}</p>" for line in report.plot_notes]
    for plot in report.plots:
        data = base64.b64encode((plot_dir / f"{plot.name}.png").read_bytes()).decode("ascii")
        body.append(f'<figure id="plot-{plot.name}"><img alt="{html.escape(plot.title)}" '
                    f'src="data:image/png;base64,{data}"><figcaption><b>{html.escape(plot.title)}</b>'
                    f"{html.escape(plot.caption)}</figcaption></figure>")
    body.append('</section><section id="details"><h2>Details</h2>')
    for section in report.details:
        size = f" ({len(section.table)} rows)" if section.table is not None else ""
        body.append(f'<details id="{section.anchor}"><summary><h3>{html.escape(section.title)}</h3>{size}</summary>'
                    f"<div>{section_body(section)}</div></details>")
    body.append("</section>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")

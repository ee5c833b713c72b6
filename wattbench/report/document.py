"""What a report says, apart from how it is written: summary.md (render.py) and report.html (page.py) write the
same document, so the two never disagree."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from wattbench.report.plots import Plot


@dataclass
class Section:
    title: str
    anchor: str  # the HTML id, unique in the page
    lines: tuple[str, ...] = ()
    table: pd.DataFrame | None = None
    bullets: bool = False  # lines as a list rather than paragraphs
    #: Per table cell, how good the value is within its row (0 to 1; NaN: no shade): the matrix's colours.
    shades: pd.DataFrame | None = None
    preformatted: tuple[str, ...] = ()  # blocks written as they are (the settings comparisons)
    sortable: bool = True
    filterable: bool = False  # a filter box above the table (the long tables)
    #: Parts of this section under their own (lower) headings: the verdict's phases and what was not measured.
    subsections: tuple["Section", ...] = ()


@dataclass
class Report:
    title: str
    lead: list[str]
    #: Said above everything: synthetic test fixtures among the inputs.
    banner: list[str]
    #: The answer: verdict, phases, what could not be measured, cost, matrix.
    top: list[Section]
    plots: list[Plot]
    plot_notes: list[str]
    #: Every record and note, collapsed in the page.
    details: list[Section] = field(default_factory=list)

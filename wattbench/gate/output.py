"""The gate's reports: a console table, Markdown for a PR comment or the job summary, JUnit XML."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from wattbench.errors import UsageError
from wattbench.gate.compare import SEVERITY, BenchmarkResult, GateResult, MetricResult
from wattbench.stats import REGRESSION
from wattbench.results import aligned_lines, format_seconds

HEADER = ["benchmark", "metric", "baseline", "current", "ratio", "CI", "threshold", "verdict", "note"]


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric != "time":
        return f"{value:.4g}"
    return format_seconds(value, ".4g")


def _ordered(result: GateResult) -> list[BenchmarkResult]:
    """Worst first, so that regressions head every report."""
    return sorted(result.benchmarks, key=lambda b: (SEVERITY.index(b.verdict), b.id))


def _metric_cells(metric: MetricResult) -> list[str]:
    interval = metric.interval
    return [metric.label, format_value(metric.metric, metric.baseline), format_value(metric.metric, metric.current),
            f"{interval.ratio:.3f}" if interval else "-",
            f"[{interval.low:.3f}, {interval.high:.3f}]" if interval else "-",
            f"{metric.threshold:.0%}", metric.verdict.upper() if metric.verdict == REGRESSION else metric.verdict,
            metric.note]


def rows(result: GateResult) -> list[list[str]]:
    """One row per benchmark and metric; a benchmark excluded as a whole gets one row."""
    table = []
    for bench in _ordered(result):
        if not bench.metrics:
            table.append([bench.id, "-", "-", "-", "-", "-", "-", bench.verdict, bench.note])
        for position, metric in enumerate(bench.metrics):
            table.append([bench.id if position == 0 else "", *_metric_cells(metric)])
    return table


def _side_lists(result: GateResult) -> list[str]:
    lines = [f"new (no baseline): {name}" for name in result.new]
    lines += [f"missing from the current run: {name}: {why}" for name, why in result.missing]
    return lines


def console_table(result: GateResult) -> str:
    lines = [f"wattbench gate: {result.baseline_label} -> {result.current_label}"]
    lines += aligned_lines(HEADER, rows(result))
    lines += _side_lists(result) + result.notes
    lines += [f"method: {line}" for line in result.method]
    lines.append(result.headline())
    return "\n".join(lines)


def _md(cell: str) -> str:
    return cell.replace("|", "\\|")


def markdown(result: GateResult) -> str:
    """A summary for a PR comment or $GITHUB_STEP_SUMMARY."""
    lines = [f"## wattbench gate: {result.headline()}", "",
             f"Baseline: {_md(result.baseline_label)}  ", f"Current: {_md(result.current_label)}", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows(result):
        cells = [f"**{cell}**" if cell == REGRESSION.upper() else _md(cell) for cell in row]
        lines.append("| " + " | ".join(cells) + " |")
    extra = _side_lists(result) + result.notes
    if extra:
        lines += [""] + [f"- {_md(line)}" for line in extra]
    lines += ["", "<details><summary>Method</summary>", ""] + [f"- {line}" for line in result.method]
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def junit_xml(result: GateResult) -> str:
    """One test case per benchmark: a regression fails it, an excluded or one-sided benchmark skips it."""
    suite = ET.Element("testsuite", name="wattbench gate")
    counts = {"tests": 0, "failures": 0, "skipped": 0}

    def case(name: str, outcome: str | None = None, message: str = "", details: str = "") -> None:
        element = ET.SubElement(suite, "testcase", classname="wattbench.gate", name=name)
        counts["tests"] += 1
        if outcome:
            ET.SubElement(element, outcome, message=message).text = details or message
            counts["failures" if outcome == "failure" else "skipped"] += 1
        elif details:
            ET.SubElement(element, "system-out").text = details

    for bench in _ordered(result):
        details = "\n".join(f"{m.label}: {m.verdict}; ratio {m.interval.ratio:.4f} CI [{m.interval.low:.4f}, "
                            f"{m.interval.high:.4f}], threshold {m.threshold:.0%}" if m.interval
                            else f"{m.label}: {m.verdict}: {m.note}" for m in bench.metrics)
        regressed = [m.label for m in bench.metrics if m.verdict == REGRESSION]
        if regressed:
            case(bench.id, "failure", f"regression in {', '.join(regressed)}", details)
        elif all(m.interval is None for m in bench.metrics):
            case(bench.id, "skipped", bench.note or "nothing comparable", details)
        else:
            case(bench.id, details=details)
    for name in result.new:
        case(name, "skipped", "new benchmark: not in the baseline")
    for name, why in result.missing:
        case(name, "failure" if result.strict else "skipped", f"missing from the current run: {why}")
    suite.attrib.update({key: str(value) for key, value in counts.items()})
    root = ET.Element("testsuites", {key: str(value) for key, value in counts.items()})
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_reports(result: GateResult, markdown_out: Path | None = None, junit_out: Path | None = None) -> list[Path]:
    """Write the requested reports, and append the Markdown to $GITHUB_STEP_SUMMARY when it is set."""
    targets = []
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    text = markdown(result) if markdown_out or summary else ""  # rendered once for both destinations
    if markdown_out:
        targets.append((Path(markdown_out), "w", text))
    if summary:
        targets.append((Path(summary), "a", text))
    if junit_out:
        targets.append((Path(junit_out), "w", junit_xml(result)))
    for path, mode, content in targets:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open(mode) as handle:
                handle.write(content)
        except OSError as exc:
            raise UsageError(f"{path}: cannot write the gate report: {exc.strerror or exc}") from None
    return [path for path, _, _ in targets]

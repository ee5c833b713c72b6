"""Reports and hardware selection over run files from many hosts.

- `write_report(runs, out, specs=None, trace=None, cost=None)`: CSV (+ Parquet), plots, summary.md and
  report.html, the verdict first (`verdict`), cost and carbon when their inputs are given (`cost`); `specs` a
  loaded `SpecTable`; it returns a `WrittenReport` for the command to show.
- `select_devices(runs, workload, max_latency_ms, metric)`: devices ranked per joule under a latency bound.
- `load_runs(paths)`: run files into one tidy DataFrame; `load_specs(file)`: the device spec table.
"""

from wattbench.report.load import load_runs
from wattbench.report.render import write_report
from wattbench.report.select import RANKING_METRICS, rank_devices, select_devices
from wattbench.specs import load_specs

__all__ = ["RANKING_METRICS", "load_runs", "load_specs", "rank_devices", "select_devices", "write_report"]

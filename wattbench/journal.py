"""The run file as a journal: rewritten atomically after every benchmark, so nothing measured is lost.

While a run goes on, its run file always holds every benchmark completed so far and says
`complete: false`; a crash, Ctrl-C or SIGTERM leaves a valid file that `--resume` continues.
"""

from __future__ import annotations

from pathlib import Path

from wattbench.results import load_run, write_json_atomic


def case_of(benchmark: dict) -> str | None:
    """The registry case id a benchmark record was made from."""
    return (benchmark.get("params") or {}).get("wattbench_case")


class RunJournal:
    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.previous: list[dict] = load_run(path)["benchmarks"] if resume else []
        self.added: list[dict] = []

    @property
    def completed_cases(self) -> set[str]:
        return {case_of(b) for b in self.previous if case_of(b)}

    def add(self, benchmark: dict) -> None:
        self.added.append(benchmark)

    def write_progress(self, header: dict, block: dict) -> None:
        write_json_atomic(self.path, {**header, "benchmarks": self.previous + self.added,
                                      "wattbench": {**block, "complete": False}})

    def write_final(self, output_json: dict) -> None:
        """The run as pytest-benchmark reports it at the end, after the benchmarks of the resumed run."""
        output_json["benchmarks"] = self.previous + output_json["benchmarks"]
        write_json_atomic(self.path, output_json)

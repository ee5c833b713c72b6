"""`wattbench baseline save`: keep a run as a named baseline, with where and when it was measured."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from wattbench.errors import UsageError
from wattbench.results import load_run, run_environment, write_json_atomic

BASELINES = Path("results/baselines")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def provenance(run: dict) -> dict:
    """Commit, device, driver, Triton mode and date of a run, as far as the run file knows them."""
    environment = run_environment(run)
    commit = environment.get("wattbench_commit")
    if not isinstance(commit, dict) or "id" not in commit:
        commit = {"id": (run.get("commit_info") or {}).get("id"), "dirty": (run.get("commit_info") or {}).get("dirty")}
    block = run["wattbench"]
    return {
        "commit": commit,
        "device": block.get("device_name"),
        "device_spec": block.get("device"),
        "nvidia_driver": environment.get("nvidia_driver"),
        "triton_interpreted": environment.get("triton_interpreted"),
        "date": run.get("datetime") or block.get("started_utc"),
        "complete": block.get("complete"),
    }


def describe_run(run: dict, name: str) -> str:
    """'NAME (commit 1234abc, DEVICE, 2026-11-21)': the label the gate's reports use."""
    facts = provenance(run)
    commit_id = facts["commit"].get("id")
    commit = commit_id[:7] if isinstance(commit_id, str) else "unknown"
    if facts["commit"].get("dirty"):
        commit += "+dirty"
    saved = run["wattbench"].get("baseline", {}).get("name")
    label = f"baseline {saved!r} from {name}" if saved else name
    return f"{label} (commit {commit}, {facts['device'] or 'unknown device'}, {(facts['date'] or 'undated')[:10]})"


def default_name(run: dict) -> str:
    facts = provenance(run)
    device = re.sub(r"[^a-z0-9]+", "-", (facts["device"] or "unknown-device").lower()).strip("-")
    commit_id = facts["commit"].get("id")
    suffix = commit_id[:7] if isinstance(commit_id, str) and commit_id != "unversioned" else \
        (facts["date"] or datetime.now(timezone.utc).isoformat())[:10]
    return f"{device}-{suffix}"


@dataclass(frozen=True)
class SavedBaseline:
    """A baseline just saved: where, under which name, what it holds and any caveat about it."""

    path: Path
    name: str
    label: str
    benchmarks: int
    caveat: str | None = None

    def lines(self) -> list[str]:
        saved = f"saved baseline {self.name!r} to {self.path}: {self.label}, {self.benchmarks} benchmarks"
        return [saved, *([f"note: {self.caveat}"] if self.caveat else [])]


def save_baseline(run: Path, name: str | None = None, folder: Path = BASELINES, force: bool = False) -> SavedBaseline:
    """Copy run file `run` to FOLDER/NAME.json with its provenance.
    An existing baseline of that name is replaced only with `force`: the gate's reference never changes unasked."""
    data = load_run(Path(run))
    if not data["benchmarks"]:
        raise UsageError(f"{run}: no benchmarks to keep as a baseline")
    name = default_name(data) if name is None else name
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"baseline name must start with a letter or digit, then letters, digits, '.', '_' or '-' "
                         f"(no path), got {name!r}")
    facts = provenance(data)
    data["wattbench"]["baseline"] = {"name": name, "saved_utc": datetime.now(timezone.utc).isoformat(),
                                     "source": str(run), **facts}
    path = Path(folder) / f"{name}.json"
    if path.exists() and not force:
        raise UsageError(f"{path}: a baseline named {name!r} exists: pass --force to replace it, or choose another "
                         "--name")
    try:
        write_json_atomic(path, data)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the baseline: {exc.strerror or exc}") from None
    failed = len(data["wattbench"].get("failed") or [])
    caveat = None
    if facts["complete"] is False or failed:
        why = "was cut short" if facts["complete"] is False else f"had {failed} failed benchmark(s)"
        caveat = f"this run {why}: benchmarks it lacks will show as new when gating against it"
    return SavedBaseline(path, name, describe_run(data, str(run)), len(data["benchmarks"]), caveat)

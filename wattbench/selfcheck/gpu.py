"""`wattbench selfcheck gpu`: the checks only a GPU can answer, in one unattended run.

Every step (wattbench.selfcheck.gpu_checks) runs in a child process of its own, with its own time limit:
a step that hangs is killed with its whole process group and recorded as timed out, one that
crashes (a segfault, an abort in the driver) is recorded with the tail of its output, and the
next step runs either way. The run has a budget (8 minutes by default); a step whose limit no
longer fits in what is left is recorded as not run. Each limit includes the child's start
(importing torch and initialising CUDA take seconds).

The evidence file, `<out>/selfcheck-gpu/<host>_<gpu>_<UTC>.json` with a Markdown twin, holds
the environment and every step's verdict, reason and figures. This module imports no torch at
its top: the children of tests run fake steps without paying for it.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from wattbench.errors import UsageError
from wattbench.results import aligned_lines, write_json_atomic

FORMAT = "wattbench-selfcheck-gpu/1"
BUDGET_S = 480.0

PASS, FAIL, NOT_APPLICABLE = "pass", "fail", "not applicable"
TIMED_OUT, CRASHED, NOT_RUN = "timed out", "crashed", "not run"
#: Verdicts that leave the exit code at 0.
ACCEPTABLE = (PASS, NOT_APPLICABLE)

#: How much of a step's output the evidence keeps.
LOG_TAIL_CHARS = 3000


@dataclass(frozen=True)
class Step:
    """One check: `target` ("module:function") is called in a child as function(StepContext)."""

    name: str
    title: str
    limit_s: float
    target: str


STEPS = (
    Step("environment", "versions, driver, GPU facts (wattbench.environment)", 45,
         "wattbench.selfcheck.gpu_checks:environment"),
    Step("nvml-truth", "NVML units, value types, update periods, read costs, scopes, clock events, MIG, identity",
         60, "wattbench.selfcheck.gpu_checks:nvml_truth"),
    Step("event-clock", "the harness's event clock against triton.testing.do_bench", 60,
         "wattbench.selfcheck.gpu_checks:event_clock"),
    Step("graph-capture", "CUDA graph capture on the device and its refusals", 45,
         "wattbench.selfcheck.gpu_checks:graph_capture"),
    Step("sparse-24", "the 2:4 sparsity probe and, where supported, a 2:4 GEMM against dense", 45,
         "wattbench.selfcheck.gpu_checks:sparse_24"),
    Step("energy-run", "a few GEMMs through PowerMonitor with short windows: J/call, counter vs instant", 60,
         "wattbench.selfcheck.gpu_checks:energy_run"),
    Step("kernel-tests", "tests/test_kernel_*.py compiled on the GPU (bf16 included)", 180,
         "wattbench.selfcheck.gpu_checks:kernel_tests"),
    Step("registry-shapes", "every kernel-level op's Triton cases at the registry's GPU shapes against torch", 150,
         "wattbench.selfcheck.gpu_checks:registry_shapes"),
    Step("sampler-overhead", "wattbench selfcheck sampler-overhead with the real NVML", 150,
         "wattbench.selfcheck.gpu_checks:sampler_overhead"),
)


# -- what a step returns ------------------------------------------------------------------

def check(name: str, ok: bool | None, detail: str, **figures: Any) -> dict:
    """One finding of a step: passed (ok), failed (not ok) or not applicable (None), with why."""
    verdict = NOT_APPLICABLE if ok is None else PASS if ok else FAIL
    return {"name": name, "verdict": verdict, "detail": detail, **figures}


def step_result(checks: list[dict], **figures: Any) -> dict:
    """A step's verdict from its checks: failed if any failed, else passed if any passed, else
    not applicable; the reason names the failed (or not applicable) checks."""
    failed = [c for c in checks if c["verdict"] == FAIL]
    if failed:
        verdict, cited = FAIL, failed
    elif any(c["verdict"] == PASS for c in checks):
        verdict, cited = PASS, []
    else:
        verdict, cited = NOT_APPLICABLE, checks
    reason = "; ".join(f"{c['name']}: {c['detail']}" for c in cited) or None
    return {"verdict": verdict, "reason": reason, "checks": checks, "figures": figures}


@dataclass
class StepContext:
    """What a step function gets in its child: its device (detected on first use, which
    initialises CUDA), its deadline, and `progress` to leave partial results a timeout keeps."""

    spec: str
    limit_s: float
    partial_path: Path | None = None
    started_s: float = field(default_factory=time.monotonic)

    @functools.cached_property
    def device(self):
        from wattbench.device import detect

        return detect(self.spec)

    def seconds_left(self) -> float:
        return self.limit_s - (time.monotonic() - self.started_s)

    def progress(self, result: dict) -> None:
        if self.partial_path is not None:
            write_json_atomic(self.partial_path, plain_json(result))


# -- the child ------------------------------------------------------------------------------

def plain_json(data: Any) -> Any:
    """`data` with what json cannot write made plain: numpy scalars by their value (`item()`),
    anything else by its text. A step's figures come from torch, numpy and NVML alike."""
    def plain(value: Any) -> Any:
        try:
            return value.item()  # a numpy or one-element torch scalar
        except (AttributeError, ValueError, RuntimeError):
            return str(value)

    return json.loads(json.dumps(data, default=plain))


def first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {next(iter(str(exc).splitlines()), '')}"


def child_main(argv: list[str]) -> int:
    """Run one step function and write its result (or the exception it raised) as JSON."""
    parser = argparse.ArgumentParser(prog="python -m wattbench.selfcheck.gpu")
    parser.add_argument("target")
    parser.add_argument("--device", required=True)
    parser.add_argument("--limit", type=float, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--partial", type=Path, required=True)
    args = parser.parse_args(argv)
    context = StepContext(args.device, args.limit, args.partial)
    module, function = args.target.split(":")
    try:
        result = getattr(importlib.import_module(module), function)(context)
    except Exception as exc:  # noqa: BLE001  a step that raises is a failed step, with the reason
        result = {"verdict": FAIL, "reason": f"raised {first_line(exc)}", "checks": [],
                  "figures": {"traceback": traceback.format_exc()}}
    write_json_atomic(args.result, plain_json(result))
    return 0


# -- the parent -----------------------------------------------------------------------------

def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return ""


def run_step(step: Step, spec: str, workdir: Path) -> dict:
    """Run `step` in a child process (its own session, so a kill takes its children too) and
    return its record: the child's result, or why there is none (timed out, crashed)."""
    result_path, partial_path = workdir / f"{step.name}.json", workdir / f"{step.name}.partial.json"
    log_path = workdir / f"{step.name}.log"
    command = [sys.executable, "-m", "wattbench.selfcheck.gpu", step.target, "--device", spec,
               "--limit", str(step.limit_s), "--result", str(result_path), "--partial", str(partial_path)]
    began = time.monotonic()
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            code = child.wait(timeout=step.limit_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:  # also on Ctrl-C or SIGTERM, which the child's own session does not get
            _kill_group(child)  # and whatever it left running (pytest workers, say)
    elapsed = time.monotonic() - began
    result = _read_json(result_path)
    if code is None:
        partial = _read_json(partial_path) or {}
        result = {**partial, "verdict": TIMED_OUT, "reason": f"timed out after {step.limit_s:g} s"
                  + (" (partial results kept)" if partial else "")}
    elif result is None:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        result = {"verdict": CRASHED, "reason": f"crashed ({how}) without a result"}
    return {"name": step.name, "title": step.title, "limit_s": step.limit_s, "elapsed_s": round(elapsed, 2),
            "checks": [], "figures": {}, **result, "log_tail": _tail(log_path)}


def _kill_group(child: subprocess.Popen) -> None:
    """End every process of the child's session (none left is fine), and reap the child."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def not_run(step: Step, left_s: float, budget_s: float) -> dict:
    return {"name": step.name, "title": step.title, "limit_s": step.limit_s, "elapsed_s": 0.0,
            "verdict": NOT_RUN, "checks": [], "figures": {},
            "reason": f"not run: {max(left_s, 0):.0f} s of the {budget_s:g} s budget left, its limit is "
                      f"{step.limit_s:g} s"}


def run_steps(steps: tuple[Step, ...] | list[Step], spec: str, budget_s: float, workdir: Path,
              report: Callable[[dict], None] = lambda record: None) -> list[dict]:
    """Every step in order, each only if its whole limit fits in what is left of the budget."""
    began = time.monotonic()
    records = []
    for step in steps:
        left = budget_s - (time.monotonic() - began)
        record = run_step(step, spec, workdir) if step.limit_s <= left else not_run(step, left, budget_s)
        records.append(record)
        report(record)
    return records


# -- evidence -------------------------------------------------------------------------------

def exit_code(records: list[dict]) -> int:
    return 0 if all(r["verdict"] in ACCEPTABLE for r in records) else 1


def _known(value: Any) -> str:
    """A fact for the header: its value, or 'unknown (reason)' for wattbench.conditions.unknown()."""
    if isinstance(value, dict) and value.get("unknown"):
        return f"unknown ({value.get('reason')})"
    return "unknown" if value is None else str(value)


def _is_known(value: Any) -> bool:
    return value is not None and not (isinstance(value, dict) and value.get("unknown"))


def header_facts(environment: dict, device: dict) -> dict:
    """The facts a reader needs first: when, which GPU, which driver and versions."""
    gpu = environment.get("gpu") or {}
    packages = environment.get("packages") or {}
    drivers = (environment.get("nvidia_driver"), gpu.get("driver_version"))  # /proc, else NVML
    return {
        "GPU": device.get("name"), "UUID": device.get("uuid"), "device": device.get("spec"),
        "driver": next((d for d in drivers if _is_known(d)), drivers[0]),
        "CUDA driver": gpu.get("cuda_driver_version"), "CUDA runtime (torch)": environment.get("cuda_runtime"),
        "torch": packages.get("torch"), "triton": packages.get("triton"), "nvidia-ml-py": packages.get("nvidia-ml-py"),
        "host": environment.get("host"), "wattbench commit": (environment.get("wattbench_commit") or {}).get("id"),
    }


def evidence(records: list[dict], device: dict, started: datetime, finished: datetime, budget_s: float,
             complete: bool = True) -> dict:
    """The evidence file's contents; `complete` is False while steps are still to come (the file is
    rewritten after every step, so a run killed from outside leaves the steps it finished)."""
    environment = next((r["figures"] for r in records if r["name"] == "environment" and r["verdict"] == PASS), {})
    counts: dict[str, int] = {}
    for record in records:
        counts[record["verdict"]] = counts.get(record["verdict"], 0) + 1
    return {"format": FORMAT, "complete": complete, "started_utc": started.isoformat(),
            "finished_utc": finished.isoformat(),
            "budget_s": budget_s, "elapsed_s": round((finished - started).total_seconds(), 1), "device": device,
            "header": {key: _known(value) for key, value in header_facts(environment, device).items()},
            "verdicts": counts, "exit_code": exit_code(records), "steps": records}


def _cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def markdown(data: dict) -> str:
    """The evidence for reading: header facts, one row per step, then each step's checks and figures."""
    lines = [f"# wattbench selfcheck gpu: {data['header']['GPU']}", "",
             f"- date: {data['started_utc']} to {data['finished_utc']} ({data['elapsed_s']:g} s of a "
             f"{data['budget_s']:g} s budget)"]
    lines += [f"- {key}: {_cell(value)}" for key, value in data["header"].items()]
    verdicts = ", ".join(f"{count} {verdict}" for verdict, count in data["verdicts"].items())
    lines += [f"- result: {verdicts}; exit code {data['exit_code']}"
              + ("" if data["complete"] else " (INCOMPLETE: the run ended before its last step)"), "",
              "| step | verdict | time | limit | reason |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['verdict']} | {r['elapsed_s']:g} s | {r['limit_s']:g} s | {_cell(r.get('reason'))} |"
              for r in data["steps"]]
    for record in data["steps"]:
        lines += ["", f"## {record['name']}: {record['verdict']}", "", record["title"] + "."]
        if record.get("reason"):
            lines += ["", f"Reason: {record['reason']}"]
        if record["checks"]:
            lines += ["", "| check | verdict | detail |", "|---|---|---|"]
            lines += [f"| {_cell(c['name'])} | {c['verdict']} | {_cell(c['detail'])} |" for c in record["checks"]]
        if record["figures"]:
            lines += ["", "```json", json.dumps(record["figures"], indent=2, default=str), "```"]
        if record["verdict"] not in ACCEPTABLE and record.get("log_tail"):
            lines += ["", "Output (tail):", "", "```", record["log_tail"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def evidence_stem(host: str, device_slug: str, when: datetime) -> str:
    return f"{host}_{device_slug}_{when.strftime('%Y%m%dT%H%M%SZ')}"


def write_evidence(data: dict, folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.json"
    write_json_atomic(path, data)
    path.with_suffix(".md").write_text(markdown(data))
    return path


def _summary_line(record: dict) -> str:
    reason = record.get("reason") or ""
    return reason if len(reason) <= 110 else reason[:107] + "..."


def select_steps(names: str | None) -> tuple[Step, ...]:
    """The steps named (comma-separated, in the run's order), or all of them."""
    if not names:
        return STEPS
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in {s.name for s in STEPS}]
    if unknown or not wanted:
        raise UsageError(f"unknown step(s) {', '.join(unknown) or repr(names)}: choose from "
                         f"{', '.join(s.name for s in STEPS)}")
    return tuple(s for s in STEPS if s.name in wanted)


def _gpu(requested: str | None):
    """The CUDA device to check; a UsageError (nothing run) where there is none."""
    import torch

    from wattbench.device import detect

    if not torch.cuda.is_available():
        raise UsageError("selfcheck gpu needs a CUDA GPU and torch sees none on this host "
                         "(torch.cuda.is_available() is False): nothing was run")
    device = detect(requested or "cuda:0")
    if device.type != "cuda":
        raise UsageError(f"selfcheck gpu checks a CUDA GPU, not {device.spec}: use --device cuda or cuda:N")
    return device


def _exit_on_sigterm(signum, frame) -> None:
    """SIGTERM (a scheduler's or a timeout's) ends the run as Ctrl-C would: the running step's
    process group is killed on the way out, and the evidence so far stays on disk."""
    raise SystemExit(128 + signum)


def main(device: str | None = None, out: Path = Path("results"), budget_s: float | None = None,
         steps: str | None = None) -> int:
    """Run the steps, print one line per step and the summary, write the evidence; 0 when every
    step passed or did not apply, 1 otherwise."""
    from wattbench.device import host_name
    from wattbench.results import check_writable

    budget_s = BUDGET_S if budget_s is None else budget_s
    if not (math.isfinite(budget_s) and budget_s > 0):
        raise UsageError(f"--budget must be a positive number of seconds, got {budget_s:g}")
    chosen = select_steps(steps)
    gpu = _gpu(device)
    folder = out / "selfcheck-gpu"
    check_writable(folder)
    started = datetime.now(timezone.utc)
    stem = evidence_stem(host_name(), gpu.slug, started)
    device_info = {"spec": gpu.spec, "name": gpu.name, "uuid": gpu.uuid}
    print(f"selfcheck gpu on {gpu.spec} ({gpu.name}, UUID {gpu.uuid}): {len(chosen)} steps, budget {budget_s:g} s")
    done: list[dict] = []

    def report(record: dict) -> None:
        print(f"  {record['name']:<17} {record['verdict']:<15} {record['elapsed_s']:>6.1f} s  {_summary_line(record)}",
              flush=True)
        done.append(record)
        write_evidence(evidence(done, device_info, started, datetime.now(timezone.utc), budget_s, complete=False),
                       folder, stem)

    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="wattbench-selfcheck-gpu-") as workdir:
            records = run_steps(chosen, gpu.spec, budget_s, Path(workdir), report)
    finally:
        signal.signal(signal.SIGTERM, previous)
    data = evidence(records, device_info, started, datetime.now(timezone.utc), budget_s)
    path = write_evidence(data, folder, stem)
    rows = [[r["name"], r["verdict"], f"{r['elapsed_s']:.1f} s", f"{r['limit_s']:g} s"] for r in records]
    print("\n".join(aligned_lines(["step", "verdict", "time", "limit"], rows)))
    print(f"result: {', '.join(f'{n} {v}' for v, n in data['verdicts'].items())}")
    print(f"evidence: {path} (and {path.with_suffix('.md').name})")
    return data["exit_code"]


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))

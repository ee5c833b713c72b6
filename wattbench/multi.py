"""`wattbench run --devices`: the suites on several GPUs of one host at once, one worker per GPU.

Each worker is a `wattbench run` process that sees exactly one GPU (CUDA_VISIBLE_DEVICES), so
no two workers ever share a GPU and each measures its own GPU's power. The GPU is named to the
worker by the parent's own CUDA_VISIBLE_DEVICES entry for it: under a scheduler that gave the
job "4,5" (or UUIDs, or MIG slices), the parent's cuda:1 is "5", not the host's GPU 1. Their
run files are merged into one. (pytest-xdist cannot host these workers: pytest-benchmark switches itself off
whenever xdist is active, so worker processes are started here instead.)

The parent makes the run's RunConfig once; each worker gets it as JSON (WORKER_ENV), with its own run file,
and runs the suites with it (`python -m wattbench.multi`), not from a command line rebuilt from flags.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from wattbench import results, runner
from wattbench.config import RunConfig, run_file_name
from wattbench.errors import UsageError
from wattbench.record import Record
from wattbench.results import check_writable

#: The device as each pinned worker sees its one GPU.
WORKER_DEVICE = "cuda:0"
#: The environment variable that carries a worker's RunConfig (JSON) and pytest arguments.
WORKER_ENV = "WATTBENCH_WORKER"


@dataclass(frozen=True)
class Worker:
    """One worker process: the GPU it owns, as the parent numbers it (`index`, its cuda:N), and
    `visible`, the CUDA_VISIBLE_DEVICES entry that names that GPU to the worker."""

    index: int
    visible: str

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"

    @property
    def env(self) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": self.visible}


def visible_entries(value: str | None, device_count: int) -> list[str]:
    """The name of each of the parent's `device_count` GPUs for a child's CUDA_VISIBLE_DEVICES.

    Set, it is the parent's own list, entry for entry (indices, UUIDs, short UUID prefixes and
    MIG identifiers pass through as CUDA reads them). Unset, the parent's cuda:i is "i": the
    child inherits CUDA_DEVICE_ORDER, so CUDA counts the same devices in the same order.
    """
    if value is None:
        return [str(i) for i in range(device_count)]
    entries = []
    for entry in value.split(","):
        if not entry.strip():
            break  # CUDA stops at the first entry it cannot read
        entries.append(entry.strip())
    if len(entries) < device_count:
        raise UsageError(f"CUDA_VISIBLE_DEVICES={value!r} names {len(entries)} device(s) but torch sees "
                         f"{device_count}: which entry is which GPU cannot be told")
    return entries


def plan_workers(devices: str, device_count: int, visible: str | None = None) -> list[Worker]:
    """Workers for "all" or a comma-separated list of GPU indices ("0,2", as this process numbers
    them); never two on one GPU. `visible` is this process's CUDA_VISIBLE_DEVICES (default: read
    from the environment)."""
    if device_count == 0:
        raise UsageError("--devices needs CUDA GPUs, and torch sees none on this host")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if devices.strip().lower() == "all":
        names = visible_entries(visible, device_count)
        return [Worker(i, names[i]) for i in range(device_count)]
    try:
        indices = [int(part.strip().removeprefix("cuda:")) for part in devices.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--devices {devices!r}: use 'all' or GPU indices such as '0,1'") from None
    if not indices:
        raise UsageError(f"--devices {devices!r}: no GPU index given")
    duplicates = sorted({i for i in indices if indices.count(i) > 1})
    if duplicates:
        raise UsageError(f"--devices {devices!r}: GPU {duplicates[0]} listed twice (one worker per GPU)")
    missing = [i for i in indices if not 0 <= i < device_count]
    if missing:
        raise UsageError(f"--devices {devices!r}: GPU {missing[0]} does not exist (this host has {device_count})")
    names = visible_entries(visible, device_count)
    return [Worker(i, names[i]) for i in indices]


def merge_runs(parts: list[tuple[Worker, dict]]) -> dict:
    """One run file from the workers' run files: every record names its GPU as the parent
    numbers it (cuda:N); `per_device` and `machine_info.wattbench.devices` add the
    CUDA_VISIBLE_DEVICES entry each worker was given, and each worker's device block (its UUID)."""
    first = parts[0][1]
    merged = {key: value for key, value in first.items() if key not in ("benchmarks", "wattbench")}
    merged["machine_info"] = {**first["machine_info"], "wattbench": {
        **first["machine_info"].get("wattbench", {}),
        "devices": [{"device": w.device, "cuda_visible_devices": w.visible,
                     **data["machine_info"].get("wattbench", {}).get("device", {})} for w, data in parts]}}
    merged["benchmarks"] = []
    for worker, data in parts:
        for bench in data["benchmarks"]:
            info = replace(Record.from_json(bench["extra_info"]), device=worker.device).to_json()
            fullname = f"{bench['fullname']}@{worker.device}"
            merged["benchmarks"].append({**bench, "extra_info": info, "fullname": fullname})
    blocks = [(worker, data["wattbench"]) for worker, data in parts]
    merged["wattbench"] = {
        # Every worker plans the same benchmarks; the segments that ran them are each worker's own (per device).
        **{k: v for k, v in first["wattbench"].items() if k != "segments"},
        "device": ",".join(w.device for w, _ in blocks),
        "device_name": ",".join(sorted({b["device_name"] for _, b in blocks})),
        "complete": all(b.get("complete") for _, b in blocks),
        "failed": [{**f, "device": w.device} for w, b in blocks for f in b.get("failed", [])],
        "skipped": [{**s, "device": w.device} for w, b in blocks for s in b.get("skipped", [])],
        "per_device": [{"device": w.device, "cuda_visible_devices": w.visible,
                        **{k: b.get(k) for k in ("device_name", "complete", "started_utc", "ended_utc", "power",
                                                 "planned", "segments")}}
                       for w, b in blocks],
    }
    return merged


def _relay(stream, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{prefix} {line}")
        sys.stdout.flush()


def run_workers(workers: list[Worker], config: RunConfig, runs_dir: Path, pytest_args: list[str]) -> int:
    """Start one worker per GPU, each running `config` (whose device is the one GPU each worker sees:
    WORKER_DEVICE), relay their output, merge their run files; returns the worst exit code.

    Each worker's own run file stays in `.<run>.workers/` beside the merged one, so an interrupted
    run loses nothing.
    """
    now = datetime.now(timezone.utc)
    final = runs_dir / run_file_name(f"{len(workers)}gpu", now)
    check_writable(runs_dir)
    workers_dir = runs_dir / f".{final.stem}.workers"
    procs = []
    for worker in workers:
        name = worker.device.replace(":", "")
        own = config.writing_to(workers_dir / name / "runs" / run_file_name(name, now))
        payload = json.dumps({"config": own.to_json(), "pytest_args": pytest_args})
        proc = subprocess.Popen([sys.executable, "-m", "wattbench.multi"],
                                env={**os.environ, **worker.env, WORKER_ENV: payload}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        relay = threading.Thread(target=_relay, args=(proc.stdout, f"[{worker.device}]"), daemon=True)
        relay.start()
        procs.append((worker, proc, relay))
    codes = []
    for _, proc, relay in procs:
        codes.append(proc.wait())
        relay.join()
    parts = []
    for worker, _, _ in procs:
        files = sorted((workers_dir / worker.device.replace(":", "") / "runs").glob("[!.]*.json"))
        if files:
            parts.append((worker, results.load_run(files[-1])))
    if not parts:
        print("wattbench: no worker wrote a run file", file=sys.stderr)
        return max(codes)
    results.write_json_atomic(final, merge_runs(parts))
    runner.finish(final, trace=None, report=True, specs=config.specs)
    return max(codes)


def worker_main() -> int:
    """A worker: the parent's RunConfig (and pytest arguments) from WORKER_ENV, run on this process's GPU."""
    from wattbench.cli import exit_code

    def run() -> int:
        given = json.loads(os.environ[WORKER_ENV])
        return runner.run(RunConfig.from_json(given["config"]), given["pytest_args"], report=False)

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(worker_main())

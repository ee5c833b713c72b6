"""Regenerate the report tests' run files: `python tests/data/report/make_fixtures.py`.

- cpu_run.json: a real `wattbench run` on a 2-core CPU VM (energy not measured; Triton
  interpreted), with pytest-benchmark's duplicate `stats.data` dropped to keep it small.
- fixture_h100.json, fixture_l4.json (+ fixture_h100_trace.csv): SYNTHETIC GPU-like runs.
  Their numbers come from a simple roofline model below, not from any GPU; device names
  start with TEST-FIXTURE and the run block says so, so they can never pass for measurements.
- fixture_llm_h100.json, fixture_llm_l4.json: SYNTHETIC model runs of the same devices a day later
  (llm.train, llm.prefill, llm.decode of a 125M-parameter model in bf16, for the report's per-watt
  comparison of the phases), the H100's decode also at a 400 W power limit (a sweep setting).
"""

from __future__ import annotations

import copy
import json
import random
import sys
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE_NOTE = "TEST FIXTURE: synthetic numbers from a roofline model for wattbench's report tests, not a measurement"

#: name, host, peak bf16/fp32 TFLOP/s, bandwidth GB/s, idle W, busy W (model inputs, not claims).
DEVICES = {
    "h100": ("TEST-FIXTURE NVIDIA H100 80GB HBM3", "test-fixture-host-a", {"bf16": 600.0, "fp32": 45.0}, 2800.0,
             90.0, 600.0, "2026-11-20T10:00:00+00:00"),
    "l4": ("TEST-FIXTURE NVIDIA L4", "test-fixture-host-b", {"bf16": 80.0, "fp32": 20.0}, 250.0, 20.0, 70.0,
           "2026-11-21T10:00:00+00:00"),
}
CASES = [("gemm.train", "train", m, 4096, 4096) for m in (2048,)] + \
        [("gemm.infer", "infer", m, 4096, 4096) for m in (1, 16, 64, 256)]
IMPLS = {"torch": 1.0, "triton": 0.9}  # fraction of the model's attainable speed


def model_case(device, workload, style, m, k, n, impl, precision, rng, clock):
    elem = 2 if precision == "bf16" else 4
    flops, nbytes = 2.0 * m * k * n * (3 if style == "train" else 1), float((m * k + k * n + m * n) * elem)
    return record(device, workload, "gemm", style, f"M{m}-K{k}-N{n}", {"M": m, "K": k, "N": n}, m, flops, nbytes,
                  impl, precision, rng, clock)


def record(device, workload, op, style, size, shape, units, flops, nbytes, impl, precision, rng, clock,
           overhead_s=8e-6, power_cap_w=None):
    """One benchmark record of the roofline model: its time, power (capped at `power_cap_w`) and energy."""
    name, host, peaks, bandwidth, idle_w, busy_w, _ = device
    seconds = max(flops / (peaks[precision] * 1e12), nbytes / (bandwidth * 1e9)) / (0.7 * IMPLS[impl]) + overhead_s
    samples = [seconds * rng.uniform(0.98, 1.04) for _ in range(30)]
    median = sorted(samples)[len(samples) // 2]
    utilisation = min(1.0, flops / median / (peaks[precision] * 1e12) + nbytes / median / (bandwidth * 1e9))
    power = idle_w + (busy_w - idle_w) * (0.3 + 0.7 * utilisation)
    if power_cap_w is not None and power > power_cap_w:  # capped, it slows by less than the power drops
        slowdown = (power / power_cap_w) ** 0.5
        samples = [t * slowdown for t in samples]
        median, power = median * slowdown, power_cap_w
    joules = power * median
    spans = []
    for _ in range(3):
        clock[0] += 0.3
        spans.append([round(clock[0], 3), round(clock[0] + 1.0, 3)])
        clock[0] += 1.0
    energy = {"source": "nvml", "method": "counter", "reason": None, "valid": True, "scope": "gpu",
              "joules_per_call": joules, "joules_per_unit": joules / units, "units_per_joule": units / joules,
              "avg_power_w": power, "peak_power_w": power * 1.05, "idle_power_w": idle_w,
              "dynamic_joules_per_call": (power - idle_w) * median, "window_s": 1.0, "samples": 300,
              "uncertainty_pct": rng.uniform(1.5, 3.5), "windows": 3, "valid_windows": 3, "window_spans_s": spans}
    info = {"workload": workload, "op": op, "style": style, "impl": impl, "precision": precision, "size": size,
            "shape": shape, "device": "cuda:0", "device_name": name, "interpreted": False,
            "seed": 0, "unit": "tokens", "units_per_call": float(units), "flops": flops, "bytes": nbytes,
            "timing": {"method": "cuda_event", "rounds": len(samples), "warmup_rounds": 2, "flush_l2": True,
                       "samples_s": samples},
            "median_s": median, "units_per_s": units / median, "tflops": flops / median / 1e12,
            "gbps": nbytes / median / 1e9, "energy": energy}
    ordered = sorted(samples)
    stats = {"min": ordered[0], "max": ordered[-1], "mean": sum(samples) / len(samples), "stddev": 0.0,
             "rounds": len(samples), "median": median, "q1": ordered[7], "q3": ordered[22],
             "iqr": ordered[22] - ordered[7], "ops": 1 / median, "total": sum(samples), "iterations": 1}
    if power_cap_w is not None:
        info["setting"] = f"pl{power_cap_w:g}w"
        energy["setting"] = {"held": True, "reasons": []}
    case = f"{workload}-{impl}-{precision}-{size}" + (f"-{info['setting']}" if power_cap_w is not None else "")
    suite = "kernel" if op == "gemm" else "model"
    return {"group": workload, "name": f"test_{suite}[{case}]", "fullname": f"test_{suite}s.py::test_{suite}[{case}]",
            "params": {"wattbench_case": case}, "param": case, "extra_info": info, "options": {}, "stats": stats}, \
        (spans, power, f"{workload} {impl} {precision} {size}")


#: The model of the LLM fixtures: 125M parameters, 12 layers of width 768, bf16.
PARAMS, LAYERS, WIDTH = 125e6, 12, 768
LLM_CASES = [("llm.train", "train", 8, 512, 0), ("llm.prefill", "infer", 1, 512, 0),
             ("llm.prefill", "infer", 8, 512, 0), ("llm.decode", "infer", 1, 512, 64),
             ("llm.decode", "infer", 8, 512, 64)]


def llm_case(device, workload, style, batch, prompt, tokens, impl, rng, clock, power_cap_w=None):
    """A training step, a prefill or a T-token decode of the 125M model: FLOPs 6 (train) or 2 per parameter and
    token; bytes the weights (and, training, their gradients and Adam state) plus the KV cache read per step."""
    kv_bytes = 2 * LAYERS * WIDTH * 2 * batch * prompt
    if workload == "llm.decode":
        units, size = batch * tokens, f"125m-B{batch}-P{prompt}-T{tokens}"
        flops, nbytes, overhead = 2 * PARAMS * units, tokens * (2 * PARAMS + kv_bytes), tokens * 30e-6
    else:
        units, size = batch * prompt, f"125m-B{batch}-{'S' if style == 'train' else 'P'}{prompt}"
        flops = (6 if style == "train" else 2) * PARAMS * units
        nbytes, overhead = (16 if style == "train" else 2) * PARAMS + kv_bytes, 200e-6
    shape = {"model": "125m", "B": batch, ("S" if style == "train" else "P"): prompt}
    if tokens:
        shape["T"] = tokens
    return record(device, workload, "transformer", style, size, shape, units, flops, nbytes, impl, "bf16", rng, clock,
                  overhead_s=overhead, power_cap_w=power_cap_w)


def synthetic_run(key: str, template: dict, seed: int):
    device = DEVICES[key]
    rng, clock = random.Random(seed), [2.0]
    benchmarks, windows = [], []
    for workload, style, m, k, n in CASES:
        for impl in IMPLS:
            for precision in ("bf16", "fp32"):
                bench, window = model_case(device, workload, style, m, k, n, impl, precision, rng, clock)
                benchmarks.append(bench)
                windows.append(window)
    return fixture_run(template, device, benchmarks), windows, clock[0] + 1.0, device[4]


def synthetic_llm_run(key: str, template: dict, seed: int) -> dict:
    device = DEVICES[key]
    rng, clock = random.Random(seed), [2.0]
    benchmarks = [llm_case(device, *case, impl, rng, clock)[0] for case in LLM_CASES for impl in IMPLS]
    if key == "h100":
        benchmarks += [llm_case(device, *case, "torch", rng, clock, power_cap_w=400)[0]
                       for case in LLM_CASES if case[0] == "llm.decode"]
    day_later = datetime.fromisoformat(device[-1]) + timedelta(days=1)
    return fixture_run(template, device, benchmarks, started=day_later.isoformat())


def fixture_run(template: dict, device, benchmarks: list[dict], started: str | None = None) -> dict:
    """The template run file (a real one) carrying the synthetic `benchmarks` of `device`, marked as a fixture."""
    run = copy.deepcopy(template)
    name, host, *_, first_start = device
    started = started or first_start
    run["benchmarks"] = benchmarks
    run["machine_info"]["node"] = host
    run["machine_info"]["wattbench"].update(host=host, device={"spec": "cuda:0", "type": "cuda", "name": name},
                                            triton_interpreted=False)
    run["wattbench"].update(device="cuda:0", device_name=name, started_utc=started, ended_utc=started,
                            complete=True, test_fixture=FIXTURE_NOTE,
                            power={"sources": [], "reason": None, "source": "nvml", "idle_power_w": device[4]})
    run["datetime"] = started
    run["wattbench"].pop("summary", None)  # the template's own: the report recomputes it from the records
    return run


def write_trace(path: Path, windows, end_s: float, idle_w: float, seed: int) -> None:
    """A power trace in PowerMonitor.write_trace's columns: an instant channel and an energy counter."""
    rng = random.Random(seed)
    lines = ["timestamp_s,source,channel,method,watts,joules"]
    energy, t, step = 0.0, 0.0, 0.05
    while t <= end_s:
        watts = next((p for spans, p, _ in windows for s, e in spans if s <= t <= e), idle_w) * rng.uniform(0.97, 1.03)
        energy += watts * step
        lines.append(f"{t:.6f},nvml,gpu0:power,instant,{watts:.3f},")
        lines.append(f"{t:.6f},nvml,gpu0:energy,counter,,{energy:.3f}")
        t += step
    path.write_text("\n".join(lines) + "\n")


def main(sample: Path) -> None:
    real = json.loads(sample.read_text())
    for bench in real["benchmarks"]:
        bench["stats"].pop("data", None)
    (HERE / "cpu_run.json").write_text(json.dumps(real, indent=1))
    for seed, key in enumerate(DEVICES, start=1):
        run, windows, end_s, idle_w = synthetic_run(key, real, seed)
        (HERE / f"fixture_{key}.json").write_text(json.dumps(run, indent=1))
        if key == "h100":
            write_trace(HERE / "fixture_h100_trace.csv", windows, end_s, idle_w, seed)
        (HERE / f"fixture_llm_{key}.json").write_text(json.dumps(synthetic_llm_run(key, real, 10 + seed), indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "cpu_run.json")

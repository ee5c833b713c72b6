"""A sweep in a process of its own, for the tests of how a process may end (tests/test_power_knobs.py).

    python knob_child.py sweep GPU_JSON SYSFS_ROOT STOP_AT [--interrupt-like-ctrl-c]
    python knob_child.py restore GPU_JSON SYSFS_ROOT
    python knob_child.py run-sweep GPU_JSON METER_CSV OUT KEYWORD

`run-sweep` is `wattbench sweep` of two locked SM clocks over the benchmarks KEYWORD selects, on this CPU, its energy
from the replayed meter log METER_CSV (tests/test_sweep.py signals it mid-sweep).

`sweep` runs the settings of a GPU power limit, a CPU package power limit and a CPU frequency sweep in turn, until
STOP_AT (a setting's id): there it prints "applied STOP_AT" and waits to be signalled or killed. With
--interrupt-like-ctrl-c, SIGTERM already had a handler that raises KeyboardInterrupt (as `wattbench run`
installs), which the sweep's must run after restoring. `restore` is `wattbench sweep --restore`.

The GPU is tests/fake_knobs.py's FakeGpu in GPU_JSON (pynvml is replaced before anything runs: no real GPU is
ever asked), the CPU knobs a fake sysfs tree under SYSFS_ROOT; the state file goes where XDG_STATE_HOME says.
"""

import signal
import sys
import time
from pathlib import Path

from fake_knobs import GPU, fake_gpu_nvml

from wattbench import cli
from wattbench.power import knobs


def interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(mode: str, gpu_json: str, sysfs_root: str, *rest: str) -> int:
    with fake_gpu_nvml(gpu_json):
        if mode == "restore":
            return cli.main(["sweep", "--restore"])
        if mode == "run-sweep":
            return run_sweep(sysfs_root, *rest)
        if "--interrupt-like-ctrl-c" in rest:
            signal.signal(signal.SIGTERM, interrupt)
        plan = knobs.plan_sweep(GPU, power_limits="200,300", cpu_power_limits="50", cpu_max_freqs="2000",
                                sysfs_root=sysfs_root)
        try:
            with knobs.KnobSession(plan) as session:
                for setting in plan.settings:
                    with session.applied(setting, poll_s=0.01):
                        if setting.id == rest[0]:
                            print(f"applied {setting.id}", flush=True)
                            while True:
                                time.sleep(0.05)
        except KeyboardInterrupt as stop:
            print(f"interrupted by {stop}", flush=True)
            return 130
    return 0


def run_sweep(meter: str, out: str, keyword: str) -> int:
    from wattbench.config import from_command
    from wattbench.sweep import run_sweep

    def sweep() -> int:
        config, pytest_args = from_command("cpu", "quick", keyword, [
            "--wattbench-idle=0", "--wattbench-energy-window=0.05", "--wattbench-energy-max-window=0.1",
            "--wattbench-energy-repeats=2", "--wattbench-min-time=0.02"], power_replay=meter)
        return run_sweep(config, knobs.plan_sweep(GPU, sm_clocks="1200,1500"), pytest_args, Path(out), report=False)
    return cli.exit_code(sweep)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

"""A sweep in a process of its own, for the tests of how a process may end (tests/test_power_knobs.py).

    python knob_child.py sweep GPU_JSON SYSFS_ROOT STOP_AT [--interrupt-like-ctrl-c]
    python knob_child.py restore GPU_JSON SYSFS_ROOT

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

from fake_knobs import GPU, fake_gpu_nvml

from wattbench import cli
from wattbench.power import knobs


def interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(mode: str, gpu_json: str, sysfs_root: str, *rest: str) -> int:
    with fake_gpu_nvml(gpu_json):
        if mode == "restore":
            return cli.main(["sweep", "--restore"])
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


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

"""Conditions of a measurement: clock-event decoding, window watch, summary, cool-down, throttled benchmarks."""

import threading
import time

import pytest

from wattbench.conditions import (QUANTITIES, BoundedCaller, CallTimeout, ConditionSensors, WindowWatch,
                                  decode_clock_events, is_throttle, summarize_conditions, throttled_benchmarks,
                                  wait_until_cool)

POWER_CAP, HW_THERMAL, IDLE, APP_CLOCKS = 0x4, 0x40, 0x1, 0x2


def sensors(missing: dict | None = None, **replaced) -> ConditionSensors:
    """Fake readers (those in `replaced` swapped in), without the quantities in `missing`."""
    missing = missing or {}
    readers = {"temperature_c": lambda: 50, "sm_clock_mhz": lambda: 1980, "mem_clock_mhz": lambda: 2619,
               "clock_events": lambda: 0, **replaced}
    return ConditionSensors({q: r for q, r in readers.items() if q not in missing}, missing)


class FakeClock:
    """time.monotonic and time.sleep that only move when slept."""

    def __init__(self):
        self.now = 0.0
        self.slept = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("mask, names", [
    (0, []),
    (POWER_CAP, ["sw_power_cap"]),
    (IDLE | POWER_CAP | HW_THERMAL, ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]),
    (0x8 | 0x20 | 0x80, ["hw_slowdown", "sw_thermal_slowdown", "hw_power_brake_slowdown"]),
    (0x1000 | APP_CLOCKS, ["applications_clocks_setting", "unknown_0x1000"]),
])
def test_clock_event_bitmask_is_decoded_into_names(mask, names):
    assert decode_clock_events(mask) == names


def test_settings_are_not_throttles_but_limiters_are():
    assert not any(is_throttle(n) for n in ("gpu_idle", "applications_clocks_setting", "sync_boost",
                                           "display_clock_setting"))
    assert all(is_throttle(n) for n in ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                                       "hw_power_brake_slowdown", "board_limit", "reliability", "unknown_0x1000"))


@pytest.mark.parametrize("mask", [-1, True, "4", 4.0])
def test_a_bad_bitmask_is_rejected(mask):
    with pytest.raises(ValueError, match="mask"):
        decode_clock_events(mask)


def test_sensors_must_account_for_every_quantity():
    with pytest.raises(ValueError, match="reader or the reason"):
        ConditionSensors({"temperature_c": lambda: 40}, {})
    with pytest.raises(ValueError, match="reader or the reason"):
        ConditionSensors({}, {**{q: "x" for q in QUANTITIES}, "fan_rpm": "x"})
    nothing = ConditionSensors.unavailable("no NVML")
    assert nothing.read("temperature_c") is None and nothing.why_unavailable() == "no NVML"


def test_a_throttle_between_the_edges_is_caught_by_polling():
    reads = []

    def clock_events():  # the power cap shows on the third reading only: neither edge sees it
        reads.append(1)
        return IDLE | (POWER_CAP if len(reads) == 3 else 0)

    temperatures = iter([61, 67])
    watch_sensors = sensors(clock_events=clock_events, temperature_c=lambda: next(temperatures))
    with WindowWatch(watch_sensors, poll_s=0.01) as watch:
        deadline = time.monotonic() + 10
        while len(reads) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    result = watch.result()
    assert result["clock_events"] == ["gpu_idle", "sw_power_cap"]
    assert result["temperature_c"] == [61, 67] and result["sm_clock_mhz"] == [1980, 1980]
    assert result["polls"] == len(reads) >= 5
    assert not any(t.name == "wattbench-conditions" for t in threading.enumerate())


def test_a_failed_reading_leaves_a_gap_and_unreadable_quantities_are_left_out():
    watch_sensors = sensors({"clock_events": "clock_events: not supported on this GPU"}, temperature_c=lambda: None)
    with WindowWatch(watch_sensors) as watch:
        pass
    result = watch.result()
    assert result["temperature_c"] == [None, None]
    assert "clock_events" not in result and "polls" not in result


@pytest.fixture
def never_returns():
    """A reader that blocks until the test ends, as a driver call on a lost GPU does."""
    release = threading.Event()
    yield lambda: release.wait()
    release.set()


def finishes_within(seconds: float, work) -> None:
    """Run `work` on a thread and fail (rather than hang) when it takes longer than `seconds`."""
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still waiting after {seconds} s"


def test_a_bounded_call_gives_up_and_later_calls_fail_at_once(never_returns):
    caller = BoundedCaller()
    assert caller.call(lambda: 7, 1.0, "quick") == 7
    with pytest.raises(ZeroDivisionError):
        caller.call(lambda: 1 / 0, 1.0, "broken")  # the call's own error reaches the caller
    with pytest.raises(CallTimeout, match="stuck did not return within 0.05 s"):
        caller.call(never_returns, 0.05, "stuck")
    began = time.monotonic()
    with pytest.raises(CallTimeout, match="stuck did not return"):
        caller.call(lambda: 7, 10.0, "quick")
    assert time.monotonic() - began < 1


def test_a_window_whose_readings_hang_ends_with_the_reason(never_returns):
    hung_sensors = sensors(clock_events=never_returns)
    hung_sensors.timeout_s = 0.05
    watches = []

    def window():
        with WindowWatch(hung_sensors, poll_s=0.01) as watch:
            time.sleep(0.05)
        watches.append(watch)
    finishes_within(3, window)
    result = watches[0].result()
    assert result["temperature_c"] == [50, None]  # read before the hang; after it nothing is asked
    assert "reading clock_events did not return within 0.05 s" in result["hung"]
    summary = summarize_conditions([result], hung_sensors)
    assert summary["hung"] == result["hung"] and summary["throttled"] is None  # unread is not calm


def test_cool_down_stops_waiting_once_the_sensors_hang(never_returns):
    hung_sensors = sensors(temperature_c=never_returns)
    hung_sensors.timeout_s = 0.05
    results = []
    finishes_within(3, lambda: results.append(wait_until_cool(lambda: hung_sensors.read("temperature_c"), 65,
                                                                timeout_s=60, poll_s=0.01,
                                                                hung=lambda: hung_sensors.hung)))
    assert results[0]["reached"] is False and "did not return" in results[0]["hung"]


def test_summary_flags_a_benchmark_throttled_in_any_window():
    windows = [{"temperature_c": [60, 66], "sm_clock_mhz": [1980, 1980], "mem_clock_mhz": [2619, 2619],
                "clock_events": ["gpu_idle"]},
               {"temperature_c": [66, 71], "sm_clock_mhz": [1980, 1755], "mem_clock_mhz": [2619, 2619],
                "clock_events": ["sw_power_cap", "applications_clocks_setting"]}]
    summary = summarize_conditions(windows, sensors())
    assert summary["temperature_c"] == [60, 71] and summary["sm_clock_mhz"] == [1980, 1755]
    assert summary["clock_events"] == ["gpu_idle", "sw_power_cap", "applications_clocks_setting"]
    assert summary["throttle_reasons"] == ["sw_power_cap"] and summary["throttled"] is True
    assert summary["windows"] == windows
    calm = summarize_conditions(windows[:1], sensors())
    assert calm["throttle_reasons"] == [] and calm["throttled"] is False


def test_summary_explains_what_could_not_be_read():
    window = {"sm_clock_mhz": [1980, 1980], "mem_clock_mhz": [2619, 2619]}
    summary = summarize_conditions([window], sensors({"temperature_c": "temperature_c: not supported on this GPU",
                                           "clock_events": "clock_events: permission denied"}))
    assert summary["temperature_c"] == {"unknown": True, "reason": "temperature_c: not supported on this GPU"}
    assert summary["throttle_reasons"]["unknown"] and "permission denied" in summary["throttle_reasons"]["reason"]
    assert summary["throttled"] is None
    nothing = summarize_conditions([{}], ConditionSensors.unavailable("nvmlInit: NVML library not found"))
    assert nothing == {"unknown": True, "reason": "nvmlInit: NVML library not found"}
    with pytest.raises(ValueError, match="windows"):
        summarize_conditions([], sensors())


def test_cool_down_polls_until_the_target_is_reached():
    clock = FakeClock()
    temperatures = iter([80, 75, None, 70, 64, 60])
    result = wait_until_cool(lambda: next(temperatures), target_c=65, timeout_s=60, poll_s=2,
                             clock=clock, sleep=clock.sleep)
    assert result == {"target_c": 65, "start_c": 80, "end_c": 64, "waited_s": 8, "reached": True}
    assert clock.slept == [2, 2, 2, 2]


def test_cool_down_gives_up_at_the_timeout():
    clock = FakeClock()
    result = wait_until_cool(lambda: 80, target_c=65, timeout_s=5, poll_s=2, clock=clock, sleep=clock.sleep)
    assert result["reached"] is False and result["end_c"] == 80
    assert result["waited_s"] == 5 and clock.slept == [2, 2, 1]
    unreadable = wait_until_cool(lambda: None, 65, 0, clock=clock, sleep=clock.sleep)
    assert unreadable["reached"] is False and unreadable["end_c"] is None


def test_cool_down_does_not_wait_when_already_cool():
    clock = FakeClock()
    assert wait_until_cool(lambda: 40, 65, 60, clock=clock, sleep=clock.sleep)["waited_s"] == 0
    assert clock.slept == []


@pytest.mark.parametrize("kwargs, error, match", [
    ({"target_c": "hot"}, TypeError, "target_c"),
    ({"timeout_s": float("inf")}, TypeError, "timeout_s"),
    ({"timeout_s": -1}, ValueError, "timeout_s"),
    ({"poll_s": 0}, ValueError, "poll_s"),
])
def test_bad_cool_down_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        wait_until_cool(lambda: 40, **{"target_c": 65, "timeout_s": 1, "poll_s": 1, **kwargs})


def bench(name, conditions):
    return {"name": name, "fullname": f"suites/test_kernels.py::{name}",
            "extra_info": {"energy": {"joules_per_call": 1.0, "conditions": conditions}}}


def test_throttled_benchmarks_lists_only_those_measured_while_throttled():
    run = {"benchmarks": [
        bench("test_kernel[gemm.train-torch-bf16-M4096]", {"throttled": True, "throttle_reasons": ["sw_power_cap"]}),
        bench("test_kernel[gemm.infer-torch-bf16-M16]", {"throttled": False, "throttle_reasons": []}),
        bench("test_kernel[softmax-torch-fp32-R64]", {"throttled": None, "throttle_reasons": {"unknown": True}}),
        bench("test_kernel[swiglu-torch-fp32-T64]", {"unknown": True, "reason": "no NVML"}),
        {"name": "test_kernel[interpreted]", "extra_info": {"energy": {"source": "none"}}},
        {"name": "test_plain", "extra_info": {}},
        bench("test_kernel[attention-triton-bf16-S2048]", {"throttled": True,
                                                           "throttle_reasons": ["hw_thermal_slowdown"]}),
    ]}
    assert throttled_benchmarks(run) == ["test_kernel[gemm.train-torch-bf16-M4096]",
                                         "test_kernel[attention-triton-bf16-S2048]"]
    assert throttled_benchmarks({"benchmarks": []}) == []


@pytest.mark.parametrize("run", [None, [], {"benchmarks": None}, {}])
def test_throttled_benchmarks_needs_a_run_file(run):
    with pytest.raises(TypeError, match="run"):
        throttled_benchmarks(run)

"""`wattbench select` over a sweep: the device and the setting, under median, TTFT and TPOT bounds; settings that
did not hold never win. Synthetic run files whose answers are known."""

import json

import pytest

from wattbench import cli
from wattbench.errors import UsageError
from wattbench.report.select import format_ranking, select_devices

H200, L4 = "TEST-FIXTURE NVIDIA H200", "TEST-FIXTURE NVIDIA L4"


def decode(setting, tokens_per_joule, tpot_ms, device=H200, held=True, ttft_ms=20.0):
    """An llm.decode record at `setting` (None: a plain run's, naming none)."""
    units = 32
    joules = units / tokens_per_joule
    info = {"workload": "llm.decode", "op": "llm", "style": "decode", "impl": "torch", "precision": "bf16",
            "size": "tiny-b32", "device": "cuda:0", "device_name": device, "interpreted": False, "unit": "tokens",
            "units_per_call": float(units), "median_s": tpot_ms / 1e3, "units_per_s": units / (tpot_ms / 1e3),
            "timing": {"method": "cuda_event", "rounds": 3, "samples_s": [tpot_ms / 1e3] * 3},
            "ttft_ms": {"p50": ttft_ms}, "tpot_ms": {"p50": tpot_ms},
            "energy": {"source": "nvml", "method": "counter", "joules_per_call": joules,
                       "joules_per_unit": 1 / tokens_per_joule, "units_per_joule": tokens_per_joule,
                       "avg_power_w": joules / (tpot_ms / 1e3), "uncertainty_pct": 1.0,
                       "setting": {"held": held, "reasons": [] if held else ["the SM clock is 1980 MHz"],
                                   "readbacks": []}}}
    if setting is not None:
        info["setting"] = setting
    return {"name": f"test_llm[{setting}]", "extra_info": info}


def run_file(tmp_path, name, records, device):
    path = tmp_path / name
    path.write_text(json.dumps({"benchmarks": records, "datetime": "2026-01-01T00:00:00+00:00",
                                "wattbench": {"started_utc": "2026-01-01T00:00:00+00:00", "device": "cuda:0",
                                              "device_name": device},
                                "machine_info": {"node": "host", "wattbench": {"host": "host"}}}))
    return path


@pytest.fixture
def runs(tmp_path):
    # Lower clocks: more tokens per joule, slower tokens; sm900mhz would win but did not hold.
    sweep = run_file(tmp_path, "h200.json", [decode("default", 10.0, 20.0), decode("sm1500mhz", 13.0, 30.0),
                                             decode("sm1200mhz", 15.0, 38.0), decode("sm1000mhz", 18.0, 45.0),
                                             decode("sm900mhz", 30.0, 39.0, held=False)], H200)
    plain = run_file(tmp_path, "l4.json", [decode(None, 12.0, 35.0, device=L4)], L4)
    return sweep, plain


def test_the_tpot_bound_picks_the_device_and_its_setting(runs):
    ranking = select_devices(list(runs), "llm.decode", max_tpot_ms=40)
    assert [(e.device_name, e.setting, e.value) for e in ranking.entries] == [(H200, "sm1200mhz", 15.0),
                                                                              (L4, "default", 12.0)]
    text = format_ranking(ranking)
    assert "TPOT p50 <= 40 ms" in text and "sm1200mhz" in text.splitlines()[3]
    assert any("sm900mhz" in note and "did not hold" in note for note in ranking.notes)


def test_each_bound_applies_and_a_bound_no_setting_meets_says_so(runs):
    assert select_devices(list(runs), "llm.decode").entries[0].setting == "sm1000mhz"
    assert select_devices(list(runs), "llm.decode", max_latency_ms=31).entries[0].setting == "sm1500mhz"
    tight = select_devices(list(runs), "llm.decode", max_ttft_ms=5)
    assert tight.entries == [] and "no device meets the bound" in format_ranking(tight)
    assert any("fastest TTFT p50 20 ms is over the 5 ms bound" in note for note in tight.notes)
    with pytest.raises(UsageError, match="--max-tpot-ms must be a positive number of milliseconds"):
        select_devices(list(runs), "llm.decode", max_tpot_ms=-1)


def test_select_on_the_command_line_names_the_device_and_setting(runs, capsys):
    assert cli.main(["select", *map(str, runs), "--workload", "llm.decode", "--max-tpot-ms", "40"]) == 0
    first = capsys.readouterr().out.splitlines()[3].split()
    assert first[0] == "1" and "H200" in first and "sm1200mhz" in first
    assert cli.main(["select", *map(str, runs), "--workload", "llm.decode", "--max-ttft-ms", "0"]) == 2
    assert capsys.readouterr().err == ("wattbench: error: --max-ttft-ms must be a positive number of milliseconds, "
                                       "got 0.0\n")

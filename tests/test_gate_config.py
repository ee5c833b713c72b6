"""Gate thresholds: defaults, [tool.wattbench.gate] in pyproject.toml, patterns, command-line overrides."""

import pytest

from wattbench.errors import UsageError
from wattbench.gate.config import GateConfig, load_config, parse_fraction

ATTENTION = "attention.train-triton-bf16-B4-H16-S1024-D64"
GEMM = "gemm.infer-torch-fp32-M16-K512-N512"


def project(tmp_path, text):
    (tmp_path / "pyproject.toml").write_text(text)
    (tmp_path / "sub").mkdir()
    return tmp_path / "sub"


def test_defaults_are_5_percent_time_5_percent_energy():
    config = GateConfig()
    assert (config.threshold(GEMM, "time"), config.threshold(GEMM, "energy")) == (0.05, 0.05)
    assert (config.drift, config.confidence, config.resamples, config.seed) == (0.0, 0.95, 2000, 0)


def test_pyproject_without_a_gate_table_gives_defaults(tmp_path):
    assert load_config(project(tmp_path, "[project]\nname = 'x'\n")) == GateConfig()


def test_global_per_metric_and_per_pattern_thresholds(tmp_path):
    folder = project(tmp_path, """
[tool.wattbench.gate]
time = "4%"
energy = 0.1
drift = "1.5%"
resamples = 500

[tool.wattbench.gate.patterns."attention.*"]
time = "10%"

[tool.wattbench.gate.patterns."*-bf16-*"]
time = "12%"
energy = "15%"
""")
    config = load_config(folder)
    assert config.threshold(GEMM, "time") == pytest.approx(0.04)
    assert config.threshold(GEMM, "energy") == pytest.approx(0.10)
    assert config.threshold(ATTENTION, "time") == pytest.approx(0.12)  # the later pattern wins
    assert config.threshold(ATTENTION, "energy") == pytest.approx(0.15)
    assert config.threshold("attention.infer-torch-fp32-S1", "time") == pytest.approx(0.10)
    assert (config.drift, config.resamples) == (pytest.approx(0.015), 500)
    assert "pyproject.toml" in config.source


def test_command_line_threshold_has_the_last_word(tmp_path):
    folder = project(tmp_path, '[tool.wattbench.gate.patterns."attention.*"]\ntime = "10%"\n')
    config = load_config(folder).with_overrides(time="2%", energy=None)
    assert config.threshold(ATTENTION, "time") == config.threshold(GEMM, "time") == pytest.approx(0.02)
    assert config.threshold(GEMM, "energy") == 0.05


@pytest.mark.parametrize("value, expected", [("5%", 0.05), (" 12.5% ", 0.125), (0.05, 0.05), ("0.05", 0.05), (0, 0.0)])
def test_parse_fraction_accepts_percentages_and_fractions(value, expected):
    assert parse_fraction(value, "time") == pytest.approx(expected)


@pytest.mark.parametrize("value, message", [
    (5, r"time: must lie in \[0%, 100%\), got 5"),
    ("150%", "must lie in"),
    ("-1%", "must lie in"),
    ("five", "expected a percentage like '5%'"),
    (True, "expected a percentage"),
    (None, "expected a percentage"),
])
def test_parse_fraction_rejects_malformed_thresholds(value, message):
    with pytest.raises(UsageError, match=message):
        parse_fraction(value, "time")


@pytest.mark.parametrize("table, message", [
    ('time = "lots"', "time: expected a percentage"),
    ('tim = "5%"', "unknown key 'tim'"),
    ('confidence = 2', "confidence: expected a number in"),
    ('resamples = 10', "resamples: expected an integer >= 100"),
    ('patterns = 3', "'patterns' must be a table"),
    ('[tool.wattbench.gate.patterns."x*"]\nspeed = "5%"', "expected a table of thresholds"),
])
def test_malformed_gate_tables_name_the_file_and_key(tmp_path, table, message):
    header = "" if table.startswith("[") else "[tool.wattbench.gate]\n"
    with pytest.raises(UsageError, match=message) as info:
        load_config(project(tmp_path, header + table + "\n"))
    assert "pyproject.toml" in str(info.value) and "\n" not in str(info.value)


def test_unreadable_toml_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read gate settings"):
        load_config(project(tmp_path, "[tool.wattbench.gate\n"))


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="metric must be one of"):
        GateConfig().threshold(GEMM, "power")
    with pytest.raises(UsageError, match="unknown gate metric 'power'"):
        GateConfig().with_overrides(power="5%")

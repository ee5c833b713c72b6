"""The accuracy budget: its defaults, its verdict on each figure, and `[tool.wattbench.accuracy]`."""

import math

import pytest

from wattbench.accuracy import Budget, load_budget
from wattbench.errors import UsageError


def test_inside_the_default_budget():
    budget = Budget()
    assert budget.outside({"accuracy": 0.037}) is None  # e4m3 at K = 4096
    assert budget.outside({"accuracy": 0.117}) is None  # int4, symmetric, groups of 128
    assert budget.outside({"top1_agreement": 0.95, "kl_divergence": 0.02}) is None
    assert budget.outside({}) is None and budget.outside({"accuracy": None, "top1_agreement": math.nan}) is None


@pytest.mark.parametrize("figures, words", [
    ({"accuracy": 0.2}, "relative error 0.2 > 0.15"),
    ({"accuracy": math.inf}, "relative error inf"),
    ({"top1_agreement": 0.8}, "top-1 agreement 0.8 < 0.9"),
    ({"kl_divergence": 0.5}, "KL divergence 0.5 > 0.1"),
])
def test_outside_the_budget_says_which_figure(figures, words):
    fields = Budget().fields(figures)
    assert fields["within_budget"] is False
    assert words in fields["accuracy_note"]


def test_the_pyproject_table_sets_the_budget(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.wattbench.accuracy]\ngemm_relative_error = 0.02\n")
    budget = load_budget(tmp_path)
    assert budget == Budget(gemm_relative_error=0.02)
    assert budget.outside({"accuracy": 0.037}) is not None


def test_no_table_is_the_defaults(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert load_budget(tmp_path) == Budget()


@pytest.mark.parametrize("body, words", [
    ("gemm_error = 0.1", "unknown key 'gemm_error'"),
    ("kl_divergence = -1", "non-negative number"),
    ("top1_agreement = 1.5", "fraction"),
    ("top1_agreement = 'high'", "non-negative number"),
])
def test_bad_tables_are_refused_in_one_line(tmp_path, body, words):
    (tmp_path / "pyproject.toml").write_text(f"[tool.wattbench.accuracy]\n{body}\n")
    with pytest.raises(UsageError, match=words):
        load_budget(tmp_path)

"""Inference latency metrics: percentiles and the TTFT / TPOT / ITL / E2E definitions."""

import numpy as np
import pytest

from wattbench.device import detect
from wattbench.metrics import FORMULAS, RequestTiming, latency_metrics, percentile, latency_percentiles
from wattbench.workloads import case_by_id


@pytest.mark.parametrize("q", [0, 1, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear_interpolation(q):
    values = list(np.random.default_rng(3).exponential(size=37))
    assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_of_nothing_is_refused():
    with pytest.raises(ValueError):
        percentile([], 50)
    assert latency_percentiles([]) is None


def test_latency_metrics_follow_their_definitions():
    # request A: starts at 0, tokens at 0.10, 0.12, 0.15; request B: starts at 1, tokens at 1.30, 1.40
    requests = [RequestTiming(0.0, (0.10, 0.12, 0.15)), RequestTiming(1.0, (1.30, 1.40))]
    m = latency_metrics(requests)
    assert m["ttft_ms"]["p50"] == pytest.approx(200.0)  # median of 100 and 300
    assert m["e2e_ms"]["p50"] == pytest.approx(275.0)  # median of 150 and 400
    # TPOT = (E2E - TTFT) / (tokens - 1): A (150-100)/2 = 25 ms, B (400-300)/1 = 100 ms
    assert m["tpot_ms"]["p50"] == pytest.approx(62.5)
    # ITL pools every gap: 20, 30 (A) and 100 (B)
    assert m["itl_ms"]["p50"] == pytest.approx(30.0)
    assert m["itl_ms"]["p99"] == pytest.approx(98.6)
    assert m["requests"] == 2 and m["formulas"] == FORMULAS


def test_single_token_requests_have_no_tpot_or_itl():
    m = latency_metrics([RequestTiming(0.0, (0.5,))])
    assert m["ttft_ms"]["p90"] == pytest.approx(500.0)
    assert m["tpot_ms"] is None and m["itl_ms"] is None


def test_generation_step_records_one_timeline_per_request():
    step = case_by_id("llm.generate-torch-fp32-tiny-B2-P32-T4").build(detect("cpu"), base_seed=0)
    step()
    step.reset()
    step()
    step()
    metrics = step.metrics()
    assert metrics["requests"] == 4  # two rounds of a batch of two
    assert all(len(r.token_times_s) == 4 for r in step.requests)
    assert 0 < metrics["ttft_ms"]["p50"] <= metrics["e2e_ms"]["p50"]
    assert metrics["itl_ms"]["p99"] > 0


def test_mfu_divides_achieved_by_the_spec_peak_of_the_precision():
    from wattbench.metrics import model_flops_utilization
    from wattbench.specs import load_specs

    spec = next(s for s in load_specs().devices if s.peak_for("bf16"))
    result = model_flops_utilization(100.0, spec.name, "bf16", interpreted=False)
    assert result["mfu"] == pytest.approx(100.0 / spec.peak_for("bf16"))
    assert "6N + 12" in result["mfu_formula"]


def test_mfu_is_withheld_with_a_reason():
    from wattbench.metrics import model_flops_utilization

    assert model_flops_utilization(1.0, "no such device", "bf16", False)["mfu_reason"].startswith("no bf16 peak")
    assert "interpreter" in model_flops_utilization(1.0, "x", "fp32", True)["mfu_reason"]

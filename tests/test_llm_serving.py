"""llm.decode as served: through StaticDecoder, CUDA graphs by default on a (simulated) GPU, eager when asked
and on a CPU; cases that cannot fit the device's memory skipped with the memory check's reason."""

import pytest
import torch

from simulated_cuda import SimulatedCuda
from wattbench.device import Device
from wattbench.models.ops import TORCH
from wattbench.models.transformer import MODEL_CONFIGS, KVCache
from wattbench.workloads import Context, Size, case_by_id, workloads
from wattbench.workloads.llm import GPU_BATCHES, decode_flops, prefill_flops, weight_bytes

CPU = torch.device("cpu")
ON_CPU = Device("cpu", None, "cpu")
GPU0 = Device("cuda", 0, "Simulated H100")
DECODE = next(w for w in workloads() if w.name == "llm.decode")
PARAMS = {"model": "tiny", "B": 3, "P": 9, "T": 5}


def decode_step(context, params=PARAMS):
    inputs = DECODE.make_inputs(params, "fp32", CPU, torch.Generator().manual_seed(0))
    inputs["context"] = context  # the model on the CPU; the simulated GPU runs (and captures) its ops
    return inputs, DECODE.impls["torch"](inputs)


def old_eager_loop(inputs):
    """The decode step as it was: prefill, then `Transformer.decode` at the cache's length."""
    model = inputs["model"]
    cache = KVCache(model.config, inputs["prompt"].shape[0], torch.float32, CPU)
    with torch.no_grad():
        token = model(inputs["prompt"], TORCH, cache, last_only=True).argmax(-1)
        for _ in range(inputs["new_tokens"]):
            logits = model.decode(token, cache, TORCH)
            token = logits.argmax(-1)
    return logits


def test_decode_runs_eagerly_on_a_cpu_and_each_call_decodes_the_same_tokens():
    inputs, step = decode_step(Context(ON_CPU))
    first = step().clone()
    assert torch.equal(step(), first)  # every call restarts from the prompt
    assert torch.equal(first, old_eager_loop(inputs))
    assert step.metrics() == {"decode": "eager"}


def test_decode_replays_one_graph_on_a_gpu_unless_eager_decode_is_asked(monkeypatch):
    sim = SimulatedCuda(devices=1, replay_ops=True).install(monkeypatch)
    inputs, step = decode_step(Context(GPU0))
    assert len(sim.graphs) == 1  # one graph for the case's batch size, captured when the step is built
    nodes = [name for name, _, _ in next(iter(sim.graphs.values())).nodes]
    with GPU0.current():
        graphed = step().clone()
        replays = len(sim.launched("replay:" + nodes[0])) / nodes.count(nodes[0])
        assert torch.equal(step(), graphed)
    assert replays == PARAMS["T"]  # one replay per token
    assert step.metrics() == {"decode": "cuda_graph"}
    assert torch.equal(graphed, old_eager_loop(inputs))
    _, eager = decode_step(Context(GPU0, eager_decode=True))
    assert len(sim.graphs) == 1 and eager.metrics() == {"decode": "eager"}


def test_a_case_that_cannot_fit_is_skipped_with_the_memory_checks_reason(monkeypatch):
    SimulatedCuda(devices=1).install(monkeypatch)  # 80 GB
    params = {"model": "llama3.1-70b", "B": 512, "P": 512, "T": 64}
    with pytest.raises(pytest.skip.Exception, match=r"llama3.1-70b at batch 512 does not fit: needs .* GB: weights "
                                                    r"141\.\d GB .* the device has 85\.9 GB"):
        DECODE.make_inputs(params, "bf16", torch.device("cuda:0"), torch.Generator())


def test_the_batch_curves_points_and_their_accounting_from_the_model_configs():
    for name in ("llm.prefill", "llm.decode"):
        full = [case_by_id(f"{name}-torch-bf16-{Size({'model': 'llama3.1-8b', 'B': b, 'P': 512, **({'T': 64} if name == 'llm.decode' else {})}).name}")
                for b in GPU_BATCHES]
        assert [case.size.params["B"] for case in full] == [1, 8, 32, 64, 128, 256, 512]
        assert all(case.size.presets == ("full",) for case in full)
    config = MODEL_CONFIGS["llama3.1-8b"]
    p = {"model": "llama3.1-8b", "B": 8, "P": 512, "T": 64}
    assert weight_bytes(p, "bf16") == config.weight_bytes(2) and round(config.parameter_count() / 1e9, 2) == 8.03
    assert prefill_flops(p) == 8 * config.prefill_flops(512)
    assert decode_flops(p) == 8 * sum(config.forward_flops_per_token(512 + t + 1) for t in range(64))


def test_the_compiled_decode_compiles_the_models_torch_step_and_decodes_its_tokens():
    case = case_by_id("llm.decode-compiled-fp32-tiny-B4-P32-T4")
    compiled_step = case.build(ON_CPU, 0)
    reference = case_by_id("llm.decode-torch-fp32-tiny-B4-P32-T4").build(ON_CPU, 0)
    torch.testing.assert_close(compiled_step(), reference(), rtol=1e-4, atol=1e-5)
    metrics = compiled_step.metrics()
    assert metrics["decode"] == "eager" and metrics["compile"] == {"mode": "default", "backend": "inductor"}
    assert metrics["compile_s"] > 0


def test_whole_requests_decode_through_the_static_decoder_and_say_how():
    step = case_by_id("llm.generate-torch-fp32-tiny-B2-P32-T4").build(ON_CPU, 0)
    step.reset()
    step()
    metrics = step.metrics()
    assert metrics["decode"] == "eager" and metrics["tpot_ms"]["p50"] > 0


def test_a_scenario_that_cannot_fit_is_skipped_too(monkeypatch):
    SimulatedCuda(devices=1).install(monkeypatch)  # 80 GB: 70B bf16 weights alone are 141 GB
    server = next(w for w in workloads() if w.name == "scenario.server")
    params = {"model": "llama3.1-70b", "N": 64, "B": 64, "P": 512, "T": 64, "rate": 16}
    with pytest.raises(pytest.skip.Exception, match=r"llama3.1-70b at batch 64 does not fit: .*64 × 2048 positions"):
        server.make_inputs(params, "bf16", torch.device("cuda:0"), torch.Generator())


def test_interpreted_triton_draws_no_cpu_curve_beyond_batch_4():
    from wattbench.workloads import cases

    on_cpu = [c for c in cases("quick", ON_CPU) if c.workload.name in ("llm.prefill", "llm.decode")]
    assert {c.size.params["B"] for c in on_cpu if c.impl == "torch"} == {1, 4, 16}
    assert {c.size.params["B"] for c in on_cpu if c.impl == "triton"} == {1, 4}

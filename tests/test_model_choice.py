"""--wattbench-model: every transformer case on a shipped config or a user's JSON config, refused in one line when
bad; the other workloads untouched."""

import json

import pytest

from wattbench import workloads
from wattbench.config import from_command
from wattbench.device import Device
from wattbench.errors import UsageError
from wattbench.models.transformer import MODEL_CONFIGS

CPU = Device("cpu", None, "cpu")


@pytest.fixture
def registry(monkeypatch):
    """The registry and the model configs as they are, put back after the test (use_model rewrites the one, a
    user's config joins the other)."""
    workloads.workloads()
    monkeypatch.setattr(workloads, "_REGISTRY", dict(workloads._REGISTRY))
    configs = dict(MODEL_CONFIGS)
    yield
    MODEL_CONFIGS.clear()
    MODEL_CONFIGS.update(configs)
    workloads._case_index.cache_clear()


def test_every_transformer_case_runs_the_chosen_model(registry):
    before = workloads.cases("quick", CPU)
    config, _ = from_command("cpu", None, None, ["--wattbench-model", "qwen3-8b"])
    assert config.model == "qwen3-8b"
    workloads.use_model("qwen3-8b")
    after = workloads.cases("quick", CPU)
    transformer = [case for case in after if case.workload.op == "transformer"]
    assert transformer and {case.size.params["model"] for case in transformer} == {"qwen3-8b"}
    assert [c.id for c in after if c.workload.op != "transformer"] == [c.id for c in before
                                                                     if c.workload.op != "transformer"]
    assert workloads.case_by_id("llm.decode-torch-fp32-qwen3-8b-B16-P32-T4").size.params["B"] == 16


def test_a_user_json_config_joins_the_model_configs(registry, tmp_path):
    path = tmp_path / "mini.json"
    path.write_text(json.dumps({"name": "mini", "vocab": 256, "dim": 32, "layers": 1, "heads": 2, "kv_heads": 1,
                                "ffn": 64, "max_seq": 64}))
    config, _ = from_command("cpu", None, None, ["--wattbench-model", str(path)])
    assert config.model == str(path) and MODEL_CONFIGS["mini"].dim == 32
    workloads.use_model("mini")
    step = workloads.case_by_id("llm.decode-torch-fp32-mini-B1-P32-T4").build(CPU, 0)
    assert step().shape == (1, 256)


@pytest.mark.parametrize("content, message", [
    (None, "not a model config"),
    ("{", "cannot read it as JSON"),
    ('{"vocab": 8, "dims": 4}', "unknown field"),
    ('{"vocab": 8, "dim": 4, "layers": 1, "heads": 3, "kv_heads": 2, "ffn": 8, "max_seq": 8}', "multiple of kv_heads"),
    ('{"name": "tiny", "vocab": 8, "dim": 4, "layers": 1, "heads": 2, "kv_heads": 1, "ffn": 8, "max_seq": 8}',
     "shipped config with other shapes"),
])
def test_a_bad_model_is_refused_in_one_line(tmp_path, content, message):
    given = "llama9" if content is None else tmp_path / "bad.json"
    if content is not None:
        given.write_text(content)
    with pytest.raises(UsageError, match=message):
        from_command("cpu", None, None, ["--wattbench-model", str(given)])


def test_the_session_applies_the_runs_model(registry):
    from wattbench.session import RunState

    config, _ = from_command("cpu", None, None, ["--wattbench-model", "llama3.1-8b"])
    RunState.start(config)
    models = {case.size.params["model"] for case in workloads.cases("quick", CPU) if case.workload.op == "transformer"}
    assert models == {"llama3.1-8b"}

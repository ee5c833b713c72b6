"""The model a run's transformer cases use (`--wattbench-model`): a shipped config's name or a user's JSON file.

A JSON file holds the fields of `TransformerConfig` (vocab, dim, layers, heads, kv_heads, ffn, max_seq, and
optionally rope_theta, norm_eps, head_dim, tied_embeddings, qk_norm, max_positions) and a "name" (default: the
file's stem), under which it joins MODEL_CONFIGS for the run. Weights are random, as for every config.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from wattbench.errors import UsageError
from wattbench.models.transformer import MODEL_CONFIGS, TransformerConfig


def resolve_model(text: str) -> str:
    """The MODEL_CONFIGS name `text` gives: a shipped name as it is, or a JSON config file's, registered."""
    if text in MODEL_CONFIGS:
        return text
    path = Path(text)
    if path.suffix != ".json":
        raise UsageError(f"--wattbench-model {text!r}: not a model config ({', '.join(MODEL_CONFIGS)}) or a .json file")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--wattbench-model {text}: cannot read it as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--wattbench-model {text}: expected a JSON object of TransformerConfig fields")
    name = str(data.pop("name", path.stem))
    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise UsageError(f"--wattbench-model {text}: unknown field(s) {', '.join(unknown)}; "
                         f"TransformerConfig has {', '.join(sorted(fields))}")
    try:
        config = TransformerConfig(**data)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--wattbench-model {text}: {exc}") from None
    if MODEL_CONFIGS.get(name, config) != config:
        raise UsageError(f"--wattbench-model {text}: the name {name!r} is a shipped config with other shapes; "
                         "give the file another \"name\"")
    MODEL_CONFIGS[name] = config
    return name

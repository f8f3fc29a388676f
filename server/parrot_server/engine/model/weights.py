"""HF checkpoint tensor names -> our parameter names, fusing q/k/v and gate/up on the way."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .config import ModelConfig


def from_hf_state_dict(
    config: ModelConfig,
    hf: Mapping[str, Any],
    cat: Callable[[Sequence[Any]], Any] = torch.cat,
) -> dict[str, Any]:
    """KeyError names the first HF tensor that is missing. Extra tensors are ignored (e.g. an
    lm_head.weight saved next to tied embeddings). `cat` fuses along rows: `torch.cat` for
    dense tensors; weights kept as blocks bring their own."""
    out = {
        "embed_tokens.weight": hf["model.embed_tokens.weight"],
        "norm.weight": hf["model.norm.weight"],
    }
    if not config.tie_word_embeddings:
        out["lm_head.weight"] = hf["lm_head.weight"]
    for i in range(config.num_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        attn, mlp = src + "self_attn.", src + "mlp."
        out[dst + "attn_norm.weight"] = hf[src + "input_layernorm.weight"]
        out[dst + "mlp_norm.weight"] = hf[src + "post_attention_layernorm.weight"]
        out[dst + "qkv.weight"] = cat([hf[f"{attn}{p}_proj.weight"] for p in "qkv"])
        if config.attention_bias:
            out[dst + "qkv.bias"] = cat([hf[f"{attn}{p}_proj.bias"] for p in "qkv"])
        out[dst + "o_proj.weight"] = hf[attn + "o_proj.weight"]
        if config.output_bias:
            out[dst + "o_proj.bias"] = hf[attn + "o_proj.bias"]
        out[dst + "gate_up.weight"] = cat(
            [hf[mlp + "gate_proj.weight"], hf[mlp + "up_proj.weight"]]
        )
        out[dst + "down.weight"] = hf[mlp + "down_proj.weight"]
    return out

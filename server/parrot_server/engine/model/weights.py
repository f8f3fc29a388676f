"""HF checkpoint tensor names -> our parameter names, fusing q/k/v and gate/up on the way."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .config import ModelConfig


def from_hf_state_dict(config: ModelConfig, hf: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """KeyError names the first HF tensor that is missing. Extra tensors are ignored (e.g. an
    lm_head.weight saved next to tied embeddings)."""
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
        out[dst + "qkv.weight"] = torch.cat([hf[f"{attn}{p}_proj.weight"] for p in "qkv"])
        if config.attention_bias:
            out[dst + "qkv.bias"] = torch.cat([hf[f"{attn}{p}_proj.bias"] for p in "qkv"])
        out[dst + "o_proj.weight"] = hf[attn + "o_proj.weight"]
        if config.output_bias:
            out[dst + "o_proj.bias"] = hf[attn + "o_proj.bias"]
        out[dst + "gate_up.weight"] = torch.cat(
            [hf[mlp + "gate_proj.weight"], hf[mlp + "up_proj.weight"]]
        )
        out[dst + "down.weight"] = hf[mlp + "down_proj.weight"]
    return out

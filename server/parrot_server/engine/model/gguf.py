"""GGUF -> HF-format directory (config.json, model.safetensors, tokenizer files).

Done once per file; the loader then reads the directory like any HF checkpoint. Tensors are
dequantised with the `gguf` package and renamed to HF names; llama.cpp's converter interleaves
the rows of Q and K for llama-arch models (its RoPE pairs adjacent dims), which is undone here
so the HF "rotate_half" RoPE applies.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from safetensors.torch import save_file

from ..progress import progress
from .config import ModelConfig, RopeScaling, RopeScalingKind
from .errors import ModelLoadError, UnsupportedModelError
from .rope import base_inv_freq, llama3_inv_freq

log = logging.getLogger(__name__)

ARCHITECTURES = ("llama", "qwen2")  # general.architecture values we read (Mistral is "llama")
_PERMUTED_QK = ("llama",)  # archs whose Q/K rows llama.cpp interleaved

_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
Q = gguf.GGMLQuantizationType
# Quantised blocks (scale * int + min) are not exact in 16 bits: those become fp32.
_KEEP_DTYPE = {Q.F16: torch.float16, Q.BF16: torch.bfloat16}


def read_gguf(path: Path) -> gguf.GGUFReader:
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise ModelLoadError(path, f"not a readable GGUF file ({exc})") from exc
    arch = gguf_field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise UnsupportedModelError(path, str(arch))
    return reader


def gguf_field(reader: gguf.GGUFReader, key: str, default: Any = None) -> Any:
    field = reader.get_field(key)
    if field is None:
        return default
    value = field.contents()
    if field.types == [gguf.GGUFValueType.FLOAT32]:
        # Give back the short decimal the fp32 was written from (1e-05, not 9.9999997e-06).
        return float(str(np.float32(value)))
    return value


def hf_config(path: Path, reader: gguf.GGUFReader) -> dict[str, Any]:
    """The HF config.json dict the GGUF describes."""
    arch = gguf_field(reader, "general.architecture")

    def meta(key: str, default: Any = None) -> Any:
        return gguf_field(reader, f"{arch}.{key}", default)

    tensors = {t.name: t for t in reader.tensors}
    hidden, heads = meta("embedding_length"), meta("attention.head_count")
    head_dim = meta("attention.key_length") or meta("rope.dimension_count") or hidden // heads
    theta = meta("rope.freq_base", 10000.0)
    max_pos = meta("context_length", 4096)
    rope_scaling = None
    kind = meta("rope.scaling.type", "none")
    if kind == "linear":
        rope_scaling = {"rope_type": "linear", "factor": meta("rope.scaling.factor")}
    elif kind != "none":
        raise UnsupportedModelError(path, arch, f"rope scaling {kind!r} is not supported")
    if "rope_freqs.weight" in tensors:  # llama 3.1+: per-frequency divisors instead of metadata
        t = tensors["rope_freqs.weight"]
        freqs = torch.tensor(gguf.quants.dequantize(t.data, t.tensor_type))
        rope_scaling = _llama3_from_freq_factors(path, freqs, head_dim, theta)
    # End of text, of turn, of message: instruct models stop on any of them.
    eos = [gguf_field(reader, f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")]
    return {
        "model_type": arch,
        "vocab_size": int(tensors["token_embd.weight"].shape[1]),
        "hidden_size": hidden,
        "intermediate_size": meta("feed_forward_length"),
        "num_hidden_layers": meta("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": meta("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "rms_norm_eps": meta("attention.layer_norm_rms_epsilon", 1e-6),
        "rope_theta": theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": max_pos,
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "bos_token_id": gguf_field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": list(dict.fromkeys(i for i in eos if i is not None)),
    }


def _llama3_from_freq_factors(
    path: Path, factors: torch.Tensor, head_dim: int, theta: float
) -> dict[str, Any]:
    """llama.cpp stores Llama 3.1's scaling as the factor each frequency is divided by. All
    Llama 3.x releases use low=1, high=4, original context 8192 and vary `factor` only."""
    s = RopeScaling(RopeScalingKind.LLAMA3, float(factors.max()))
    base = base_inv_freq(head_dim, theta)
    if not torch.allclose(base / llama3_inv_freq(base, s), factors.float(), rtol=1e-3):
        raise UnsupportedModelError(path, "llama", "rope_freqs do not follow llama3 scaling")
    return s.to_hf()


def _hf_name(name: str) -> str | None:
    """GGUF tensor name -> HF name; None for tensors that carry no weights of ours."""
    if name == "rope_freqs.weight":
        return None  # folded into the config's rope_scaling
    stem, _, kind = name.rpartition(".")
    if stem in _GLOBAL_TENSORS:
        return f"{_GLOBAL_TENSORS[stem]}.{kind}"
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)", stem)
    if m and m[2] in _LAYER_TENSORS:
        return f"model.layers.{m[1]}.{_LAYER_TENSORS[m[2]]}.{kind}"
    raise KeyError(name)


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp's permute: within each head, rows (2i, 2i+1) go back to (i, i+d/2)."""
    return w.reshape(heads, -1, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _same(rows: np.ndarray) -> np.ndarray:
    return rows


def gguf_tensors(
    path: Path, reader: gguf.GGUFReader, config: ModelConfig
) -> Iterator[tuple[str, Any, Callable[[np.ndarray], np.ndarray]]]:
    """Each weight tensor as (HF name, GGUF tensor, row order): `row order` maps the tensor's
    rows (dequantised values or whole rows of blocks alike) to HF layout."""
    arch = gguf_field(reader, "general.architecture")
    for t in reader.tensors:
        try:
            name = _hf_name(t.name)
        except KeyError:
            raise UnsupportedModelError(path, arch, f"unknown tensor {t.name!r}") from None
        if name is None:
            continue
        rows = _same
        if arch in _PERMUTED_QK and ".attn_q." in t.name:
            rows = partial(_unpermute, heads=config.num_heads)
        elif arch in _PERMUTED_QK and ".attn_k." in t.name:
            rows = partial(_unpermute, heads=config.num_kv_heads)
        yield name, t, rows


def hf_state_dict(
    path: Path, reader: gguf.GGUFReader, config: ModelConfig
) -> dict[str, torch.Tensor]:
    """Dequantise every tensor (showing progress) into HF names and layout."""
    out: dict[str, torch.Tensor] = {}
    tensors = list(gguf_tensors(path, reader, config))
    for name, t, rows in progress(tensors, f"dequantising {path.name}", "tensor", log):
        w = rows(gguf.quants.dequantize(t.data, t.tensor_type))
        tensor = torch.from_numpy(w.copy() if not w.flags.writeable else np.ascontiguousarray(w))
        out[name] = tensor.to(_KEEP_DTYPE.get(t.tensor_type, torch.float32))
    return out


def load_gguf_tokenizer(path: Path) -> Any:
    """transformers rebuilds a fast tokenizer (with chat template) from the GGUF vocabulary."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True
        )
    except Exception as exc:  # transformers raises many kinds for unsupported tokenizers
        raise ModelLoadError(path, f"cannot build the tokenizer from the GGUF ({exc})") from exc
    if tok.chat_template is None:
        tok.chat_template = gguf_field(read_gguf(path), "tokenizer.chat_template")
    return tok


def convert_gguf(path: Path, out_dir: Path) -> None:
    """Write the HF-format directory for `path` into `out_dir` (which must exist)."""
    reader = read_gguf(path)
    hf = hf_config(path, reader)
    try:
        config = ModelConfig.from_hf_config(hf)
    except (ValueError, KeyError, TypeError) as exc:
        raise UnsupportedModelError(path, hf["model_type"], str(exc)) from exc
    state = hf_state_dict(path, reader, config)
    missing = [k for k in ("model.embed_tokens.weight", "model.norm.weight") if k not in state]
    if missing:
        raise ModelLoadError(path, f"GGUF lacks tensors {missing}")
    save_file(state, out_dir / "model.safetensors", metadata={"format": "pt"})
    del state
    (out_dir / "config.json").write_text(json.dumps(config.to_hf_config(), indent=2) + "\n")
    load_gguf_tokenizer(path).save_pretrained(out_dir)

"""The model package on real files: GGUF conversion and cache, safetensors dirs, our forward
against transformers (logits and greedy decoding), rope scaling, and load errors."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from model_helpers import PROMPTS, chat_ids, greedy, logits_of
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)

from parrot_server.engine.model import (
    DenseCausalAttention,
    ModelConfig,
    ModelLoadError,
    ModelNotFoundError,
    RopeScalingKind,
    UnsupportedModelError,
    default_model_path,
    load_model,
)
from parrot_server.engine.model.loader import gguf_cache_dir
from parrot_server.engine.model.rope import base_inv_freq, inv_freq

# fp32 logits (magnitudes ~20) summed in another order than transformers sums them: a few
# units in the last place, which reached 1.07e-4 in a full run.
TOL = 2e-4


# -- the default model ---------------------------------------------------------------------------


def test_default_model(loaded_model):
    assert default_model_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert loaded_model.name == "SmolLM2-135M-Instruct"
    assert loaded_model.path == default_model_path()
    c = loaded_model.config
    assert (c.architecture, c.num_layers, c.hidden_size) == ("llama", 30, 576)
    assert (c.num_heads, c.num_kv_heads, c.head_dim, c.rope_theta) == (9, 3, 64, 1e5)
    assert c.tie_word_embeddings and c.rope_scaling is None and c.rms_norm_eps == 1e-5
    assert (c.bos_token_id, c.eos_token_ids) == (1, (2,))
    m = loaded_model.model
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert {p.dtype for p in m.parameters()} == {torch.float32}
    assert "<|im_start|>" in loaded_model.chat_template
    assert loaded_model.tokenizer.decode(loaded_model.tokenizer.encode("Hi there")) == "Hi there"


def test_converted_dir_matches_transformers(dense_model):
    """transformers loads our converted cache as a plain HF model (checks to_hf_config and the
    tensor names) and computes the same logits as our fp32 forward."""
    hf = AutoModelForCausalLM.from_pretrained(
        gguf_cache_dir(dense_model.path), dtype=torch.float32
    ).eval()
    ids = dense_model.tokenizer.encode(" ".join(PROMPTS))
    with torch.inference_mode():
        ref = hf(torch.tensor([ids])).logits[0]
    assert (logits_of(dense_model.model, ids) - ref).abs().max().item() <= TOL


def test_flattened_requests_are_independent(loaded_model):
    """Two sequences in one forward (as the engine batches them), each attending only to
    itself, give the logits each gives alone."""
    a = chat_ids(loaded_model.tokenizer, PROMPTS[0])
    b = loaded_model.tokenizer.encode(PROMPTS[1])

    class PerRequest(DenseCausalAttention):
        def __call__(self, layer, q, k, v):
            n, dense = len(a), super().__call__
            return torch.cat([dense(layer, q[:n], k[:n], v[:n]), dense(layer, q[n:], k[n:], v[n:])])

    model = loaded_model.model
    positions = torch.cat([torch.arange(len(a)), torch.arange(len(b))])
    both = model.compute_logits(model(torch.tensor(a + b), positions, PerRequest()))
    alone = torch.cat([logits_of(model, a), logits_of(model, b)])
    assert (both - alone).abs().max().item() <= TOL


# -- parity with transformers' own GGUF loading --------------------------------------------------


@pytest.fixture(scope="session")
def hf_gguf_model():
    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return model.eval()


@pytest.mark.slow
def test_tokenizer_matches_transformers_gguf(loaded_model):
    """Our cached tokenizer files behave as transformers' tokenizer built from the GGUF."""
    path = default_model_path()
    ref = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ours = loaded_model.tokenizer
    text = "Hello, world! 123 naïve café\n\n<|im_start|>user"
    assert ours.encode(text) == ref.encode(text)
    assert ours.encode(text)[0] != ours.bos_token_id  # this GGUF says add_bos_token = false
    messages = [{"role": "user", "content": PROMPTS[0]}]
    assert chat_ids(loaded_model.tokenizer, PROMPTS[0]) == ref.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert loaded_model.chat_template == ref.chat_template
    for special in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(ours, special) == getattr(ref, special)


@pytest.mark.slow
def test_logits_match_transformers_gguf(dense_model, hf_gguf_model):
    tok = dense_model.tokenizer
    prompts = [chat_ids(dense_model.tokenizer, p) for p in PROMPTS]
    prompts.append(tok.encode("The quick brown fox jumps over the lazy dog. " * 30))
    worst = 0.0
    for ids in prompts:
        with torch.inference_mode():
            ref = hf_gguf_model(torch.tensor([ids])).logits[0].float()
        worst = max(worst, (logits_of(dense_model.model, ids) - ref).abs().max().item())
    assert worst <= TOL


@pytest.mark.slow
def test_greedy_matches_transformers_generate(dense_model, hf_gguf_model):
    eos = dense_model.config.eos_token_ids
    for question in PROMPTS:
        ids = chat_ids(dense_model.tokenizer, question)
        with torch.inference_mode():
            out = hf_gguf_model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=20,
                eos_token_id=list(eos),
                pad_token_id=eos[0],
            )
        expected = out[0, len(ids) :].tolist()
        assert greedy(dense_model.model, ids, 20, eos) == expected
        assert len(expected) >= 5


# -- the GGUF cache ------------------------------------------------------------------------------


@pytest.mark.slow
def test_gguf_conversion_is_cached(loaded_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PARROT_CACHE_DIR", str(tmp_path))
    start = time.perf_counter()
    cold = load_model(loaded_model.path, gemm_dtype=torch.float32)  # as loaded_model
    cold_s = time.perf_counter() - start
    (cache,) = tmp_path.iterdir()  # one finished dir, no temp dir left behind
    assert not cache.name.startswith(".")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "parrot.json"):
        assert (cache / name).is_file()
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}

    start = time.perf_counter()
    warm = load_model(loaded_model.path, gemm_dtype=torch.float32)
    warm_s = time.perf_counter() - start
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    assert warm_s < cold_s / 2, (cold_s, warm_s)
    assert warm.config == cold.config == loaded_model.config
    ids = chat_ids(loaded_model.tokenizer, PROMPTS[0])
    assert torch.equal(logits_of(warm.model, ids), logits_of(loaded_model.model, ids))
    assert warm.chat_template == loaded_model.chat_template


# -- HF safetensors directories with random weights ------------------------------------------------

TINY = dict(
    vocab_size=49152,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)
# Llama 3.1's values: with theta 5e5, a 16-dim head has frequencies below, inside and above
# the smooth band.
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
TINY_CONFIGS = {
    "llama-llama3-rope": LlamaConfig(**TINY, rope_scaling=LLAMA3_ROPE),
    "llama-linear-rope-bias": LlamaConfig(
        **TINY, rope_scaling={"rope_type": "linear", "factor": 4.0}, attention_bias=True
    ),
    "qwen2-tied": Qwen2Config(**TINY, tie_word_embeddings=True),
    "mistral": MistralConfig(**TINY, head_dim=32),
}


def tiny_hf_model(config):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # norms near 1, biases non-zero: every weight matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module", params=list(TINY_CONFIGS))
def tiny(request, tmp_path_factory, loaded_model):
    path = tmp_path_factory.mktemp(request.param)
    hf = tiny_hf_model(TINY_CONFIGS[request.param])
    hf.save_pretrained(path)
    loaded_model.tokenizer.save_pretrained(path)
    return hf, load_model(path)


def test_safetensors_dir_matches_transformers(tiny):
    hf, loaded = tiny
    ids = torch.randint(0, TINY["vocab_size"], (300,), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = hf(ids[None]).logits[0]
    ours = logits_of(loaded.model, ids.tolist())
    assert ref.std() > 0.1  # the comparison is not between near-zero numbers
    assert (ours - ref).abs().max().item() <= TOL


def test_safetensors_dir_config(tiny):
    hf, loaded = tiny
    c = loaded.config
    assert c.architecture == hf.config.model_type
    assert loaded.name == loaded.path.name
    assert c.attention_bias == (
        c.architecture == "qwen2" or getattr(hf.config, "attention_bias", False)
    )
    assert ModelConfig.from_hf_config(c.to_hf_config()) == c
    assert loaded.chat_template and "<|im_start|>" in loaded.chat_template
    # Our RoPE frequencies are transformers' own, scaling included.
    assert torch.equal(inv_freq(c), hf.model.rotary_emb.inv_freq)
    if c.rope_scaling and c.rope_scaling.kind is RopeScalingKind.LLAMA3:
        divisor = base_inv_freq(c.head_dim, c.rope_theta) / inv_freq(c)
        assert ((divisor > 1.01) & (divisor < c.rope_scaling.factor - 0.01)).any()  # the band


# -- GGUF files we write ourselves, as llama.cpp's converter would ----------------------------------

GGUF_LAYER = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
GGUF_GLOBAL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def gguf_tensor_name(hf_name: str) -> str:
    stem, _, kind = hf_name.rpartition(".")
    if stem in GGUF_GLOBAL:
        return f"{GGUF_GLOBAL[stem]}.{kind}"
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", stem)
    return f"blk.{m[1]}.{GGUF_LAYER[m[2]]}.{kind}"


def llama_cpp_permute(t: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp pairs adjacent dims in RoPE, so its converter interleaves each head's halves."""
    return t.reshape(heads, 2, -1, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)


def llama3_rope_freqs(head_dim: int, theta: float, s: dict) -> np.ndarray:
    """The divisor of each frequency, as llama.cpp's converter stores Llama 3.1 scaling."""
    ctx, low, high = (
        s["original_max_position_embeddings"],
        s["low_freq_factor"],
        s["high_freq_factor"],
    )
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * theta ** (i / head_dim)
        smooth = (ctx / wavelen - low) / (high - low)
        if wavelen < ctx / high:
            out.append(1.0)
        elif wavelen > ctx / low:
            out.append(s["factor"])
        else:
            out.append(1 / ((1 - smooth) / s["factor"] + smooth))
    return np.array(out, dtype=np.float32)


def finish(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_gguf(path: Path, hf, template: gguf.GGUFReader, arch: str = "llama") -> None:
    """`hf` as a GGUF with F32 tensors; the tokenizer is copied from `template`."""
    c = hf.config
    rope = c.rope_parameters
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny {arch}")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_rope_dimension_count(head_dim)
    if rope["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    elif rope["rope_type"] == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_freqs(head_dim, rope["rope_theta"], rope))
    field = lambda key: template.fields[key].contents()  # noqa: E731
    w.add_tokenizer_model(field("tokenizer.ggml.model"))
    w.add_tokenizer_pre(field("tokenizer.ggml.pre"))
    w.add_token_list(field("tokenizer.ggml.tokens"))
    w.add_token_types(field("tokenizer.ggml.token_type"))
    w.add_token_merges(field("tokenizer.ggml.merges"))
    w.add_bos_token_id(field("tokenizer.ggml.bos_token_id"))
    w.add_eos_token_id(field("tokenizer.ggml.eos_token_id"))
    w.add_add_bos_token(False)
    w.add_chat_template(field("tokenizer.chat_template"))
    for name, t in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        gname, t = gguf_tensor_name(name), t.numpy()
        if arch == "llama" and ".attn_q." in gname:
            t = llama_cpp_permute(t, c.num_attention_heads)
        elif arch == "llama" and ".attn_k." in gname:
            t = llama_cpp_permute(t, c.num_key_value_heads)
        w.add_tensor(gname, np.ascontiguousarray(t))
    finish(w)


@pytest.fixture(scope="module")
def smollm_gguf():
    return gguf.GGUFReader(default_model_path())


@pytest.mark.slow  # transformers takes ~5 s to build a tokenizer from a GGUF
def test_gguf_file_matches_transformers(tiny, smollm_gguf, tmp_path):
    """Our GGUF reading (names, Q/K un-permutation, rope metadata, tied output, qkv bias) gives
    back the HF model the GGUF was written from."""
    hf, from_dir = tiny
    arch = "qwen2" if hf.config.model_type == "qwen2" else "llama"  # llama.cpp: Mistral is llama
    path = tmp_path / "tiny.F32.gguf"
    write_gguf(path, hf, smollm_gguf, arch)
    loaded = load_model(path, cache_dir=tmp_path / "cache")
    assert loaded.name == "tiny"
    assert loaded.config.rope_scaling == from_dir.config.rope_scaling
    assert loaded.config.tie_word_embeddings == hf.config.tie_word_embeddings
    assert loaded.chat_template == from_dir.chat_template
    ids = torch.randint(0, TINY["vocab_size"], (300,), generator=torch.Generator().manual_seed(2))
    converted = AutoModelForCausalLM.from_pretrained(
        gguf_cache_dir(path, tmp_path / "cache"), dtype=torch.float32
    ).eval()
    with torch.inference_mode():
        ref = hf(ids[None]).logits[0]
        ref_converted = converted(ids[None]).logits[0]
    assert (logits_of(loaded.model, ids.tolist()) - ref).abs().max().item() <= TOL
    assert (ref_converted - ref).abs().max().item() <= TOL  # our config.json says it right


# -- errors ----------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match="nope.gguf") as info:
        load_model(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ModelLoadError)
    assert info.value.path == missing


def test_unsupported_gguf_architecture(tmp_path):
    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    finish(w)
    cache = tmp_path / "cache"
    with pytest.raises(UnsupportedModelError, match="gpt2") as info:
        load_model(path, cache_dir=cache)
    assert str(path) in str(info.value) and info.value.architecture == "gpt2"
    assert not any(cache.iterdir())  # the failed conversion left nothing behind


def test_not_a_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelLoadError, match="model.gguf"):
        load_model(path, cache_dir=tmp_path / "cache")


def test_unsupported_hf_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(UnsupportedModelError, match="bert") as info:
        load_model(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_unsupported_hf_feature(tmp_path):
    config = LlamaConfig(**TINY, hidden_act="gelu").to_dict()
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="gelu"):
        load_model(tmp_path)


def test_hf_dir_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LlamaConfig(**TINY).to_dict()))
    with pytest.raises(ModelNotFoundError, match="safetensors") as info:
        load_model(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_dir_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(tmp_path)

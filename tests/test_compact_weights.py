"""The default model with its GGUF blocks kept in memory (the engine's default on CPU) against
the same model expanded to fp32: memory, logits, greedy tokens, perplexity, and the fallback
when the kernel cannot be built."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from model_helpers import PROMPTS, chat_ids, greedy, logits_of

from parrot_kernels import cpu_ops, quant_matmul
from parrot_server.engine.model import LoadedModel, load_model
from parrot_server.engine.model.compact import QuantEmbedding, QuantLinear, keep_dense_weights
from parrot_server.engine.sampling_params import SamplingParams

# The block kernel sums in another order than the dense GEMM; the largest logit difference seen
# against the dequantised fp32 model is about 5e-5 (logits span tens).
LOGIT_TOL = 1e-3
HELD_TEXT = Path(__file__).resolve().parents[1] / "cookbook" / "data"


@pytest.fixture(scope="module")
def compact(loaded_model: LoadedModel) -> LoadedModel:
    if not cpu_ops.loaded():
        pytest.skip(f"block kernel unavailable: {cpu_ops.unavailable_reason()}")
    return loaded_model


def _model_bytes(loaded: LoadedModel) -> int:
    """The weights' memory, less the dense copies kept for prompt GEMMs."""
    tensors = [*loaded.model.parameters(), *loaded.model.buffers()]
    copies = sum(m.dense_bytes for m in loaded.model.modules() if isinstance(m, QuantLinear))
    return sum(t.numel() * t.element_size() for t in tensors) - copies


@contextlib.contextmanager
def _without_dense_copies(model: torch.nn.Module) -> Iterator[list[QuantLinear]]:
    """The model's block linears with their dense copies dropped, then given back (a buffer:
    monkeypatch would delete it on undo)."""
    kept = {m: m.dense for m in model.modules() if isinstance(m, QuantLinear)}
    for module in kept:
        module.dense = None
    try:
        yield list(kept)
    finally:
        for module, dense in kept.items():
            module.dense = dense


def test_weights_stay_blocks_and_fit_in_1_5x_the_file(compact, dense_model):
    model = compact.model
    assert isinstance(model.embed_tokens, QuantEmbedding)  # Q8_0, also the tied LM head
    linears = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(linears) == 4 * compact.config.num_layers
    assert {m.kind.name for m in linears} == {"Q4_1"}
    assert compact.weights.startswith("GGUF blocks Q4_1, Q8_0")
    assert dense_model.weights == "float32"
    file_size = compact.path.stat().st_size
    assert _model_bytes(compact) <= 1.5 * file_size
    assert _model_bytes(dense_model) > 4 * file_size  # what expansion costs


@pytest.fixture
def block_kernel_only(monkeypatch):
    """Every matmul through the block kernel, however many rows (prefill too)."""
    monkeypatch.setattr(quant_matmul, "DENSE_ROWS", 1 << 30)


def test_logits_match_the_dequantised_model(compact, dense_model, block_kernel_only):
    tok = compact.tokenizer
    prompts = [chat_ids(compact.tokenizer, p) for p in PROMPTS]
    prompts.append(tok.encode("The quick brown fox jumps over the lazy dog. " * 30))
    for ids in prompts:
        got, want = logits_of(compact.model, ids), logits_of(dense_model.model, ids)
        assert (got - want).abs().max().item() <= LOGIT_TOL


@pytest.mark.slow
def test_greedy_tokens_equal_the_dequantised_model(compact, dense_model, block_kernel_only):
    eos = compact.config.eos_token_ids
    for question in PROMPTS:
        ids = chat_ids(compact.tokenizer, question)
        want = greedy(dense_model.model, ids, 20, eos)
        assert len(want) >= 5
        assert greedy(compact.model, ids, 20, eos) == want


@pytest.mark.slow
def test_engine_decode_steps_follow_the_dequantised_model(compact, dense_model, make_engine):
    # A decode step multiplies one row per request through the compiled layers and the LM head,
    # x rounded to 16-bit integers on the vector paths. Against the fp32 model fed the same
    # tokens: each token's log-probability within 1e-2, and each token its greedy choice unless
    # that choice was a near tie (which any rounding may flip).
    engine = make_engine(speculative_tokens=0)  # drafts would verify several rows
    for question in PROMPTS:
        ids = chat_ids(compact.tokenizer, question)
        sampling = SamplingParams(max_new_tokens=20, temperature=0, logprobs=True)
        [out] = engine.generate([ids], sampling)
        got = out.new_token_ids
        assert len(got) >= 5
        logp = torch.log_softmax(logits_of(dense_model.model, ids + got)[len(ids) - 1 :], -1)
        for i, token in enumerate(got):
            best, second = logp[i].topk(2).values.tolist()
            assert token == int(logp[i].argmax()) or best - second < NEAR_TIE, (question, i)
            assert abs(out.logprobs[i].logprob - logp[i, token].item()) <= 1e-2, (question, i)


NEAR_TIE = 1e-2  # log-probability between the two likeliest tokens


def _perplexity(loaded: LoadedModel, ids: list[int]) -> float:
    logits = logits_of(loaded.model, ids)[:-1]
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]))
    return math.exp(nll.item())


def test_perplexity_of_a_held_text_within_half_a_percent(compact, dense_model, block_kernel_only):
    text = "\n".join(p.read_text() for p in sorted(HELD_TEXT.glob("*.md")))
    ids = compact.tokenizer.encode(text)[:512]
    assert len(ids) == 512
    got, want = _perplexity(compact, ids), _perplexity(dense_model, ids)
    assert 1 < want < 100  # a real text, scored by a real model
    assert abs(got / want - 1) <= 0.005, (got, want)


@pytest.fixture
def gemm_in_bfloat16(compact, monkeypatch):
    """Prefill's many-row matmuls in bfloat16, whatever this CPU's faster type."""
    with _without_dense_copies(compact.model) as linears:  # its copies are fp32
        for module in linears:
            monkeypatch.setattr(module, "gemm_dtype", torch.bfloat16)
        yield


def test_a_bfloat16_prefill_gemm_keeps_perplexity_within_half_a_percent(
    compact, dense_model, gemm_in_bfloat16
):
    text = "\n".join(p.read_text() for p in sorted(HELD_TEXT.glob("*.md")))
    for n in (512, 1024):
        ids = compact.tokenizer.encode(text)[:n]
        assert len(ids) == n  # every layer's matmuls take the dense GEMM (n >= DENSE_ROWS)
        got, want = _perplexity(compact, ids), _perplexity(dense_model, ids)
        assert abs(got / want - 1) <= 0.005, (n, got, want)


@pytest.mark.slow
def test_a_bfloat16_prefill_gemm_keeps_the_greedy_answers(compact, dense_model, gemm_in_bfloat16):
    eos = compact.config.eos_token_ids
    passage = sorted(HELD_TEXT.glob("*.md"))[0].read_text()[:600]
    for question in PROMPTS[:2]:
        ids = chat_ids(compact.tokenizer, f"{passage}\n\n{question}")
        assert len(ids) >= quant_matmul.DENSE_ROWS  # the prompt takes the bf16 GEMM
        want = greedy(dense_model.model, ids, 8, eos)
        assert greedy(compact.model, ids, 8, eos) == want


def test_prompt_gemms_over_the_kept_copies_give_the_logits_of_dequantising_each_time(compact):
    linears = [m for m in compact.model.modules() if isinstance(m, QuantLinear)]
    assert all(m.dense is not None and m.dense.dtype is m.gemm_dtype for m in linears)
    assert f"dense copies of {len(linears)}/{len(linears)} weights" in compact.weights
    ids = compact.tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 30)
    assert len(ids) >= quant_matmul.DENSE_ROWS  # every matmul takes the dense GEMM
    kept = logits_of(compact.model, ids)
    with _without_dense_copies(compact.model):
        assert torch.equal(logits_of(compact.model, ids), kept)  # the same values and GEMM


def test_dense_copies_are_kept_from_the_first_layer_on_within_the_budget(compact):
    with _without_dense_copies(compact.model) as linears:
        _check_budget(compact.model, linears)


def _check_budget(model: torch.nn.Module, linears: list[QuantLinear]) -> None:
    assert keep_dense_weights(model, 0) == 0
    assert all(m.dense is None for m in linears)
    sizes = [m.out_features * m.in_features * m.gemm_dtype.itemsize for m in linears]
    assert min(sizes) > sizes[5] // 2
    budget = sum(sizes[:5]) + sizes[5] // 2  # five weights and half of the sixth
    used = keep_dense_weights(model, budget)
    assert used == sum(sizes[:5])
    assert [m.dense is not None for m in linears] == [True] * 5 + [False] * (len(linears) - 5)
    assert keep_dense_weights(model, budget) == used  # kept copies count, none added
    for m in linears[:5]:
        want = quant_matmul.dequantize(m.qweight, m.kind, m.in_features, m.gemm_dtype)
        assert torch.equal(m.dense, want)


def test_by_default_the_prefill_gemm_takes_the_faster_type_and_says_so(compact):
    auto = load_model()
    faster = quant_matmul.fastest_dense_dtype()
    assert {m.gemm_dtype for m in auto.model.modules() if isinstance(m, QuantLinear)} == {faster}
    assert f"prefill GEMM {str(faster).removeprefix('torch.')}" in auto.weights
    assert "prefill GEMM float32" in compact.weights  # the tests' model: pinned to fp32
    kept = {m.dense.dtype for m in auto.model.modules() if isinstance(m, QuantLinear)}
    assert kept == {faster}


@pytest.mark.slow
def test_without_the_kernel_the_model_is_loaded_in_fp32(tmp_path):
    """PARROT_CPU_EXTENSION=0 (as where no compiler exists): float32 weights and a warning."""
    code = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "from parrot_server.engine.model import load_model\n"
        "print('weights:', load_model().weights)\n"
    )
    env = {**os.environ, "PARROT_CPU_EXTENSION": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "weights: float32" in proc.stdout
    assert "expanded to float32" in proc.stderr

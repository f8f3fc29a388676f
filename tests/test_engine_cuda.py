"""The default model and the engine on a CUDA GPU (skipped without one): fp32 on the GPU computes
what fp32 on the CPU does, the engine's batching, prefix cache and Triton shared-prefix kernels
decode what its plain path does, constrained decoding (JSON schema) on the GPU engine gives the
CPU engine's tokens, and the half-precision types still answer."""

from __future__ import annotations

import json

import pytest
import torch
from model_helpers import PROMPTS, QUESTIONS, chat_ids, logits_of, small_engine
from structured_schemas import PERSON

from parrot_server.engine.model import LoadedModel, load_model
from parrot_server.engine.request import FinishKind
from parrot_server.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GREEDY = SamplingParams(max_new_tokens=16, temperature=0)
# fp32 on the GPU sums in another order than on the CPU (no TF32: torch's default).
LOGIT_TOL = 2e-3


@pytest.fixture(scope="module")
def cuda_model() -> LoadedModel:
    return load_model(dtype=torch.float32, device="cuda")


def test_model_on_the_gpu_computes_what_it_computes_on_the_cpu(dense_model, cuda_model):
    assert {p.device.type for p in cuda_model.model.parameters()} == {"cuda"}
    assert cuda_model.weights == "float32"
    tok = dense_model.tokenizer
    prompts = [chat_ids(tok, p) for p in PROMPTS]
    prompts.append(tok.encode("The quick brown fox jumps over the lazy dog. " * 30))
    for ids in prompts:
        want, got = logits_of(dense_model.model, ids), logits_of(cuda_model.model, ids)
        assert (got - want).abs().max().item() <= LOGIT_TOL
        assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_engine_on_the_gpu_decodes_what_the_cpu_engine_decodes(dense_model, cuda_model):
    cpu, gpu = small_engine(dense_model), small_engine(cuda_model)
    assert gpu.runner.device.type == "cuda"
    prompts = [chat_ids(cpu.tokenizer, q) for q in QUESTIONS]
    want = [o.new_token_ids for o in cpu.generate(prompts, GREEDY)]
    alone = [gpu.generate([p], GREEDY)[0].new_token_ids for p in prompts]
    gpu.flush_cache()
    together = gpu.generate(prompts, GREEDY)
    assert [o.new_token_ids for o in together] == alone == want
    assert "Paris" in together[0].new_text
    # Again from the prefix cache: the prompts' KV is reused on the GPU.
    again = gpu.generate(prompts, GREEDY)
    assert [o.new_token_ids for o in again] == want
    assert all(o.cached_tokens > 0 for o in again)


def test_preemption_on_the_gpu_keeps_greedy_output(cuda_model):
    """A pool too small for every request at once: some are preempted and recomputed."""
    sampling = SamplingParams(max_new_tokens=40, temperature=0, ignore_eos=True)
    roomy = small_engine(cuda_model)
    prompts = [chat_ids(roomy.tokenizer, q) for q in QUESTIONS[:3]]
    expected = [o.new_token_ids for o in roomy.generate(prompts, sampling)]
    # Three prompts of ~40 tokens each, 40 new tokens each: 240 slots needed, 170 available.
    tight = small_engine(cuda_model, kv_pool_tokens=170)
    assert [o.new_token_ids for o in tight.generate(prompts, sampling)] == expected
    assert tight.stats().preemptions_total >= 1


def test_triton_shared_prefix_kernels_decode_what_the_plain_path_does(cuda_model):
    """Forks of one cached document: with the kernel on, each step's forks attend to the
    document together through the Triton kernels (prefill and decode); the tokens are those of
    the plain per-request path."""

    def run(min_tokens: int) -> tuple[list[list[int]], int]:
        eng = small_engine(
            cuda_model, shared_prefix_min_tokens=min_tokens, shared_prefix_prefill=True
        )
        if min_tokens:
            from parrot_kernels import triton_shared_prefix  # needs triton: imported on a GPU

            assert eng.runner.kernels is triton_shared_prefix
        doc = " ".join(f"Fact {i}: the number {i} squared is {i * i}." for i in range(60))
        eng.submit(eng.encode(doc), context_id="doc", prefill_only=True)
        eng.run_until_idle()
        outs: dict[int, list[int]] = {}
        for i, q in enumerate(QUESTIONS):
            eng.submit(
                eng.encode(f" Question {i}: {q}"),
                GREEDY,
                parent_context_id="doc",
                on_output=lambda o, i=i: outs.setdefault(i, []).extend(o.new_token_ids),
            )
        eng.run_until_idle()
        return [outs[i] for i in range(len(QUESTIONS))], eng.stats().shared_prefix_queries_total

    shared, used = run(64)
    plain, unused = run(0)
    assert shared == plain
    assert used >= len(QUESTIONS) * 5 and unused == 0


def test_json_schema_on_the_gpu_decodes_what_the_cpu_engine_decodes(dense_model, cuda_model):
    """The grammar's token masks on the GPU engine's logits, alone and beside a free row of the
    same batch: valid JSON for the schema, and the CPU engine's tokens at temperature 0. (The
    runner copies the sampled rows' logits to the CPU before masking, so xgrammar applies its
    bitmask to CPU tensors here too; its CUDA kernels are not used.)"""
    cpu, gpu = small_engine(dense_model), small_engine(cuda_model)
    ask = chat_ids(cpu.tokenizer, "Describe a person named Ann, aged 31, who has a cat, as JSON.")
    free = chat_ids(cpu.tokenizer, QUESTIONS[0])
    person = SamplingParams(json_schema=PERSON, max_new_tokens=60, temperature=0)
    [want] = cpu.generate([ask], person)
    [want_free] = cpu.generate([free], GREEDY)

    [alone] = gpu.generate([ask], person)
    assert alone.finish_reason.kind is FinishKind.STOP
    value = json.loads(alone.new_text)
    assert set(value) == {"name", "age", "pets"}
    assert isinstance(value["name"], str) and len(value["name"]) <= 20
    assert isinstance(value["age"], int) and 0 <= value["age"] <= 150
    assert len(value["pets"]) <= 2 and set(value["pets"]) <= {"cat", "dog", "fish"}
    assert alone.new_token_ids == want.new_token_ids

    gpu.flush_cache()
    outs: dict[str, list[int]] = {}
    for rid, prompt, sampling in (("json", ask, person), ("free", free, GREEDY)):
        gpu.submit(
            prompt,
            sampling,
            rid=rid,
            on_output=lambda o: outs.setdefault(o.rid, []).extend(o.new_token_ids),
        )
    gpu.run_until_idle()
    assert outs == {"json": want.new_token_ids, "free": want_free.new_token_ids}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_on_the_gpu_answers(dense_model, dtype):
    """Rounding differs from fp32, so only the first tokens and the answer are compared."""
    loaded = load_model(dtype=dtype, device="cuda")
    assert {p.dtype for p in loaded.model.parameters()} == {dtype}
    ids = chat_ids(dense_model.tokenizer, QUESTIONS[0])
    assert (
        logits_of(loaded.model, ids)[-1].argmax() == logits_of(dense_model.model, ids)[-1].argmax()
    )
    [out] = small_engine(loaded).generate([ids], GREEDY)
    assert "Paris" in out.new_text

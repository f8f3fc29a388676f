"""The embedded engine on the real SmolLM2 model: batching, prefix cache, eviction, preemption,
sampling, contexts and bad input. Small sizes, one model load per session."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
from model_helpers import QUESTIONS, chat_ids

from parrot_kernels import cpu_shared_prefix
from parrot_kernels import shared_prefix as torch_shared_prefix
from parrot_kernels.paged_attention import paged_decode_attention
from parrot_server.engine import paged_attention
from parrot_server.engine.engine import Engine
from parrot_server.engine.errors import (
    ContextBusyError,
    ContextNotFoundError,
    EngineOverloadedError,
    InvalidRequestError,
    PromptTooLongError,
)
from parrot_server.engine.kv_pool import KVPool
from parrot_server.engine.paged_attention import _read, _slot_source
from parrot_server.engine.request import FinishKind
from parrot_server.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(max_new_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def engine(make_engine) -> Engine:
    return make_engine()


def chat(engine: Engine, question: str) -> list[int]:
    return chat_ids(engine.tokenizer, question)


def long_prefix(engine: Engine, n: int) -> list[int]:
    text = " ".join(f"Fact {i}: the number {i} squared is {i * i}." for i in range(400))
    ids = engine.encode(text)
    assert len(ids) >= n
    return ids[:n]


def test_greedy_answer_is_sensible(engine):
    [out] = engine.generate([chat(engine, QUESTIONS[0])], GREEDY)
    assert "Paris" in out.new_text
    assert out.completion_tokens == len(out.new_token_ids) <= 12


def test_batched_equals_one_at_a_time(make_engine):
    eng = make_engine()
    prompts = [chat(eng, q) for q in QUESTIONS]
    alone = [eng.generate([p], GREEDY)[0].new_token_ids for p in prompts]
    eng.flush_cache()
    together = [o.new_token_ids for o in eng.generate(prompts, GREEDY)]
    assert together == alone


def test_shared_prefix_is_computed_once(make_engine):
    eng = make_engine()
    prefix = long_prefix(eng, 500)
    first = eng.generate([prefix + eng.encode(" Question one?")], GREEDY)[0]
    assert first.cached_tokens == 0
    steps_before = eng.stats().steps_total
    suffix = eng.encode(" Question two, a different one?")
    second = eng.generate([prefix + suffix], SamplingParams(max_new_tokens=1, temperature=0))[0]
    assert second.cached_tokens >= 500
    # Only the suffix was computed: one step (max_step_tokens=256 < 500 would need two otherwise).
    assert eng.stats().steps_total - steps_before == 1


def test_requests_arriving_together_compute_a_shared_prefix_once(make_engine):
    """Prompts sharing a long prefix, submitted together (one step could take them all): one
    computes the prefix, the others wait for its KV and compute only their questions; each
    answers what it answers alone."""
    eng = make_engine(max_step_tokens=2048)
    prefix = long_prefix(eng, 500)
    prompts = [prefix + eng.encode(f" Question {i}: {q}") for i, q in enumerate(QUESTIONS[:3])]
    alone = []
    for p in prompts:
        alone.append(eng.generate([p], GREEDY)[0].new_token_ids)
        eng.flush_cache()
    steps_before = eng.stats().steps_total
    together = eng.generate(prompts, GREEDY)
    assert [o.new_token_ids for o in together] == alone
    assert sorted(o.cached_tokens for o in together) >= [0, len(prefix), len(prefix)]
    # The prefix step, then the questions with the first request's first decode.
    assert eng.stats().steps_total - steps_before <= 1 + max(len(a) for a in alone) + 1


def test_namespaces_do_not_share_kv(make_engine):
    eng = make_engine()
    prompt = long_prefix(eng, 64)
    eng.generate([prompt], GREEDY, namespace="tenant-a")
    other = eng.generate([prompt], GREEDY, namespace="tenant-b")[0]
    same = eng.generate([prompt], GREEDY, namespace="tenant-a")[0]
    assert other.cached_tokens == 0
    assert same.cached_tokens >= 63


def test_tiny_pool_evicts_old_prefixes(make_engine):
    eng = make_engine(kv_pool_tokens=160)
    a, b = long_prefix(eng, 100), [t + 1 for t in long_prefix(eng, 100)]
    eng.generate([a], SamplingParams(max_new_tokens=2, temperature=0))
    assert eng.stats().cached_tokens >= 100
    eng.generate([b], SamplingParams(max_new_tokens=2, temperature=0))  # needs a's slots
    assert eng.stats().kv_used_tokens <= 160
    again = eng.generate([a], SamplingParams(max_new_tokens=2, temperature=0))[0]
    assert again.cached_tokens < 100  # a was evicted to make room for b


@pytest.mark.slow
def test_preemption_round_trip_keeps_greedy_output(make_engine):
    sampling = SamplingParams(max_new_tokens=40, temperature=0, ignore_eos=True)
    roomy = make_engine()
    prompts = [chat(roomy, q) for q in QUESTIONS[:3]]
    expected = [o.new_token_ids for o in roomy.generate(prompts, sampling)]
    # Three prompts of ~40 tokens each, 40 new tokens each: 240 slots needed, 170 available.
    tight = make_engine(kv_pool_tokens=170)
    got = [o.new_token_ids for o in tight.generate(prompts, sampling)]
    assert tight.stats().preemptions_total >= 1
    assert got == expected


def test_seed_determinism(engine):
    p = chat(engine, "Tell me a short story.")
    s = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.9, top_k=50, sampling_seed=1234)
    a, b = engine.generate([p], s)[0], engine.generate([p], s)[0]
    c = engine.generate([p], SamplingParams(max_new_tokens=16, temperature=1.0, sampling_seed=99))[
        0
    ]
    assert a.new_token_ids == b.new_token_ids
    assert c.new_token_ids != a.new_token_ids


def test_stop_string_and_stop_token(engine):
    p = engine.encode("Count: 1, 2, 3, 4, 5, 6, 7, 8,")
    out = engine.generate([p], SamplingParams(max_new_tokens=20, temperature=0, stop=(" 11",)))[0]
    assert out.finish_reason.kind is FinishKind.STOP and out.finish_reason.matched == " 11"
    assert " 11" not in out.new_text and "10" in out.new_text
    first = engine.generate([p], SamplingParams(max_new_tokens=1, temperature=0))[0].new_token_ids[
        0
    ]
    out = engine.generate(
        [p], SamplingParams(max_new_tokens=20, temperature=0, stop_token_ids=(first,))
    )[0]
    assert out.finish_reason.matched == first and out.new_token_ids == [first]
    out = engine.generate([p], SamplingParams(max_new_tokens=3, temperature=0, ignore_eos=True))[0]
    assert out.finish_reason.kind is FinishKind.LENGTH and out.completion_tokens == 3


def test_contexts_fill_fork_generate_free(make_engine):
    eng = make_engine()
    system = long_prefix(eng, 200)
    eng.submit(system, context_id="sys", prefill_only=True)
    eng.run_until_idle()
    assert eng.contexts["sys"].tokens == system
    used_with_context = eng.stats().kv_used_tokens
    eng.flush_cache()  # a context's KV is locked: flushing keeps it
    assert eng.stats().kv_used_tokens == used_with_context
    outs = {}
    for name in ("a", "b"):
        eng.submit(
            eng.encode(f" Now answer as {name}:"),
            GREEDY,
            context_id=name,
            parent_context_id="sys",
            on_output=lambda o, n=name: outs.setdefault(n, []).append(o),
        )
    eng.run_until_idle()
    assert all(o[-1].cached_tokens >= 200 for o in outs.values())
    assert eng.contexts["a"].tokens[:200] == system and len(eng.contexts["a"].tokens) > 200
    # Appending to a context reuses all of its KV.
    follow = []
    eng.submit(eng.encode(" And then?"), GREEDY, context_id="a", on_output=follow.append)
    eng.run_until_idle()
    assert follow[-1].cached_tokens >= len(eng.contexts["a"].tokens) - 30
    for name in ("a", "b", "sys"):
        eng.free_context(name)
    assert eng.stats().kv_free_tokens == eng.config.kv_pool_tokens  # all evictable again
    with pytest.raises(ContextNotFoundError):
        eng.free_context("sys")


def test_context_busy_and_missing_parent(engine):
    engine.submit([1, 2, 3], context_id="busy", prefill_only=True)
    with pytest.raises(ContextBusyError):
        engine.submit([4], GREEDY, context_id="busy")
    with pytest.raises(ContextNotFoundError):
        engine.submit([4], GREEDY, context_id="x", parent_context_id="nope")
    engine.run_until_idle()
    engine.free_context("busy")


def test_abort_frees_everything(make_engine):
    eng = make_engine()
    req = eng.submit(chat(eng, QUESTIONS[2]), SamplingParams(max_new_tokens=50, temperature=0))
    for _ in range(3):
        eng.step()
    assert eng.stats().running_requests == 1
    assert eng.abort(req.rid)
    assert not eng.has_work()
    assert eng.stats().kv_free_tokens == eng.config.kv_pool_tokens
    assert req.finish_reason.kind is FinishKind.ABORT


def test_bad_input_gets_typed_errors(make_engine):
    eng = make_engine(kv_pool_tokens=256, max_context_len=128, max_queued_requests=2)
    with pytest.raises(PromptTooLongError, match="context window is 128"):
        eng.submit(list(range(1, 129)), GREEDY)
    with pytest.raises(PromptTooLongError, match="KV slots"):
        make_engine(kv_pool_tokens=64).submit(list(range(1, 40)), SamplingParams(max_new_tokens=40))
    with pytest.raises(InvalidRequestError, match="empty"):
        eng.submit([], GREEDY)
    with pytest.raises(InvalidRequestError, match="token ids"):
        eng.submit([10**9], GREEDY)
    for bad in (dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=1.2), dict(top_k=0)):
        with pytest.raises(InvalidRequestError):
            eng.submit([1, 2], SamplingParams(**bad))
    eng.submit([1, 2], GREEDY, rid="dup")
    with pytest.raises(InvalidRequestError, match="already in flight"):
        eng.submit([1, 2], GREEDY, rid="dup")
    eng.submit([1, 2], GREEDY)
    with pytest.raises(EngineOverloadedError):
        eng.submit([1, 2], GREEDY)
    eng.run_until_idle()


# Questions of one token length: their decodes share the prefix with equal suffix lengths,
# which the kernel takes without a mask.
SAME_LENGTH = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 5?"]


@pytest.fixture(params=["extension", "torch"])
def cpu_kernels(request) -> ModuleType:
    """The CPU shared-prefix backends: the compiled decode (skipped where it cannot be built)
    and the torch path."""
    if request.param == "torch":
        return torch_shared_prefix
    if not cpu_shared_prefix.load():
        pytest.skip(f"CPU extension unavailable: {cpu_shared_prefix.unavailable_reason()}")
    return cpu_shared_prefix


@pytest.mark.parametrize("questions", [QUESTIONS, SAME_LENGTH], ids=["ragged", "same-length"])
def test_shared_prefix_kernel_gives_identical_greedy_output(make_engine, questions, cpu_kernels):
    def run(min_tokens: int):
        # No drafts: a decode with a draft does not read a shared prefix through the kernel.
        eng = make_engine(
            shared_prefix_min_tokens=min_tokens, shared_prefix_prefill=True, speculative_tokens=0
        )
        if min_tokens:
            assert eng.runner.kernels is cpu_shared_prefix  # what the engine picks on CPU
            eng.runner.kernels = cpu_kernels
        lengths = {len(eng.encode(f" Question {i}: {q}")) for i, q in enumerate(questions)}
        assert (len(lengths) == 1) == (questions is SAME_LENGTH)
        eng.submit(long_prefix(eng, 300), context_id="doc", prefill_only=True)
        eng.run_until_idle()
        rounds, prefill_shared = [], []
        for _ in range(2):  # round 2 also matches each question's own cached continuation
            outs: dict[int, list[int]] = {}
            for i, q in enumerate(questions):
                eng.submit(
                    eng.encode(f" Question {i}: {q}"),
                    SamplingParams(max_new_tokens=12, temperature=0),
                    parent_context_id="doc",
                    on_output=lambda o, i=i, outs=outs: outs.setdefault(i, []).extend(
                        o.new_token_ids
                    ),
                )
            before = eng.stats().shared_prefix_queries_total
            eng.step()  # the forks' question tokens, prefilled together in one step
            prefill_shared.append(eng.stats().shared_prefix_queries_total - before)
            eng.run_until_idle()
            rounds.append([outs[i] for i in range(len(questions))])
        assert rounds[0] == rounds[1]
        return rounds[0], prefill_shared, eng.stats().shared_prefix_queries_total

    shared, prefill_shared, used = run(64)
    plain, _, unused = run(0)
    assert shared == plain
    # Round 1 prefills every question's tokens through the kernel (round 2 has one token each).
    assert prefill_shared[0] >= len(questions) * 5
    # Every decode step with >= 2 requests still running went through the kernel too.
    assert used >= prefill_shared[0] + 2 * 2 * (min(len(o) for o in shared) - 1)
    assert unused == 0


def test_plain_decode_attention_paths_give_identical_greedy_output(make_engine, monkeypatch):
    """The compiled paged decode attention and the torch path (a view for one request, a padded
    gather for a batch) decode the same tokens, alone and batched."""
    calls = []

    def compiled(*args):
        out = paged_decode_attention(*args)
        calls.append(out is not None)
        return out

    # Layers op by op, so that attention is called from Python (see the next test).
    monkeypatch.setattr(paged_attention.PagedAttention, "decode_kv", lambda self, layer: None)

    def run(attention) -> tuple[list[list[int]], list[int]]:
        monkeypatch.setattr(paged_attention, "paged_decode_attention", attention)
        eng = make_engine(shared_prefix_min_tokens=0)  # fresh: a lone request's slots are a run
        prompts = [chat(eng, q) for q in QUESTIONS]
        alone = eng.generate([prompts[0]], GREEDY)[0].new_token_ids
        eng.flush_cache()
        return [o.new_token_ids for o in eng.generate(prompts, GREEDY)], alone

    with_kernel = run(compiled)
    assert calls and all(calls)  # the kernel ran (the model is fp32 on CPU)
    assert run(lambda *args: None) == with_kernel


def test_decode_steps_as_one_compiled_call_decode_what_op_by_op_does(
    make_engine, loaded_model, monkeypatch
):
    """With block weights, a decode-only step runs every layer in one compiled call; alone and
    batched it decodes the tokens the layers run op by op do."""
    if loaded_model.model.compiled_decode is None:
        pytest.skip("the model's weights are not blocks (no compiled extension)")
    real = paged_attention.PagedAttention.decode_kv
    offered = []

    def counted(self, layer):
        kv = real(self, layer)
        offered.append(kv is not None)
        return kv

    def run() -> tuple[list[list[int]], list[int]]:
        eng = make_engine(shared_prefix_min_tokens=0)
        prompts = [chat(eng, q) for q in QUESTIONS]
        alone = eng.generate([prompts[0]], GREEDY)[0].new_token_ids
        eng.flush_cache()
        return [o.new_token_ids for o in eng.generate(prompts, GREEDY)], alone

    monkeypatch.setattr(paged_attention.PagedAttention, "decode_kv", counted)
    compiled = run()
    assert any(offered) and not all(offered)  # decode steps took it, prefill steps did not
    offered.clear()
    # Layer by layer (what a model with some layers not in blocks does) decodes the same.
    monkeypatch.setattr(loaded_model.model, "compiled_decode", None)
    assert run() == compiled and any(offered)
    monkeypatch.setattr(paged_attention.PagedAttention, "decode_kv", lambda self, layer: None)
    assert run() == compiled


def test_pool_reads_are_views_for_a_run_of_slots_else_gathers():
    pool = torch.arange(40.0).view(10, 2, 2)
    run = _slot_source([3, 4, 5], torch.device("cpu"))
    assert run == slice(3, 6)
    view = _read(pool, run)
    assert view.data_ptr() == pool[3].data_ptr() and torch.equal(view, pool[3:6])
    for slots in ([5, 4, 3], [3, 5, 6], [2, 3, 3, 5], [7]):
        source = _slot_source(slots, torch.device("cpu"))
        assert torch.equal(_read(pool, source), pool[slots])
    assert _read(pool, _slot_source([], torch.device("cpu"))).shape == (0, 2, 2)


def test_pool_gather_reuses_its_buffer_and_caps_it(monkeypatch):
    pool = KVPool(2, 50, 2, 4, torch.float32, torch.device("cpu"))
    pool.k.copy_(torch.randn(pool.k.shape))
    pool.v.copy_(torch.randn(pool.v.shape))
    idx = torch.tensor([7, 3, 3, 40])
    k, v = pool.gather(1, idx)
    assert torch.equal(k, pool.k[1][idx]) and torch.equal(v, pool.v[1][idx])
    k2, _ = pool.gather(0, idx[:2])  # smaller: the same buffer, no new allocation
    assert k2.data_ptr() == k.data_ptr() and torch.equal(k2, pool.k[0][idx[:2]])
    k3, v3 = pool.gather(0, torch.arange(10))  # larger: the buffer grows
    assert torch.equal(k3, pool.k[0][:10]) and torch.equal(v3, pool.v[0][:10])
    # Past the cap every call gets its own tensors (nothing large is held between steps).
    monkeypatch.setattr(KVPool, "SCRATCH_MAX_BYTES", 2 * 5 * 8 * 4)
    k4, v4 = pool.gather(1, torch.arange(6))
    assert torch.equal(k4, pool.k[1][:6]) and k4.data_ptr() != k3.data_ptr()

"""A step of background work stopped between layers for an urgent request, on the real model:
the urgent request runs in steps of its own at once, and the stopped step is finished later
with nothing lost (greedy outputs equal those of undisturbed runs)."""

from __future__ import annotations

import asyncio

import pytest
from model_helpers import QUESTIONS, chat_ids

from parrot_server.engine.async_engine import AsyncEngine
from parrot_server.engine.config import EngineConfig
from parrot_server.engine.engine import Engine
from parrot_server.engine.request import FinishKind
from parrot_server.engine.sampling_params import SamplingParams
from parrot_server.engine.step_run import StepRun, stop_rule

GREEDY = SamplingParams(max_new_tokens=8, temperature=0)
URGENT, BACKGROUND = 2, 0


def background_prompt(engine: Engine, k: int) -> list[int]:
    facts = " ".join(f"Fact {i}: {i} times {k} is {i * k}." for i in range(30))
    return chat_ids(engine.tokenizer, f"{facts}\nWhat is 7 times {k}?")


def alone(engine: Engine, prompts: list[list[int]]) -> list[list[int]]:
    outs = [engine.generate([p], GREEDY)[0].new_token_ids for p in prompts]
    engine.flush_cache()
    return outs


def collect(engine: Engine, prompt: list[int], priority: int) -> tuple[object, list[int]]:
    ids: list[int] = []
    req = engine.submit(
        prompt, GREEDY, priority=priority, on_output=lambda o: ids.extend(o.new_token_ids)
    )
    return req, ids


def test_an_urgent_arrival_sets_a_background_step_aside_and_nothing_is_lost(make_engine):
    eng = make_engine(max_step_tokens=512)
    bg_prompts = [background_prompt(eng, k) for k in (3, 4)]
    urgent_prompt = chat_ids(eng.tokenizer, QUESTIONS[0])
    want_bg = alone(eng, bg_prompts)
    [want_urgent] = alone(eng, [urgent_prompt])

    bg = [collect(eng, p, BACKGROUND) for p in bg_prompts]
    arriving: list[int | None] = [URGENT]  # what another thread would have submitted
    eng.step(lambda: arriving[0])
    assert eng.stats().steps_set_aside_total == 1
    aside = [r for r, _ in bg if r.set_aside]
    assert aside and all(r.num_computed == 0 for r, _ in bg)  # nothing committed yet

    arriving[0] = None
    urgent, urgent_ids = collect(eng, urgent_prompt, URGENT)
    while urgent.finish_reason is None:
        eng.step(lambda: arriving[0])
        assert all(r.num_computed == 0 for r, _ in bg)  # the background waits meanwhile
    assert urgent_ids == want_urgent

    eng.step()  # nothing more urgent: the step set aside is finished, not computed again
    assert all(not r.set_aside and r.num_computed > 0 for r in aside)
    eng.run_until_idle()
    assert [ids for _, ids in bg] == want_bg
    assert eng.stats().steps_set_aside_total == 1


def test_aborting_a_request_of_a_step_set_aside_finishes_that_step_first(make_engine):
    eng = make_engine(max_step_tokens=512, prefix_wait_min_tokens=0)  # both in one step
    bg_prompts = [background_prompt(eng, k) for k in (5, 6)]
    urgent_prompt = chat_ids(eng.tokenizer, QUESTIONS[1])
    want_bg = alone(eng, bg_prompts)
    [want_urgent] = alone(eng, [urgent_prompt])

    (gone, gone_ids), (kept, kept_ids) = (collect(eng, p, BACKGROUND) for p in bg_prompts)
    eng.step(lambda: URGENT)
    urgent, urgent_ids = collect(eng, urgent_prompt, URGENT)
    assert eng.abort(gone.rid)
    assert gone.finish_reason.kind is FinishKind.ABORT
    # The stopped step ran to its end before the abort freed anything: the other request
    # keeps what it computed, and no slot it wrote went to the urgent request.
    assert not kept.set_aside and kept.num_computed > 0
    eng.run_until_idle()
    assert urgent_ids == want_urgent
    assert kept_ids == want_bg[1]
    assert len(gone_ids) <= 1 and gone_ids == want_bg[0][: len(gone_ids)]  # sampled in that step
    assert eng.stats().kv_free_tokens == eng.config.kv_pool_tokens


def test_urgent_request_submitted_during_background_steps_stops_one(loaded_model):
    """Through the worker thread: the submission itself tells the step under way."""

    async def main() -> None:
        engine = AsyncEngine(
            lambda: Engine(
                EngineConfig(kv_pool_tokens=8192, max_context_len=2048, max_step_tokens=512),
                loaded_model,
            )
        )
        try:
            tok = engine.engine.tokenizer
            bg_prompts = [background_prompt(engine.engine, k) for k in range(3, 9)]
            urgent_prompt = chat_ids(tok, QUESTIONS[3])
            [want_urgent] = [(await engine.complete(urgent_prompt, GREEDY)).new_token_ids]
            await engine.flush_cache()
            bg = await engine.submit_many(
                [(p, GREEDY, {"priority": BACKGROUND}) for p in bg_prompts]
            )
            # While the background's prompts are being computed: not at once, which can reach
            # the worker thread before it starts their first step (the scheduler then simply
            # admits the urgent request first), and not late, when only decode steps (not
            # stopped) are left. Their ~3,000 prompt tokens take six steps of 512 at least.
            await asyncio.sleep(0.05)
            got = await engine.complete(urgent_prompt, GREEDY, priority=URGENT)
            for stream in bg:
                async for _ in stream:
                    pass
            stats = await engine.stats()
            assert got.new_token_ids == want_urgent
            assert stats.steps_set_aside_total >= 1
        finally:
            await engine.shutdown()

    asyncio.run(main())


def test_a_step_set_aside_whose_run_fails_gives_its_slots_back(make_engine, monkeypatch):
    eng = make_engine(max_step_tokens=512)
    prompt = background_prompt(eng, 11)
    [want] = alone(eng, [prompt])
    req, ids = collect(eng, prompt, BACKGROUND)
    eng.step(lambda: URGENT)
    assert req.set_aside

    def broken(self) -> None:
        raise RuntimeError("kernel failure")

    monkeypatch.setattr(StepRun, "finish", broken)
    with pytest.raises(RuntimeError):
        eng.step()  # nothing more urgent: it goes on, and fails
    monkeypatch.undo()
    assert not req.set_aside and req.num_computed == 0 and req.slots == []
    eng.run_until_idle()  # computed again from the start
    assert ids == want
    assert eng.stats().kv_free_tokens == eng.config.kv_pool_tokens


def test_the_stop_rule_stops_for_an_urgent_arrival_and_after_a_turns_slice():
    arriving: list[int | None] = [None]
    stop = stop_rule(lambda: arriving[0], top=0, slice_layers=None, more_urgent=lambda p: True)
    assert [stop() for _ in range(3)] == [False] * 3  # nothing arriving: never
    arriving[0] = 0
    assert not stop()  # as urgent as the step: no reason to stop
    arriving[0] = 2
    assert stop()
    urgent_runs = [True]
    turn = stop_rule(None, 0, slice_layers=3, more_urgent=lambda p: urgent_runs[0])
    assert [turn() for _ in range(3)] == [False, False, True]  # its slice, then back
    urgent_runs[0] = False
    assert not turn()  # nothing more urgent left: it runs on
    late = stop_rule(lambda: arriving[0], 0, slice_layers=1, more_urgent=lambda p: False)
    assert late()  # past its slice, an urgent arrival still stops it


def test_background_turns_finish_a_step_set_aside_in_slices_while_urgent_work_runs(make_engine):
    eng = make_engine(max_step_tokens=512, background_pause_steps=2, background_slice_layers=10)
    bg_prompt = background_prompt(eng, 12)
    urgent_prompt = chat_ids(eng.tokenizer, QUESTIONS[2])
    urgent_sampling = SamplingParams(max_new_tokens=24, temperature=0, ignore_eos=True)
    [want_bg] = alone(eng, [bg_prompt])
    want_urgent = eng.generate([urgent_prompt], urgent_sampling)[0].new_token_ids
    eng.flush_cache()

    bg, bg_ids = collect(eng, bg_prompt, BACKGROUND)
    eng.step(lambda: URGENT)  # set aside after its first layer
    urgent_ids: list[int] = []
    urgent = eng.submit(
        urgent_prompt,
        urgent_sampling,
        priority=URGENT,
        on_output=lambda o: urgent_ids.extend(o.new_token_ids),
    )
    steps = 0
    while bg.num_computed == 0:
        eng.step()
        steps += 1
        assert urgent.finish_reason is None  # the background got turns while it ran
    # Two urgent steps, then a turn of 10 layers, until the layers after the first are done.
    turns = -(-(eng.loaded.config.num_layers - 1) // 10)
    assert steps == 3 * turns and eng.stats().steps_set_aside_total == 1
    eng.run_until_idle()
    assert urgent_ids == want_urgent
    assert bg_ids == want_bg

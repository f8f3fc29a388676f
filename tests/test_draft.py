"""Drafts from a request's own text (`PromptLookup`) and how the scheduler hands them out and
takes back what the model did not agree with (no model)."""

from parrot_server.engine.config import EngineConfig
from parrot_server.engine.draft import PromptLookup
from parrot_server.engine.kv_allocator import KVSlotAllocator
from parrot_server.engine.radix_cache import RadixCache
from parrot_server.engine.request import Request
from parrot_server.engine.sampling_params import SamplingParams
from parrot_server.engine.scheduler import Scheduler


def test_lookup_continues_the_latest_earlier_occurrence():
    lookup = PromptLookup(max_tokens=3)
    tokens = [1, 2, 3, 10, 11, 12, 13, 5, 1, 2, 3, 20, 21, 9, 1, 2, 3]
    # The last three tokens occurred twice before; the latest continuation wins.
    assert lookup.propose(tokens, limit=8) == [20, 21, 9]
    assert lookup.propose(tokens, limit=2) == [20, 21]
    assert lookup.propose(tokens, limit=0) == []


def test_lookup_falls_back_to_two_tokens_and_never_matches_its_own_end():
    lookup = PromptLookup(max_tokens=4)
    assert lookup.propose([7, 8, 9, 4, 5, 6, 8, 9], limit=4) == [4, 5, 6, 8]
    assert lookup.propose([1, 2, 3, 4, 5], limit=4) == []  # nothing repeats
    # The draft may run up to the text's end, never past it.
    assert PromptLookup(4).propose([5, 6, 7, 5, 6], limit=4) == [7, 5, 6]


def test_lookup_indexes_appended_tokens():
    lookup = PromptLookup(max_tokens=4)
    tokens = [1, 2, 3, 4]
    assert lookup.propose(tokens, limit=4) == []
    tokens += [9, 1, 2]  # the output repeats the prompt's start
    assert lookup.propose(tokens, limit=4) == [3, 4, 9, 1]
    tokens += [3, 4]
    assert lookup.propose(tokens, limit=4) == [9, 1, 2, 3]


def test_draft_length_follows_what_was_accepted():
    lookup = PromptLookup(max_tokens=4)
    tokens = [1, 2, 3, 4, 5, 6, 1, 2, 3]
    lookup.observe(drafted=4, accepted=1)
    assert lookup.propose(tokens, limit=8) == [4, 5]
    lookup.observe(drafted=1, accepted=1)  # taken whole: the full length again
    assert lookup.propose(tokens, limit=8) == [4, 5, 6, 1]
    lookup.observe(drafted=0, accepted=0)  # nothing drafted says nothing
    assert lookup.length == 4


def test_misses_in_a_row_pause_drafting_longer_each_time():
    lookup = PromptLookup(max_tokens=4)
    tokens = [1, 2, 3, 4, 5, 6, 1, 2, 3]

    def decodes_until_a_draft() -> int:
        n = 0
        while not lookup.propose(tokens, limit=8):
            n += 1
        return n

    pauses = []
    for _ in range(7):
        lookup.observe(drafted=lookup.length, accepted=0)
        pauses.append(decodes_until_a_draft())
    assert pauses == [1, 2, 4, 8, 16, 16, 16]
    assert lookup.propose(tokens, limit=8) == [4]  # a miss leaves a draft of one
    lookup.observe(drafted=1, accepted=1)  # a hit ends the pauses
    lookup.observe(drafted=4, accepted=0)
    assert decodes_until_a_draft() == 1


def _decoding(s: Scheduler, prompt: list[int], max_new: int = 16, window: int | None = None):
    """A greedy request that drafts, past its prefill, whose two output tokens repeat the
    prompt's first two (so its text ends in a 2-gram seen before)."""
    r = Request("r", prompt, SamplingParams(max_new_tokens=max_new, temperature=0))
    r.lookup = PromptLookup(max_tokens=4)
    r.max_total_tokens = window
    s.add(r)
    for token in prompt[:2]:
        s.commit(s.schedule())
        r.output_ids.append(token)
    return r


def _scheduler(pool: int = 64, max_batch: int = 4) -> Scheduler:
    cfg = EngineConfig(kv_pool_tokens=pool, max_step_tokens=32, speculative_max_batch=max_batch)
    return Scheduler(cfg, KVSlotAllocator(pool), RadixCache())


PROMPT = [10, 11, 12, 13, 14, 15, 16, 17]


def test_a_decode_carries_a_draft_and_gives_back_the_rejected_slots():
    s = _scheduler()
    r = _decoding(s, PROMPT)
    free = s.allocator.num_free
    batch = s.schedule()
    (chunk,) = batch.chunks
    assert chunk.draft == (12, 13, 14, 15) and chunk.length == 5 and chunk.sample
    assert chunk.token_ids == [11, 12, 13, 14, 15]
    assert s.allocator.num_free == free - 5
    s.accept_draft(chunk, 2)
    s.commit(batch)
    assert r.num_computed == len(PROMPT) + 4  # the prompt, 10, 11 and two draft tokens
    assert len(r.slots) == r.num_computed and s.allocator.num_free == free - 3
    assert r.lookup.length == 3  # two taken: three next time


def test_drafts_stay_within_the_request_limits_and_small_batches():
    s = _scheduler()
    _decoding(s, PROMPT, max_new=4)  # two tokens out, two to go: a draft of one at most
    assert s.schedule().chunks[0].draft == (12,)
    s = _scheduler()
    _decoding(s, PROMPT, window=len(PROMPT) + 4)  # room for two more positions
    assert s.schedule().chunks[0].draft == (12, 13)
    s = _scheduler(max_batch=0)  # one request decoding is above the limit: no draft
    _decoding(s, PROMPT)
    (chunk,) = s.schedule().chunks
    assert chunk.draft == () and chunk.length == 1


def test_a_draft_never_takes_the_last_free_slots_from_the_decode():
    s = _scheduler(pool=10)  # 8 prompt slots and one decode: one left
    r = _decoding(s, PROMPT)
    (chunk,) = s.schedule().chunks
    assert chunk.draft == () and chunk.length == 1  # the draft did not fit: the decode did
    assert r.status.name == "RUNNING" and s.allocator.num_free == 0


def test_requests_waiting_behind_more_urgent_work_do_not_count_as_decoding():
    cfg = EngineConfig(
        kv_pool_tokens=256, max_step_tokens=64, speculative_max_batch=1, background_pause_steps=64
    )
    s = Scheduler(cfg, KVSlotAllocator(256), RadixCache())

    def repeating_step():  # each sampled request "repeats" its prompt
        batch = s.schedule()
        s.commit(batch)
        for c in batch.chunks:
            if c.sample:
                c.request.output_ids.append(c.request.prompt_ids[len(c.request.output_ids)])
        return batch

    def request(rid, prompt, priority=0):
        r = Request(
            rid, prompt, SamplingParams(max_new_tokens=16, temperature=0), priority=priority
        )
        r.lookup = PromptLookup(max_tokens=4)
        s.add(r)
        return r

    for i in range(3):
        request(f"background{i}", [40 + 10 * i + j for j in range(8)])
    repeating_step(), repeating_step()
    chat = request("chat", PROMPT, priority=1)
    repeating_step(), repeating_step()
    (chunk,) = s.schedule().chunks  # the background waits: the chat decodes alone, and drafts
    assert chunk.request is chat and chunk.draft == (12, 13, 14, 15)

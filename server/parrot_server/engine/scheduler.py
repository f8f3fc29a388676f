"""Decides, every step, which tokens of which requests to compute (no torch here).

One step holds at most `max_step_tokens` tokens, given out in priority order: running requests
(a decoding request needs one token, a prefilling one a chunk of its prompt) and new admissions,
a waiting request of higher priority being admitted before running ones of lower priority get
their share. While a request of higher priority runs, lower-priority requests wait: on a CPU a
step's time grows with every token in it, so the urgent request's tokens come at the pace of
steps of its own. A step of lower-priority work already under way when an urgent request
arrives is stopped between layers by the engine and set aside (`set_aside`): its requests are
skipped until it is finished (`holds_back` says when). So that they never starve, after
`background_pause_steps` steps in a row lower-priority requests get a turn: a step of their own
(`Batch.turn`) or the one set aside, of which the engine runs a slice of layers. For a moment
after urgent work was served its next request is likely on its way (a chat's next turn), so
steps of lower-priority work are kept short then (`background_step_tokens`): the layer under way
when it arrives is short too.
Admission matches the prompt against the prefix cache, so only the uncached rest is computed.
A prompt's KV enters the cache chunk by chunk as it is computed, and a new request that shares
a longer prefix with a prompt still being prefilled waits for it rather than computing the same
tokens beside it (requests that arrive together compute their common prefix once).
When the KV pool runs dry, unlocked cache entries are evicted; if that is not enough the
lowest-priority running request is preempted: its KV goes into the prefix cache (cheap to
resume if it survives) and the request waits again with its output so far.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .batch import Batch, Chunk
from .config import EngineConfig
from .errors import EngineOverloadedError
from .kv_allocator import KVSlotAllocator
from .prefix_cache import PrefixCache, common_prefix_len
from .request import Request, RequestStatus

log = logging.getLogger(__name__)

# How long after a more urgent request was served steps of lower-priority work stay short.
URGENT_LINGER_SECONDS = 1.0


@dataclass
class _Budget:
    """What is left of one step: `left` tokens; with `pause`, requests below the highest
    priority running (`top`) get none of it; on lower-priority work's `turn`, only they do."""

    left: int
    pause: bool
    top: int | None = None
    turn: bool = False

    def grant(self, req: Request, pending: int | None = None) -> int:
        """How many of its `pending` tokens (default: all it has yet to compute) `req` may
        compute in this step."""
        if self.top is not None and (
            (self.pause and req.priority < self.top) or (self.turn and req.priority >= self.top)
        ):
            return 0
        return min(req.num_pending if pending is None else pending, self.left)

    def take(self, n: int) -> None:
        self.left -= n


def min_priority(requests: list[Request]) -> int | None:
    return min((r.priority for r in requests), default=None)


class Scheduler:
    def __init__(
        self,
        config: EngineConfig,
        allocator: KVSlotAllocator,
        cache: PrefixCache,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self.allocator = allocator
        self.cache = cache
        self.waiting: list[Request] = []  # sorted by Request.sort_key
        self.running: list[Request] = []
        self.num_preemptions = 0
        self._paused_steps = 0  # steps in a row in which lower-priority requests waited
        # The highest priority served lately, and when (see `URGENT_LINGER_SECONDS`).
        self._urgent: tuple[int, float] | None = None
        self.prompt_tokens_total = 0  # over first admissions
        self.cached_tokens_total = 0  # of those, served from the prefix cache

    # -- queue --------------------------------------------------------------------------------
    def add(self, req: Request) -> None:
        if len(self.waiting) >= self.config.max_queued_requests:
            raise EngineOverloadedError(
                f"engine queue is full ({self.config.max_queued_requests} waiting requests); retry later"
            )
        self._enqueue(req)

    def _enqueue(self, req: Request) -> None:
        req.status = RequestStatus.WAITING
        bisect.insort(self.waiting, req, key=lambda r: r.sort_key)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # -- KV -----------------------------------------------------------------------------------
    def _allocate(self, n: int) -> list[int] | None:
        slots = self.allocator.allocate(n)
        if slots is None and self.cache.evictable_tokens >= n - self.allocator.num_free:
            self.allocator.free(self.cache.evict(n - self.allocator.num_free))
            slots = self.allocator.allocate(n)
        return slots

    def _release(self, req: Request) -> object:
        """Hand the request's computed KV to the prefix cache; returns the node covering it."""
        # A request that stopped inside an accepted draft has KV past its last token.
        computed = min(req.num_computed, req.num_tokens)
        node, duplicates = self.cache.insert(
            req.namespace, req.tokens[:computed], req.slots[:computed]
        )
        self.allocator.free(duplicates + req.slots[computed:])
        if req.cache_node is not None:
            self.cache.unlock(req.cache_node)
        req.slots, req.cache_node, req.num_locked, req.num_computed = [], None, 0, 0
        return node

    def preempt(self, req: Request) -> None:
        log.debug("preempting %s (%d tokens computed) to free KV", req.rid, req.num_computed)
        self._release(req)
        self.running.remove(req)
        req.num_preemptions += 1
        self.num_preemptions += 1
        self._enqueue(req)

    def finish(self, req: Request) -> object:
        """Remove a finished (or aborted) request; its KV stays cached. Returns its cache node."""
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        node = self._release(req)
        req.status = RequestStatus.FINISHED
        return node

    # -- one step -----------------------------------------------------------------------------
    def schedule(self) -> Batch:
        batch = Batch()
        limit = self.config.background_pause_steps
        now = self._clock()
        step = _Budget(self._step_tokens(now), self._paused_steps < limit)
        self.running.sort(key=lambda r: r.sort_key)
        step.top = max((r.priority for r in self.running if not r.set_aside), default=None)
        # Lower-priority work has waited its limit while more urgent work runs: its turn.
        step.turn = batch.turn = (
            limit > 0 and not step.pause and self.more_urgent(min_priority(self.running))
        )
        scheduled: set[int] = set()
        preempted_before = self.num_preemptions
        # Decodes this step runs (not those waiting behind more urgent work): whether to draft.
        decoding = sum(
            1 for r in self.running if r.num_pending == 1 and not r.set_aside and step.grant(r) > 0
        )
        for req in list(self.running):
            if step.left == 0:
                break
            if req.status is not RequestStatus.RUNNING or req.set_aside:
                continue  # preempted as a victim below, or in a step set aside
            if self.waiting and self.waiting[0].priority > req.priority:
                self._admit(batch, step, above=req.priority)
            n = step.grant(req)
            if n == 0:
                continue
            draft = self._draft(req, step.left - n, decoding)
            slots = self._allocate(n + len(draft))
            if slots is None and draft:  # never preempt anyone for a draft
                draft = []
                slots = self._allocate(n)
            while slots is None:
                victim = self._pick_victim(scheduled)
                self.preempt(victim)
                if victim is req:
                    break
                slots = self._allocate(n)
            if slots is None:
                continue
            batch.chunks.append(self._chunk(req, slots, n, tuple(draft)))
            scheduled.add(id(req))
            step.take(len(slots))
        if self.num_preemptions == preempted_before:  # KV was short this step: admit no one
            self._admit(batch, step)
        paused = (
            step.pause and step.top is not None and any(r.priority < step.top for r in self.running)
        )
        self._paused_steps = self._paused_steps + 1 if paused else 0
        if batch.chunks:
            self._served(max(c.request.priority for c in batch.chunks), now)
        self._mark_shared_prefixes(batch)
        return batch

    def _step_tokens(self, now: float) -> int:
        """This step's token budget: short while more urgent work than any present was served
        less than `URGENT_LINGER_SECONDS` ago."""
        full, short = self.config.max_step_tokens, self.config.background_step_tokens
        present = max(
            (r.priority for r in itertools.chain(self.running, self.waiting) if not r.set_aside),
            default=None,
        )
        if short and present is not None and self._urgent is not None:
            priority, at = self._urgent
            if present < priority and now - at < URGENT_LINGER_SECONDS:
                return min(full, short)
        return full

    def _served(self, priority: int, now: float) -> None:
        """A step serves work of `priority`: remembered while it is the most urgent lately."""
        if (
            self._urgent is None
            or priority >= self._urgent[0]
            or now - self._urgent[1] >= URGENT_LINGER_SECONDS
        ):
            self._urgent = (priority, now)

    def more_urgent(self, priority: int | None) -> bool:
        """Whether a request of priority above `priority` runs (outside a step set aside) or
        waits."""
        return priority is not None and any(
            r.priority > priority
            for r in itertools.chain(self.running, self.waiting)
            if not r.set_aside
        )

    def holds_back(self, priority: int) -> bool:
        """Whether requests of `priority` wait this step: a more urgent one is running or
        waiting, and they have not yet waited `background_pause_steps` steps in a row."""
        if self._paused_steps >= self.config.background_pause_steps:
            return False
        return self.more_urgent(priority)

    def took_turn(self) -> None:
        """Lower-priority work had its turn (a slice of a step set aside)."""
        self._paused_steps = 0

    def set_aside(self, batch: Batch) -> None:
        """The batch stopped between layers: its requests keep their slots and are scheduled
        again only after `commit`."""
        for chunk in batch.chunks:
            chunk.request.set_aside = True

    def drop_set_aside(self, batch: Batch) -> None:
        """The batch set aside will not be finished (its run failed): its requests give back
        the slots it reserved and compute those tokens in a later step."""
        for chunk in batch.chunks:
            req = chunk.request
            req.set_aside = False
            self.allocator.free(req.slots[chunk.start :])
            del req.slots[chunk.start :]

    def _draft(self, req: Request, room: int, decoding: int) -> list[int]:
        """Tokens `req` guesses it will generate next, to verify in its decode (draft.py), while
        at most `speculative_max_batch` requests decode (in a larger batch an extra row costs
        about what it can save), within the step's `room` and the request's own limits."""
        if req.lookup is None or req.num_pending != 1:
            return []
        if decoding > self.config.speculative_max_batch:
            return []
        limit = min(room, req.draft_limit)
        return req.lookup.propose(req.tokens, limit) if limit > 0 else []

    def accept_draft(self, chunk: Chunk, accepted: int) -> None:
        """The model agreed with the first `accepted` tokens of the chunk's draft: the slots of
        the rest are given back (their KV was computed from tokens that are not the text)."""
        req = chunk.request
        chunk.accepted = accepted
        req.lookup.observe(len(chunk.draft), accepted)
        keep, end = chunk.start + chunk.computed, chunk.start + chunk.length
        self.allocator.free(req.slots[keep:end])
        del req.slots[keep:end]

    def _mark_shared_prefixes(self, batch: Batch) -> None:
        """Decodes and prefill chunks are attended separately, so each kind is grouped apart (a
        decode with a draft is in neither group)."""
        for decode in (True, False):
            chunks = [
                c
                for c in batch.chunks
                if (c.length == 1) == decode and not c.draft and c.request.cache_node is not None
            ]
            if len(chunks) < 2:
                continue
            shared = self.cache.deepest_shared([c.request.cache_node for c in chunks])
            for chunk, found in zip(chunks, shared, strict=True):
                if found is not None:
                    chunk.shared_prefix = (id(found[0]), found[1])

    def _pick_victim(self, scheduled: set[int]) -> Request:
        """Lowest-priority, latest-arrived running request not already in this step."""
        candidates = [r for r in self.running if id(r) not in scheduled and not r.set_aside]
        return max(candidates, key=lambda r: r.sort_key)

    def _admit(self, batch: Batch, step: _Budget, above: int | None = None) -> None:
        """Admit waiting requests in order while the step has room (only those of priority
        greater than `above`, when given)."""
        deferred: list[Request] = []  # waiting for a running prefill of their prefix
        while (
            self.waiting
            and step.left > 0
            and len(self.running) < self.config.max_running_requests
            and (above is None or self.waiting[0].priority > above)
        ):
            req = self.waiting[0]
            # A generating request must compute at least its last prompt token to get logits.
            tokens = req.tokens if req.prefill_only else req.tokens[:-1]
            match = self.cache.match(req.namespace, tokens)
            if self._prefilling_shares(req, tokens, match.length):
                deferred.append(self.waiting.pop(0))
                continue
            step.top = req.priority if step.top is None else max(step.top, req.priority)
            n = step.grant(req, req.num_tokens - match.length)
            if n == 0 and req.num_tokens > match.length:
                break  # no room left in this step, or paused behind more urgent work
            # Locked first: making room for the rest must not evict the matched prefix.
            self.cache.lock(match.node)
            slots = self._allocate(n) if n else []
            if slots is None:
                self.cache.unlock(match.node)
                break  # wait for running requests to free KV
            self.waiting.pop(0)
            req.cache_node, req.num_locked = match.node, match.length
            req.slots, req.num_computed = list(match.slots), match.length
            if req.num_preemptions == 0:
                req.num_cached = match.length
                self.prompt_tokens_total += len(req.prompt_ids)
                self.cached_tokens_total += match.length
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            if n == 0:
                batch.completed.append(req)
                continue
            batch.chunks.append(self._chunk(req, slots, n))
            step.take(n)
        for req in deferred:
            bisect.insort(self.waiting, req, key=lambda r: r.sort_key)

    def _prefilling_shares(self, req: Request, tokens: list[int], cached: int) -> bool:
        """Whether a running request still prefilling its prompt will compute at least
        `prefix_wait_min_tokens` of `tokens` beyond the `cached` ones (same namespace)."""
        wait = self.config.prefix_wait_min_tokens
        if not wait or len(tokens) - cached < wait:
            return False
        for other in self.running:
            prompt = other.prompt_ids
            if other.namespace != req.namespace or other.num_computed >= len(prompt):
                continue
            # (Sharing more than `cached` tokens implies agreeing at position `cached`.)
            if len(prompt) - cached < wait or prompt[cached] != tokens[cached]:
                continue
            common = common_prefix_len(prompt, tokens)
            # Its computed tokens are cached already: what it has yet to compute is the gain.
            if other.num_computed < common and common - cached >= wait:
                return True
        return False

    def _chunk(self, req: Request, slots: list[int], n: int, draft: tuple[int, ...] = ()) -> Chunk:
        start = req.num_computed
        req.slots.extend(slots)
        done = start + n == req.num_tokens
        return Chunk(req, start, n + len(draft), done and not req.prefill_only, draft=draft)

    def commit(self, batch: Batch) -> None:
        """The model computed the batch: its tokens now have KV. Prompt chunks enter the prefix
        cache at once, so requests admitted later find them."""
        for chunk in batch.chunks:
            req = chunk.request
            req.set_aside = False
            req.num_computed = chunk.start + chunk.computed
            if not chunk.draft and (chunk.length > 1 or chunk.start < len(req.prompt_ids)):
                self._cache_computed(req)

    def _cache_computed(self, req: Request) -> None:
        """Put a running request's computed KV in the cache and lock it for the request. Where
        the cache already held some of those tokens under other slots (computed beside this
        one), the request reads the cached copy from now on and its own slots are freed."""
        computed = req.num_computed
        tokens, slots = req.tokens[:computed], req.slots[:computed]
        node, duplicates = self.cache.insert(req.namespace, tokens, slots)
        if duplicates:
            req.slots[:computed] = self.cache.match(req.namespace, tokens).slots
            self.allocator.free(duplicates)
        self.cache.lock(node)
        if req.cache_node is not None:
            self.cache.unlock(req.cache_node)
        req.cache_node, req.num_locked = node, computed

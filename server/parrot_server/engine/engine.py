"""The embedded engine: requests and contexts in, token streams out, one `step()` at a time.

This class is single-threaded on purpose: `AsyncEngine` drives it from one worker thread and
every mutation happens there. Benchmarks and tests may drive it directly.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Hashable

import torch

from .batch import Batch
from .config import EngineConfig
from .context import Context, resolve_context
from .detokenizer import Detokenizer
from .draft import PromptLookup
from .errors import ContextNotFoundError, InvalidRequestError
from .grammar import Grammars
from .kv_allocator import KVSlotAllocator
from .model import LoadedModel, load_model
from .model.loader import weight_dtype
from .model_runner import ModelRunner
from .radix_cache import RadixCache
from .request import (
    FinishKind,
    FinishReason,
    Request,
    RequestOutput,
    RequestStatus,
    TokenLogprob,
)
from .sampling_params import SamplingParams
from .scheduler import Scheduler
from .stats import EngineStats
from .step_run import Sampled, SetAside, stop_rule
from .tokenizer import read_chat_template
from .validation import validate

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self, config: EngineConfig | None = None, loaded: LoadedModel | None = None
    ) -> None:
        self.config = config = config or EngineConfig()
        torch.set_num_threads(config.threads)
        self.loaded = loaded or load_model(
            config.model,
            dtype=weight_dtype(config.dtype),
            device=config.device,
            gemm_dtype=weight_dtype(config.gemm_dtype),
            dense_weights_mb=config.dense_weights_mb,
        )
        self.tokenizer = self.loaded.tokenizer
        if config.chat_template is not None:
            self.tokenizer.chat_template = read_chat_template(config.chat_template)
        mcfg = self.loaded.config
        self.max_context_len = min(
            config.max_context_len or mcfg.max_position_embeddings, mcfg.max_position_embeddings
        )
        self.eos_token_ids = set(mcfg.eos_token_ids)
        self.allocator = KVSlotAllocator(config.kv_pool_tokens)
        self.cache = RadixCache()
        self.scheduler = Scheduler(config, self.allocator, self.cache)
        self.runner = ModelRunner(
            self.loaded.model,
            config.kv_pool_tokens,
            config.shared_prefix_min_tokens,
            config.shared_prefix_prefill,
            tuple(sorted(self.eos_token_ids)),
        )
        self.requests: dict[str, Request] = {}
        self.contexts: dict[str, Context] = {}
        self._generated = self._steps = self._steps_set_aside = 0
        self._drafted = self._accepted = 0  # draft tokens verified, and taken
        self._busy_seconds = 0.0
        self._aside: SetAside | None = None  # a step stopped between layers

    @functools.cached_property
    def grammars(self) -> Grammars:
        """Made at the first constrained request (reading the vocabulary takes a moment)."""
        cfg = self.loaded.config
        return Grammars(self.tokenizer, cfg.vocab_size, self.eos_token_ids, self.config.threads)

    # -- submission ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def submit(
        self,
        prompt: list[int] | str | None,
        sampling: SamplingParams | None = None,
        *,
        rid: str | None = None,
        context_id: str | None = None,
        parent_context_id: str | None = None,
        namespace: Hashable = None,
        priority: int = 0,
        on_output: Callable[[RequestOutput], None] | None = None,
        prefill_only: bool = False,
    ) -> Request:
        """Queue a request. `prompt` is appended to `context_id`'s tokens if that context exists;
        a new context starts from `parent_context_id`'s tokens (a fork). The request's tokens
        become the context's when it finishes. `prefill_only` makes it a fill: the prompt's KV
        is computed and cached, nothing is generated. Raises a typed error for bad input."""
        sampling = sampling or SamplingParams()
        rid = rid or uuid.uuid4().hex
        if rid in self.requests:
            raise InvalidRequestError(f"request id {rid!r} is already in flight")
        base, ctx = resolve_context(self.contexts, context_id, parent_context_id, namespace)
        namespace = ctx.namespace if ctx else namespace
        new_ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt or [])
        prompt_ids = base + new_ids
        validate(
            prompt_ids,
            new_ids,
            sampling,
            prefill_only,
            vocab=self.loaded.config.vocab_size,
            window=self.max_context_len,
            pool=self.config.kv_pool_tokens,
        )
        req = Request(
            rid,
            prompt_ids,
            sampling,
            namespace=namespace,
            priority=priority,
            on_output=on_output,
            max_total_tokens=self.max_context_len,
            prefill_only=prefill_only,
        )
        req.detokenizer = Detokenizer(self.tokenizer, sampling.stop, sampling.skip_special_tokens)
        if sampling.constraint is not None and not prefill_only:
            done = prompt_ids[len(prompt_ids) - sampling.constrained_prompt_tail :]
            req.grammar = self.grammars.start(sampling, done)
        elif self.config.speculative_tokens and not prefill_only:
            req.lookup = PromptLookup(self.config.speculative_tokens)
        self.scheduler.add(req)  # may raise EngineOverloadedError: nothing registered yet
        if ctx is not None:
            self.contexts.setdefault(ctx.context_id, ctx)
            ctx.busy = rid
            req.context = ctx
        self.requests[rid] = req
        return req

    def abort(self, rid: str, message: str = "aborted") -> bool:
        req = self.requests.get(rid)
        if req is not None and req.set_aside:  # its slots are being written: finish that first
            try:
                self._finish_set_aside()
            except Exception:  # the abort still happens (and frees the slots)
                log.exception("finishing a step set aside failed while aborting %s", rid)
        if req is None or req.status is RequestStatus.FINISHED:
            return False
        self._finish(req, FinishReason(FinishKind.ABORT, message=message), "")
        return True

    def free_context(self, context_id: str) -> None:
        ctx = self.contexts.pop(context_id, None)
        if ctx is None:
            raise ContextNotFoundError(f"context {context_id!r} does not exist")
        if ctx.busy:
            self.abort(ctx.busy, f"context {context_id} was freed")
        if ctx.node is not None:
            self.cache.unlock(ctx.node)

    def flush_cache(self) -> int:
        """Drop every unlocked cache entry (SGLang's /flush_cache); returns slots freed."""
        freed = self.cache.reset()
        self.allocator.free(freed)
        return len(freed)

    # -- stepping -----------------------------------------------------------------------------
    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self, urgent: Callable[[], int | None] | None = None) -> list[RequestOutput]:
        """Compute one step. `urgent()` tells the highest priority among requests submitted
        from other threads and not queued here yet (None: none): a step of only lower-priority
        work stops after the layer it is in and is set aside. It goes on once nothing more
        urgent runs, or for `background_slice_layers` layers on lower-priority work's turn."""
        t0 = time.perf_counter()
        aside, batch = self._aside, None
        if aside is None or self.scheduler.holds_back(aside.top):
            batch = self.scheduler.schedule()
            if aside is not None and not (batch.chunks or batch.completed):
                batch = None  # nothing more urgent can run now
        if batch is not None:
            outputs = self._run(batch, urgent if aside is None else None)
        else:
            outputs = self._go_on(aside, urgent)
        self._busy_seconds += time.perf_counter() - t0
        return outputs

    def _run(self, batch: Batch, urgent: Callable[[], int | None] | None) -> list[RequestOutput]:
        outputs = [self._finish(r, FinishReason(FinishKind.LENGTH, 0), "") for r in batch.completed]
        if not batch.chunks:
            return outputs
        now = time.monotonic()
        for chunk in batch.chunks:
            if chunk.request.queued_seconds is None:
                chunk.request.queued_seconds = now - chunk.request.arrival_time
        run = self.runner.start(batch.chunks)
        top = max(c.request.priority for c in batch.chunks)
        if not run.advance(self._stop_rule(urgent, top, batch.turn)):
            self._aside = SetAside(batch, run, top)
            self.scheduler.set_aside(batch)
            self._steps_set_aside += 1
            return outputs
        return outputs + self._commit(batch, run.finish())

    def _go_on(
        self, aside: SetAside, urgent: Callable[[], int | None] | None
    ) -> list[RequestOutput]:
        """Continue the step set aside: to its end, or for a slice on lower-priority work's turn
        (more urgent work still runs)."""
        turn = self.scheduler.more_urgent(aside.top)
        done = aside.run.advance(self._stop_rule(urgent, aside.top, turn))
        if turn:
            self.scheduler.took_turn()
        return self._finish_set_aside() if done else []

    def _stop_rule(
        self, urgent: Callable[[], int | None] | None, top: int, turn: bool
    ) -> Callable[[], bool] | None:
        if not self.config.background_pause_steps:
            return None  # lower-priority work is never held back
        slice_layers = self.config.background_slice_layers if turn else None
        return stop_rule(urgent, top, slice_layers, self.scheduler.more_urgent)

    def _finish_set_aside(self) -> list[RequestOutput]:
        aside, self._aside = self._aside, None
        if aside is None:
            return []
        try:
            tokens = aside.run.finish()
        except BaseException:
            self.scheduler.drop_set_aside(aside.batch)  # its requests compute those tokens again
            raise
        return self._commit(aside.batch, tokens)

    def _commit(self, batch: Batch, tokens: list[list[Sampled]]) -> list[RequestOutput]:
        """The batch was computed: its KV committed (a draft's up to what the model agreed
        with), its sampled tokens appended."""
        for chunk, sampled in zip(batch.chunks, tokens, strict=True):
            if chunk.draft:
                self.scheduler.accept_draft(chunk, len(sampled) - 1)
                self._drafted += len(chunk.draft)
                self._accepted += len(sampled) - 1
        self.scheduler.commit(batch)
        outputs = []
        for chunk, sampled in zip(batch.chunks, tokens, strict=True):
            req = chunk.request
            if sampled:
                outputs.append(self._append(req, sampled))
            elif req.prefill_only and req.num_computed == req.num_tokens:
                outputs.append(self._finish(req, FinishReason(FinishKind.LENGTH, 0), ""))
        self._steps += 1
        return outputs

    def _append(self, req: Request, sampled: list[Sampled]) -> RequestOutput:
        """Append sampled tokens one by one until one ends the request (the rest are dropped)."""
        new_ids: list[int] = []
        logprobs: list[TokenLogprob] | None = [] if req.sampling.logprobs else None
        text = ""
        for token, logprob in sampled:
            req.output_ids.append(token)
            new_ids.append(token)
            if logprobs is not None and logprob is not None:
                logprobs.append(logprob)
            self._generated += 1
            piece, stop_str = req.detokenizer.step(token)
            text += piece
            reason = self._stop_reason(req, token, stop_str)
            if reason is not None:
                return self._finish(req, reason, text, new_ids, logprobs)
        return self._emit(req, new_ids, text, None, logprobs)

    def _stop_reason(self, req: Request, token: int, stop_str: str | None) -> FinishReason | None:
        sp = req.sampling
        if req.grammar is not None and req.grammar.accept(token) and req.grammar.finished:
            return FinishReason(FinishKind.STOP, token)  # the grammar's end token
        if stop_str is not None:
            return FinishReason(FinishKind.STOP, stop_str)
        if token in sp.stop_token_ids or (token in self.eos_token_ids and not sp.ignore_eos):
            return FinishReason(FinishKind.STOP, token)
        if len(req.output_ids) >= sp.max_new_tokens or req.num_tokens >= req.max_total_tokens:
            return FinishReason(FinishKind.LENGTH, len(req.output_ids))
        return None

    def _finish(
        self,
        req: Request,
        reason: FinishReason,
        text: str,
        new_ids: list[int] | None = None,
        logprobs: list[TokenLogprob] | None = None,
    ) -> RequestOutput:
        node = self.scheduler.finish(req)
        req.finish_reason = reason
        self.requests.pop(req.rid, None)
        ctx: Context | None = req.context
        if ctx is not None:
            ctx.busy = None
            if reason.kind is not FinishKind.ABORT and ctx.context_id in self.contexts:
                self.cache.lock(node)
                if ctx.node is not None:
                    self.cache.unlock(ctx.node)
                ctx.node, ctx.tokens = node, req.tokens
        text += req.detokenizer.flush()
        return self._emit(req, new_ids or [], text, reason, logprobs)

    @staticmethod
    def _emit(
        req: Request,
        new_ids: list[int],
        text: str,
        reason: FinishReason | None,
        logprobs: list[TokenLogprob] | None = None,
    ) -> RequestOutput:
        if logprobs is None and req.sampling.logprobs:
            logprobs = []  # asked, no new token (an abort, the window's end)
        out = RequestOutput(
            req.rid,
            new_ids,
            text,
            reason,
            len(req.prompt_ids),
            len(req.output_ids),
            req.num_cached,
            logprobs,
            req.queued_seconds if reason is not None else None,
        )
        if req.on_output is not None:
            req.on_output(out)
        return out

    def run_until_idle(self) -> None:
        while self.has_work():
            self.step()

    # -- convenience --------------------------------------------------------------------------
    def generate(
        self, prompts: list[list[int] | str], sampling: SamplingParams | None = None, **kwargs
    ) -> list[RequestOutput]:
        """Run prompts to completion together; one merged output (all ids, all text) each."""
        merged: dict[str, RequestOutput] = {}

        def collect(out: RequestOutput) -> None:
            prev = merged.get(out.rid)
            if prev is not None:
                out = RequestOutput(
                    out.rid,
                    prev.new_token_ids + out.new_token_ids,
                    prev.new_text + out.new_text,
                    out.finish_reason,
                    out.prompt_tokens,
                    out.completion_tokens,
                    out.cached_tokens,
                    None if out.logprobs is None else (prev.logprobs or []) + out.logprobs,
                )
            merged[out.rid] = out

        rids = [self.submit(p, sampling, on_output=collect, **kwargs).rid for p in prompts]
        self.run_until_idle()
        return [merged[r] for r in rids]

    def stats(self) -> EngineStats:
        free = self.allocator.num_free
        return EngineStats(
            kv_pool_tokens=self.config.kv_pool_tokens,
            kv_used_tokens=self.config.kv_pool_tokens - free,
            kv_free_tokens=free + self.cache.evictable_tokens,
            cached_tokens=self.cache.cached_tokens,
            waiting_requests=len(self.scheduler.waiting),
            running_requests=len(self.scheduler.running),
            contexts=len(self.contexts),
            prompt_tokens_total=self.scheduler.prompt_tokens_total,
            cached_prompt_tokens_total=self.scheduler.cached_tokens_total,
            generated_tokens_total=self._generated,
            preemptions_total=self.scheduler.num_preemptions,
            shared_prefix_queries_total=self.runner.shared_prefix_queries,
            steps_total=self._steps,
            steps_set_aside_total=self._steps_set_aside,
            draft_tokens_total=self._drafted,
            accepted_draft_tokens_total=self._accepted,
            busy_seconds_total=self._busy_seconds,
        )

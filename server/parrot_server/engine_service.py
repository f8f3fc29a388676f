"""SGLang-native `/generate` and friends on top of the embedded engine: wire models <-> engine
calls. Shapes and field names are SGLang 0.5.x's (see `sglang_protocol.py`)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from collections.abc import AsyncIterator
from typing import Any

from .closing_stream import ClosingStream
from .core.metered_stream import MeteredStream
from .core.metrics import Metrics
from .core.tenants import Principal, Slot, TenantLoad, cache_key
from .engine.async_engine import AsyncEngine
from .engine.errors import EngineError, EngineUnavailableError
from .engine.request import RequestOutput, TokenLogprob
from .engine.sampling_params import SamplingParams
from .sglang_protocol import (
    GenerateRequest,
    GenerateResponse,
    LoadEntry,
    MetaInfo,
)
from .sglang_sampling import from_generate_request

try:
    _VERSION = importlib.metadata.version("parrot-integrations")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
    _VERSION = "unknown"


HEALTH_GENERATE_SECONDS = 20.0
HEALTH_PRIORITY = 1_000  # above every objective's priority: a busy engine still answers


class EngineService:
    """`load`: the tenants' pending work, and `metrics`: where its requests are counted (the
    ServeCore's, when the engine is embedded)."""

    def __init__(
        self,
        engine: AsyncEngine,
        model_name: str,
        model_path: str,
        load: TenantLoad | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.model_name = model_name
        self.model_path = model_path
        self.load = load or TenantLoad()
        self.metrics = metrics
        self._owners: dict[str, str] = {}  # rid -> tenant name, of requests sent here

    async def _submit(self, req: GenerateRequest, who: Principal):
        slot = self.load.slot(who.tenant)
        try:
            stream = await self.engine.submit(
                req.input_ids if req.input_ids is not None else req.text,
                from_generate_request(req),
                rid=req.rid,
                namespace=cache_key(who.tenant.cache_namespace, req.extra_key),
                priority=req.priority or 0,
            )
        except BaseException:
            slot.release()
            raise
        if self.metrics is not None:
            stream = MeteredStream(stream, self.metrics)
        self._owners[stream.rid] = who.tenant.name
        return stream, slot

    def _done(self, rid: str, slot: Slot) -> None:
        self._owners.pop(rid, None)
        slot.release()

    async def generate(self, req: GenerateRequest, who: Principal) -> GenerateResponse:
        """The whole answer; cancelling the coroutine aborts the request."""
        start = time.monotonic()
        stream, slot = await self._submit(req, who)
        acc = _Accumulator(stream.rid, start)
        try:
            async for out in stream:
                acc.add(out)
        finally:
            await stream.aclose()
            self._done(stream.rid, slot)
        return acc.response()

    async def generate_stream(
        self, req: GenerateRequest, who: Principal
    ) -> AsyncIterator[GenerateResponse]:
        """Validated and queued before the first chunk, so errors are still plain 4xx.
        The request is aborted when the iterator is closed, even before its first chunk."""
        start = time.monotonic()
        stream, slot = await self._submit(req, who)
        closed = False

        async def chunks() -> AsyncIterator[GenerateResponse]:
            acc = _Accumulator(stream.rid, start)
            try:
                async for out in stream:
                    acc.add(out)
                    yield acc.response()
            finally:
                await close()

        async def close() -> None:
            nonlocal closed
            if not closed:
                closed = True
                await stream.aclose()
                self._done(stream.rid, slot)

        return ClosingStream(chunks(), close)

    async def health_generate(self) -> None:
        """One greedy token through the whole engine (tokenizer thread, scheduler, model), ahead
        of queued work; `EngineUnavailableError` (503) if it fails or takes longer than
        `HEALTH_GENERATE_SECONDS`."""
        probe = SamplingParams(max_new_tokens=1, temperature=0, ignore_eos=True)
        try:
            async with asyncio.timeout(HEALTH_GENERATE_SECONDS):
                out = await self.engine.complete("ping", probe, priority=HEALTH_PRIORITY)
        except TimeoutError:
            raise EngineUnavailableError(
                f"the engine did not generate a token within {HEALTH_GENERATE_SECONDS:g} s"
            ) from None
        except EngineError as exc:
            raise EngineUnavailableError(f"the engine failed to generate: {exc}") from None
        if out.completion_tokens != 1:
            raise EngineUnavailableError(f"the engine's probe ended early: {out.finish_reason}")

    async def stop_all(self) -> None:
        """The server is stopping: every request sent here ends (as aborted)."""
        for rid in list(self._owners):
            self.engine.abort_soon(rid)

    async def abort(self, who: Principal, rid: str | None) -> list[str]:
        """Aborts `rid` (None: all): the caller's own requests, or any for the operator."""
        if who.admin:
            rids = await self.engine.call(lambda: list(self.engine.engine.requests))
        else:
            rids = [r for r, owner in self._owners.items() if owner == who.tenant.name]
        if rid is not None:
            rids = [rid] if rid in rids else []
        return [r for r in rids if await self.engine.abort(r)]

    @property
    def tokenizer_path(self) -> str:
        """Where the tokenizer was loaded from: for a GGUF model the converted HF-format cache
        directory, so a ServeCore on this machine loads the same tokenizer without torch."""
        tok = self.engine.engine.tokenizer
        return str(getattr(tok, "name_or_path", "") or self.model_path)

    async def model_info(self) -> dict[str, Any]:
        core = self.engine.engine
        return {
            "model_path": self.model_path,
            "tokenizer_path": self.tokenizer_path,
            "is_generation": True,
            "served_model_name": self.model_name,  # as in SGLang 0.5.23's /model_info
            "preferred_sampling_params": None,
            "weight_version": "default",
            "model_type": core.loaded.config.architecture,
            # Ours (SGLang reports the window in /v1/models): what a prompt plus its output fit in.
            "max_context_len": core.max_context_len,
            "vocab_size": core.loaded.config.vocab_size,
        }

    async def server_info(self) -> dict[str, Any]:
        """SGLang's `/server_info`: the launch settings (ServerArgs names), the scheduler's
        (max_total_num_tokens, max_req_input_len) and per-rank internal states."""
        stats = await self.engine.stats()
        core = self.engine.engine
        cfg = core.config
        return {
            "model_path": self.model_path,
            "tokenizer_path": self.tokenizer_path,
            "served_model_name": self.model_name,
            "context_length": core.max_context_len,
            "max_total_num_tokens": cfg.kv_pool_tokens,
            "max_req_input_len": core.max_context_len - 1,
            "max_running_requests": cfg.max_running_requests,
            "chunked_prefill_size": cfg.max_step_tokens,
            "dtype": cfg.dtype,
            "device": cfg.device,
            # Ours: how the weights are held ("GGUF blocks Q4_1, Q8_0 (...)" or "float32").
            "weights": core.loaded.weights,
            "max_queued_requests": cfg.max_queued_requests,
            # Drafts from the request's own text (SGLang's names for its n-gram drafting).
            "speculative_algorithm": "NGRAM" if cfg.speculative_tokens else None,
            "speculative_num_draft_tokens": cfg.speculative_tokens,
            # Our scheduler always orders by priority, higher first; streams carry cumulative
            # text and ids (the names and defaults of SGLang's flags for the same things).
            "enable_priority_scheduling": True,
            "schedule_low_priority_values_first": False,
            "incremental_streaming_output": False,
            "internal_states": [
                stats.__dict__
                | {
                    "cache_hit_rate": stats.cache_hit_rate,
                    "max_running_requests": cfg.max_running_requests,
                }
            ],
            "version": f"parrot-{_VERSION}",
        }

    async def get_load(self) -> list[LoadEntry]:
        """SGLang's `/get_load` (one entry: we have one data-parallel rank), plus our counters."""

        def snapshot():
            core = self.engine.engine
            waiting_prompt = sum(len(r.prompt_ids) for r in core.scheduler.waiting)
            return core.stats(), waiting_prompt

        s, waiting_prompt = await self.engine.call(snapshot)
        # SGLang's num_tokens: KV held by requests (not the evictable cache) + waiting prompts.
        held = s.kv_pool_tokens - s.kv_free_tokens
        return [
            LoadEntry(
                dp_rank=0,
                num_reqs=s.running_requests + s.waiting_requests,
                num_waiting_reqs=s.waiting_requests,
                num_tokens=held + waiting_prompt,
                num_running_reqs=s.running_requests,
                num_used_tokens=s.kv_used_tokens,
                num_total_tokens=s.kv_pool_tokens,
                num_cached_tokens=s.cached_tokens,
                prompt_tokens_total=s.prompt_tokens_total,
                cached_prompt_tokens_total=s.cached_prompt_tokens_total,
                generated_tokens_total=s.generated_tokens_total,
                draft_tokens_total=s.draft_tokens_total,
                accepted_draft_tokens_total=s.accepted_draft_tokens_total,
            )
        ]


class _Accumulator:
    """Cumulative text and ids of one request, as SGLang streams them."""

    def __init__(self, rid: str, start: float) -> None:
        self.rid, self.start = rid, start
        self.text: list[str] = []
        self.ids: list[int] = []
        self.last: RequestOutput | None = None
        self.logprobs: list[TokenLogprob] | None = None  # when the request asked

    def add(self, out: RequestOutput) -> None:
        self.text.append(out.new_text)
        self.ids += out.new_token_ids
        self.last = out
        if out.logprobs is not None:
            self.logprobs = (self.logprobs or []) + out.logprobs

    def response(self) -> GenerateResponse:
        out = self.last
        finish = out.finish_reason.to_dict() if out and out.finish_reason else None
        meta = MetaInfo(
            id=self.rid,
            finish_reason=finish,
            prompt_tokens=out.prompt_tokens if out else 0,
            completion_tokens=out.completion_tokens if out else 0,
            cached_tokens=out.cached_tokens if out else 0,
            e2e_latency=time.monotonic() - self.start,
        )
        if self.logprobs is not None:
            meta.output_token_logprobs = [[e.logprob, e.token_id, None] for e in self.logprobs]
            meta.output_top_logprobs = [
                [[lp, t, None] for t, lp in e.top] if e.top else None for e in self.logprobs
            ]
        return GenerateResponse(text="".join(self.text), output_ids=list(self.ids), meta_info=meta)

"""SGLang-native `/generate` on top of the embedded engine: wire models <-> engine calls."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from parrot_integrations.protocol.sglang import GenerateRequest, GenerateResponse, MetaInfo

from .engine.async_engine import AsyncEngine
from .engine.errors import InvalidRequestError
from .engine.request import RequestOutput
from .engine.sampling_params import SamplingParams


def to_sampling_params(req: GenerateRequest) -> SamplingParams:
    sp = req.sampling_params
    return SamplingParams(
        max_new_tokens=sp.max_new_tokens,
        temperature=sp.temperature,
        top_p=sp.top_p,
        top_k=sp.top_k,
        stop=tuple([sp.stop] if isinstance(sp.stop, str) else sp.stop or ()),
        stop_token_ids=tuple(sp.stop_token_ids or ()),
        sampling_seed=sp.sampling_seed,
        ignore_eos=sp.ignore_eos,
        skip_special_tokens=sp.skip_special_tokens,
    )


class EngineService:
    def __init__(self, engine: AsyncEngine, model_name: str, model_path: str) -> None:
        self.engine = engine
        self.model_name = model_name
        self.model_path = model_path

    async def _submit(self, req: GenerateRequest):
        if req.return_logprob:
            raise InvalidRequestError("return_logprob is not supported by the embedded engine")
        return await self.engine.submit(
            req.input_ids if req.input_ids is not None else req.text,
            to_sampling_params(req),
            rid=req.rid,
            namespace=req.extra_key,
            priority=req.priority or 0,
        )

    async def generate(self, req: GenerateRequest) -> GenerateResponse:
        start = time.monotonic()
        stream = await self._submit(req)
        acc = _Accumulator(stream.rid, start)
        try:
            async for out in stream:
                acc.add(out)
        finally:
            await stream.aclose()
        return acc.response()

    async def generate_stream(self, req: GenerateRequest) -> AsyncIterator[GenerateResponse]:
        """Validated and queued before the first chunk, so errors are still plain 4xx."""
        start = time.monotonic()
        stream = await self._submit(req)

        async def chunks() -> AsyncIterator[GenerateResponse]:
            acc = _Accumulator(stream.rid, start)
            try:
                async for out in stream:
                    acc.add(out)
                    yield acc.response()
            finally:
                await stream.aclose()

        return chunks()

    async def model_info(self) -> dict[str, Any]:
        cfg = self.engine.engine.loaded.config
        return {
            "model_path": self.model_path,
            "tokenizer_path": self.model_path,
            "is_generation": True,
            "served_model_name": self.model_name,
            "max_context_len": self.engine.engine.max_context_len,
            "vocab_size": cfg.vocab_size,
        }

    async def server_info(self) -> dict[str, Any]:
        stats = await self.engine.stats()
        cfg = self.engine.engine.config
        return {
            "model_path": self.model_path,
            "served_model_name": self.model_name,
            "max_total_num_tokens": cfg.kv_pool_tokens,
            "max_running_requests": cfg.max_running_requests,
            "chunked_prefill_size": cfg.max_step_tokens,
            "max_queued_requests": cfg.max_queued_requests,
            "internal_states": [stats.__dict__ | {"cache_hit_rate": stats.cache_hit_rate}],
        }


class _Accumulator:
    """Cumulative text and ids of one request, as SGLang streams them."""

    def __init__(self, rid: str, start: float) -> None:
        self.rid, self.start = rid, start
        self.text: list[str] = []
        self.ids: list[int] = []
        self.last: RequestOutput | None = None

    def add(self, out: RequestOutput) -> None:
        self.text.append(out.new_text)
        self.ids += out.new_token_ids
        self.last = out

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
        return GenerateResponse(text="".join(self.text), output_ids=list(self.ids), meta_info=meta)

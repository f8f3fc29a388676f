"""`MeteredStream`: one engine request's outputs passed through unchanged while its metrics are
taken: the time between its tokens as they stream, its queue wait, and its token counts when it
finishes. Every engine request the ServeCore serves (`/v1`, native calls, `/generate` on the
embedded engine) goes through one, so in a pool the front counts what its engines answered."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from ..engine.request import RequestOutput
from .engine_client import OutputStream
from .metrics import Metrics


class MeteredStream:
    def __init__(self, stream: OutputStream, metrics: Metrics) -> None:
        self.stream, self.metrics = stream, metrics
        self.rid = stream.rid
        self._last_token_at: float | None = None

    def __aiter__(self) -> AsyncIterator[RequestOutput]:
        return self._outputs()

    async def _outputs(self) -> AsyncIterator[RequestOutput]:
        async for out in self.stream:
            self._observe(out)
            yield out

    def _observe(self, out: RequestOutput) -> None:
        m = self.metrics
        n = len(out.new_token_ids)
        if n:
            now = time.monotonic()
            if self._last_token_at is not None:
                # An output may carry several tokens (a remote engine's chunk): each counts as
                # one gap of the average length.
                gap, itl = (now - self._last_token_at) / n, m.itl.labels(m.model_name())
                for _ in range(n):
                    itl.observe(gap)
            self._last_token_at = now
        if out.finish_reason is not None:
            m.count_tokens(out.prompt_tokens, out.cached_tokens, out.completion_tokens)
            if out.queued_seconds is not None:
                m.queue_wait.labels(m.model_name()).observe(out.queued_seconds)

    async def aclose(self) -> None:
        await self.stream.aclose()

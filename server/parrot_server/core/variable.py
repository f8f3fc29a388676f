"""A Semantic Variable on the server: a value that is pending, ready, or failed, with the text
generated so far for streaming readers. Lives on the event loop (no locks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from parrot_integrations.protocol.native import OutputUsage, VariableState, VariableStatus


class Variable:
    def __init__(self, var_id: str, value: str | None = None) -> None:
        self.id = var_id
        self.status = VariableStatus.READY if value is not None else VariableStatus.PENDING
        self.value = value
        self.error: str | None = None
        self.producer: str | None = None  # call id
        self.usage: OutputUsage | None = None  # how its producer generated it
        self.consumers: list[str] = []  # call ids, in submission order
        # What a stream reader is sent: the producer's generation so far, or a given value whole.
        self._parts: list[str] = [value] if value is not None else []
        self._changed = asyncio.Event()

    @property
    def pending(self) -> bool:
        return self.status is VariableStatus.PENDING

    def state(self) -> VariableState:
        return VariableState(
            id=self.id,
            status=self.status,
            value=self.value,
            error=self.error,
            producer=self.producer,
            usage=self.usage,
        )

    # -- writes (the executor, or a client's PUT) -----------------------------------------------
    def append(self, delta: str) -> None:
        if delta and self.pending:
            self._parts.append(delta)
            self._notify()

    def set(self, value: str, usage: OutputUsage | None = None) -> None:
        self.status, self.value, self.usage = VariableStatus.READY, value, usage
        if "".join(self._parts) != value:  # a stream reader must end up with the exact value
            self._parts = [value]
        self._notify()

    def fail(self, error: str) -> None:
        if self.pending:
            self.status, self.error = VariableStatus.FAILED, error
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- reads ----------------------------------------------------------------------------------
    async def wait(self, timeout: float) -> None:
        """Until the variable is ready or failed, or `timeout` seconds pass."""
        try:
            async with asyncio.timeout(timeout):
                while self.pending:
                    await self._changed.wait()
        except TimeoutError:
            pass  # the caller reports the variable as still pending

    async def stream(self) -> AsyncIterator[str]:
        """Text deltas from the start of the generation; ends when the variable is ready or
        failed (check `status`/`error` afterwards)."""
        sent = 0
        while True:
            text = "".join(self._parts)
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)
            if not self.pending:
                return
            await self._changed.wait()

"""`ClosingStream`: an async iterator whose `aclose` also runs a `close` callback. A generator
closed before its first step never runs its `finally`; a stream whose engine requests were
submitted before the generator started (so that bad input is still a plain 4xx) would leave
them running for nobody. Shared by the SGLang and OpenAI-compatible services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ClosingStream(Generic[T]):
    def __init__(self, items: AsyncIterator[T], close: Callable[[], Awaitable[None]]) -> None:
        self._items, self._close = items, close

    def __aiter__(self) -> ClosingStream[T]:
        return self

    async def __anext__(self) -> T:
        return await anext(self._items)

    async def aclose(self) -> None:
        try:
            await self._items.aclose()  # type: ignore[attr-defined]
        finally:
            await self._close()

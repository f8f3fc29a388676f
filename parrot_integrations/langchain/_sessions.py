"""Native sessions reused across runs, so a shipped chain or a batch costs one submit and its
reads: no session created and deleted per run.

A model keeps one shared session per client (the blocking one, and one per event loop for the
async one). A session is replaced, and deleted once its last run ends, when it has taken
`ROTATE_AFTER` variables (the server caps a session's variables and calls) or has been idle for
half its TTL (the server expires idle sessions). A session found gone (a server restart) is
replaced on the next run. Sessions still open when the program exits expire on the server
after `TTL_SECONDS` idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from ..errors import NotFoundError, ParrotError
from ..session import AsyncSession, Session

ROTATE_AFTER = 1024  # variables; the server's default cap is 4096 variables, 2048 calls
TTL_SECONDS = 300.0


class _Shared:
    def __init__(self, session: Session | AsyncSession) -> None:
        self.session = session
        self.users = 0
        self.variables = 0
        self.used = time.monotonic()
        self.retired = False

    def stale(self) -> bool:
        idle = time.monotonic() - self.used
        return self.variables >= ROTATE_AFTER or idle > self.session.ttl_seconds / 2

    def done(self, program_sizes: int, gone: bool) -> bool:
        """A run ended; True when the session is to be deleted now."""
        self.users -= 1
        self.variables += program_sizes
        self.used = time.monotonic()
        self.retired = self.retired or gone
        return self.retired and self.users == 0


class Lease:
    """One run's use of a shared session: count what it adds (`added`); `gone()` after a
    404 so the session is not handed out again."""

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self.session = shared.session
        self.added = 0
        self.lost = False

    def gone(self) -> None:
        self.lost = True


class SessionPool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sync: _Shared | None = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shared] = (
            weakref.WeakKeyDictionary()
        )
        self._alocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @contextmanager
    def lease(self, client: Any) -> Iterator[Lease]:
        retire: _Shared | None = None
        with self._lock:
            shared = self._sync
            if shared is None or shared.retired or shared.stale():
                if shared is not None:
                    shared.retired = True
                    retire = shared if shared.users == 0 else None
                shared = self._sync = _Shared(client.session(ttl_seconds=TTL_SECONDS))
            shared.users += 1
        if retire is not None:
            _close(retire.session)
        lease = Lease(shared)
        try:
            yield lease
        except NotFoundError:
            lease.gone()
            raise
        finally:
            with self._lock:
                close = shared.done(lease.added, lease.lost)
            if close:
                _close(shared.session)

    @asynccontextmanager
    async def alease(self, client: Any) -> AsyncIterator[Lease]:
        loop = asyncio.get_running_loop()
        lock = self._alocks.setdefault(loop, asyncio.Lock())
        async with lock:  # one session made at a time per loop
            shared = self._async.get(loop)
            if shared is None or shared.retired or shared.stale():
                if shared is not None:
                    shared.retired = True
                    if shared.users == 0:
                        await _aclose(shared.session)
                session = await client.session(ttl_seconds=TTL_SECONDS)
                shared = self._async[loop] = _Shared(session)
            shared.users += 1
        lease = Lease(shared)
        try:
            yield lease
        except NotFoundError:
            lease.gone()
            raise
        finally:
            if shared.done(lease.added, lease.lost):
                await _aclose(shared.session)

    async def aclose_loop(self) -> None:
        """Delete this loop's session (its loop is about to end)."""
        shared = self._async.pop(asyncio.get_running_loop(), None)
        if shared is not None:
            await _aclose(shared.session)


# Best effort: a session that cannot be deleted expires on the server anyway.
def _close(session: Any) -> None:
    with contextlib.suppress(ParrotError):
        session.close()


async def _aclose(session: Any) -> None:
    with contextlib.suppress(ParrotError):
        await session.aclose()

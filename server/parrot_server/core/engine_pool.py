"""Many engines behind one `EngineClient`: placement by the global scheduler, health polling,
and failover without lost work.

The executor and the OpenAI service see one engine. Each `submit_many` is tokenized here (the
scheduler places by token-id prefixes, and a request must be able to resume elsewhere from exact
token ids), placed by a `Placement` policy over the engines' `EngineState`s, and sent to the
chosen engines concurrently.

Failure: an engine that fails `unhealthy_after` health checks in a row, or whose connection
breaks under a request, is taken out of rotation. Every request it was running resumes on
another engine from its last committed state (prompt + the tokens already streamed), so its
reader sees one uninterrupted stream. A request waits at most `failover_wait` seconds for some
engine to take it, then fails with `EngineUnavailableError`: no reader waits forever. An engine
that answers its health check again re-registers (with an empty prefix index: a restarted
engine has an empty cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..engine.errors import EngineOverloadedError, EngineUnavailableError
from .engine_client import (
    EngineClient,
    EngineInfo,
    EngineLoad,
    EngineStatus,
    OutputStream,
    Submission,
)
from .placement import EngineState, NoEngineError, Placement, PlacementItem
from .pooled_stream import PooledStream
from .prefix_index import PrefixIndex

log = logging.getLogger(__name__)

Connector = Callable[[], Awaitable[EngineClient]]


@dataclass(frozen=True)
class PoolConfig:
    health_interval: float = 1.0  # seconds between health checks of each engine
    # A check slower than this fails (SGLang 0.5.5's /health generates a token: it takes a
    # forward pass, longer on a busy engine).
    health_timeout: float = 5.0
    unhealthy_after: int = 2  # failed checks in a row that take an engine out of rotation
    failover_wait: float = 60.0  # longest a request waits for a healthy engine to resume on
    startup_timeout: float = 300.0  # longest start() waits for the first engine to answer

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if not value > 0:
                raise ValueError(f"PoolConfig.{name} must be > 0, got {value!r}")


class Member:
    """One engine: how to reach it, its client once connected, what the scheduler knows."""

    def __init__(self, name: str, connect: Connector) -> None:
        self.name = name
        self.connect = connect
        self.client: EngineClient | None = None
        self.state: EngineState | None = None
        self.failed_checks = 0
        self.last_error: str | None = None  # why it could not be registered, last time
        self.down = asyncio.Event()  # set while out of rotation: wakes streams stuck on it

    @property
    def healthy(self) -> bool:
        return self.state is not None and self.state.healthy


class EnginePool(EngineClient):
    def __init__(
        self,
        engines: list[tuple[str, Connector]],
        placement: Placement,
        config: PoolConfig | None = None,
    ) -> None:
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        self.members = [Member(name, connect) for name, connect in engines]
        self.placement = placement
        self.config = config or PoolConfig()
        self._streams: dict[str, PooledStream] = {}
        self._health_task: asyncio.Task | None = None

    # -- life -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connects every engine that answers; waits (up to `startup_timeout`) for at least one.
        The others join when they answer a health check."""
        start = time.monotonic()
        said = start
        while True:
            await asyncio.gather(*(self._try_connect(m) for m in self.members))
            if any(m.healthy for m in self.members):
                break
            waiting = "; ".join(f"{m.name} ({m.last_error})" for m in self.members)
            if time.monotonic() - start > self.config.startup_timeout:
                raise EngineUnavailableError(f"no engine registered in time: {waiting}")
            if time.monotonic() - said > 10:
                log.info("waiting for engines: %s", waiting)
                said = time.monotonic()
            await asyncio.sleep(0.5)
        first = next(m for m in self.members if m.healthy)
        models = {m.state.model for m in self.members if m.state}
        infos = [m.client.info for m in self.members if m.client]
        # A request must fit one engine: the smallest window and pool bound it.
        self.info = EngineInfo(
            model=first.client.info.model,
            model_path=first.client.info.model_path,
            max_context_len=min(i.max_context_len for i in infos),
            kv_pool_tokens=min(i.kv_pool_tokens for i in infos),
            max_running_requests=sum(i.max_running_requests for i in infos),
        )
        if len(models) > 1:
            log.warning("engines serve different models %s; placement filters by model", models)
        self._health_task = asyncio.get_running_loop().create_task(self._health_loop())

    async def _try_connect(self, m: Member) -> None:
        if m.client is not None:
            return
        try:
            m.client = client = await m.connect()
        except Exception as exc:  # not up yet (starting, restarting): retried by health checks
            why = f"{type(exc).__name__}: {exc}"
            if why != m.last_error:  # say each new reason once (a wrong tokenizer, a bad URL)
                level = (
                    logging.DEBUG if isinstance(exc, EngineUnavailableError) else logging.WARNING
                )
                log.log(level, "engine %s not registered: %s", m.name, why)
            m.last_error = why
            return
        m.last_error = None
        i = client.info
        m.state = EngineState(
            name=m.name,
            model=i.model,
            kv_pool_tokens=i.kv_pool_tokens,
            # 0: the engine does not say (an SGLang worker whose limit is derived): its KV
            # pool bounds it then.
            max_running_requests=i.max_running_requests or i.kv_pool_tokens,
            prefixes=PrefixIndex(i.kv_pool_tokens),
        )
        m.down.clear()
        log.info("engine %s registered (%s, %d KV tokens)", m.name, i.model, i.kv_pool_tokens)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval)
            await asyncio.gather(*(self._check(m) for m in self.members))

    async def _check(self, m: Member) -> None:
        if m.client is None:
            await self._try_connect(m)
            return
        try:
            ok = await asyncio.wait_for(m.client.health(), self.config.health_timeout)
        except Exception:
            ok = False
        if ok:
            m.failed_checks = 0
            if not m.state.healthy:
                m.state.healthy = True
                m.state.prefixes.clear()  # it may have restarted with an empty cache
                m.down.clear()
                log.info("engine %s is back: re-registered", m.name)
            return
        m.failed_checks += 1
        if m.failed_checks >= self.config.unhealthy_after:
            self.take_out(m, f"{m.failed_checks} failed health checks")

    def take_out(self, m: Member, why: str) -> None:
        if m.state is not None and m.state.healthy:
            m.state.healthy = False
            log.warning("engine %s out of rotation: %s", m.name, why)
        m.down.set()  # requests waiting on it resume elsewhere

    async def shutdown(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        for stream in list(self._streams.values()):
            await stream.aclose()
        await asyncio.gather(
            *(m.client.shutdown() for m in self.members if m.client), return_exceptions=True
        )

    # -- requests -------------------------------------------------------------------------------
    def _any_client(self) -> EngineClient:
        for m in sorted(self.members, key=lambda m: not m.healthy):
            if m.client is not None:
                return m.client
        raise EngineUnavailableError("no engine connected")

    async def encode(
        self, text: str, *, add_special_tokens: bool = False, fit_window: bool = True
    ) -> list[int]:
        return await self._any_client().encode(
            text, add_special_tokens=add_special_tokens, fit_window=fit_window
        )

    async def decode(self, ids: list[int]) -> str:
        return await self._any_client().decode(ids)

    async def token_strs(self, ids: list[int]) -> list[str]:
        return await self._any_client().token_strs(ids)

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        template_kwargs: dict[str, Any] | None = None,
    ) -> str:
        return self._any_client().render_chat(
            messages,
            tools,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            template_kwargs=template_kwargs,
        )

    @property
    def chat_template(self) -> str | None:
        return self._any_client().chat_template

    async def submit_many(self, items: list[Submission]) -> list[OutputStream | Exception]:
        # Placement reads the ids, and the engines get them: each text is tokenized here only.
        ids: list[list[int] | Exception] = [s.prompt for s in items]  # type: ignore[misc]
        texts = [k for k, s in enumerate(items) if isinstance(s.prompt, str)]
        if texts:
            encoded = await self._any_client().encode_many([items[k].prompt for k in texts])
            for k, e in zip(texts, encoded, strict=True):
                ids[k] = e
        results: list[OutputStream | Exception] = [
            e if isinstance(e, Exception) else None  # type: ignore[misc]
            for e in ids
        ]
        good = [k for k, e in enumerate(ids) if not isinstance(e, Exception)]
        placed = {
            k: PlacementItem(
                rid=items[k].rid or uuid.uuid4().hex,
                prompt_ids=ids[k],
                max_new_tokens=items[k].sampling.max_new_tokens,
                priority=items[k].priority,
                model=None,
                task_group=items[k].task_group,
                app=items[k].app,
                namespace=items[k].namespace,
            )
            for k in good
        }
        try:
            decisions = self.placement.place(list(placed.values()), self._states())
        except NoEngineError as exc:
            return [exc if r is None else r for r in results]
        by_engine: dict[str, list[int]] = {}
        for k, d in zip(good, decisions, strict=True):
            log.debug("place %s -> %s: %s", d.rid, d.engine, d.reason)
            by_engine.setdefault(d.engine, []).append(k)

        async def send(name: str, ks: list[int]) -> None:
            m = self._member(name)
            subs = [dataclasses.replace(items[k], prompt=ids[k], rid=placed[k].rid) for k in ks]
            for k in ks:
                m.state.start(placed[k])
            try:
                got = await m.client.submit_many(subs)
            except EngineUnavailableError as exc:
                got = [exc] * len(ks)
            for k, r in zip(ks, got, strict=True):
                results[k] = self._wrap(items[k], placed[k], m, r)

        await asyncio.gather(*(send(name, ks) for name, ks in by_engine.items()))
        return results

    async def encode_many(self, texts: list[str]) -> list[list[int] | Exception]:
        return await self._any_client().encode_many(texts)

    def _wrap(
        self, sub: Submission, item: PlacementItem, m: Member, result: OutputStream | Exception
    ) -> OutputStream | Exception:
        if isinstance(result, EngineUnavailableError):
            # Never reached the engine: take it out and let the stream place it again.
            m.state.finish(item)
            self.take_out(m, str(result))
            stream = PooledStream(self, sub, item, None, None)
        elif isinstance(result, BaseException):
            m.state.finish(item)
            return result
        else:
            stream = PooledStream(self, sub, item, m, result)
        self._streams[item.rid] = stream
        return stream

    def release(self, m: Member, item: PlacementItem) -> None:
        m.state.finish(item)

    async def place_again(
        self, item: PlacementItem, sub: Submission
    ) -> tuple[Member, OutputStream]:
        """Resubmit a request (its prompt already extended by what it generated) on a healthy
        engine, waiting up to `failover_wait` for one."""
        deadline = time.monotonic() + self.config.failover_wait
        delay = 0.1
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                (d,) = self.placement.place([item], self._states())
            except NoEngineError as exc:
                last = exc
            else:
                m = self._member(d.engine)
                log.info("resume %s on %s: %s", item.rid, d.engine, d.reason)
                m.state.start(item)
                try:
                    return m, await m.client.submit(
                        sub.prompt,
                        sub.sampling,
                        rid=sub.rid,
                        priority=sub.priority,
                        namespace=sub.namespace,
                    )
                except (EngineUnavailableError, EngineOverloadedError) as exc:
                    m.state.finish(item)
                    last = exc
                    if isinstance(exc, EngineUnavailableError):
                        self.take_out(m, str(exc))
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
        raise EngineUnavailableError(
            f"request {item.rid}: no engine could take it within {self.config.failover_wait:g} s"
            f" ({last})"
        )

    def _states(self) -> list[EngineState]:
        return [m.state for m in self.members if m.state is not None]

    def _member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def forget(self, rid: str) -> None:
        self._streams.pop(rid, None)

    async def abort(self, rid: str) -> bool:
        stream = self._streams.get(rid)
        if stream is None:
            return False
        await stream.aclose()
        return True

    async def load(self) -> EngineLoad:
        loads = [await m.client.load() for m in self.members if m.client is not None and m.healthy]
        fields = [f.name for f in dataclasses.fields(EngineLoad)]
        return EngineLoad(**{f: sum(getattr(x, f) for x in loads) for f in fields})

    async def health(self) -> bool:
        return any(m.healthy for m in self.members)

    async def engines(self) -> list[EngineStatus]:
        return [
            EngineStatus(
                m.name,
                m.state.model if m.state else None,
                m.healthy,
                m.state.running if m.state else 0,
            )
            for m in self.members
        ]

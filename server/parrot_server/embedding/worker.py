"""`EmbeddingWorker`: the server's embedding model on a thread of its own, off the event loop
and off the chat engine's thread.

The thread loads the model (so the server starts without waiting for it; requests that come
first wait for the load, and `state` says when it is done), then embeds queued inputs in
forward passes of at most `max_batch` inputs, taken first-come first-served across requests:
concurrent small requests share a pass, and a large one is cut into passes other requests can
slip between.

torch threads: with OpenMP, `torch.set_num_threads` sets the calling thread's team size (and
the count threads that first run torch later start from, which the constructor puts back). The
chat engine's thread set its own while building the engine; this thread sets `threads` of its
own (`--embedding-threads`, a quarter of the cores by default), so an embedding pass competes
with the engine's steps for that share of the cores only. Started after the engine is built,
so the engine's thread has taken its count first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from ..core.errors import ServerShuttingDownError
from ..engine.errors import EngineUnavailableError
from .embedder import Embedded, Embedder, Input
from .model_dir import EmbeddingModelInfo

log = logging.getLogger(__name__)

MAX_BATCH = 32  # inputs per forward pass


def default_threads(cores: int) -> int:
    return max(1, cores // 4)


class EmbeddingModelUnavailableError(EngineUnavailableError):
    """The embedding model failed to load: a 503 naming the cause."""


class LoadState(StrEnum):
    """Where the worker's model load stands (`/health` shows it)."""

    LOADING = "loading"  # requests wait for it
    READY = "ready"
    FAILED = "failed"  # requests get a 503 naming `load_error`


@dataclass(eq=False)
class _Job:
    """One request's inputs; completed from the worker thread through its loop."""

    inputs: Sequence[Input]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Embedded]
    vectors: np.ndarray
    tokens: list[int]
    left: int
    abandoned: bool = False  # the caller stopped waiting, or a pass failed: skip the rest

    def _settle(self, result: Embedded | None, error: BaseException | None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)  # type: ignore[arg-type]

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self.loop.call_soon_threadsafe(settle)

    def put(self, index: int, vector: np.ndarray, tokens: int) -> None:
        self.vectors[index] = vector
        self.tokens[index] = tokens
        self.left -= 1
        if self.left == 0:
            self._settle(Embedded(self.vectors, self.tokens), None)

    def fail(self, error: BaseException) -> None:
        self.abandoned = True
        self._settle(None, error)


class EmbeddingWorker:
    def __init__(
        self,
        info: EmbeddingModelInfo,
        threads: int,
        max_batch: int = MAX_BATCH,
        device: str = "cpu",
    ) -> None:
        for what, value in (("threads", threads), ("max_batch", max_batch)):
            if value < 1:
                raise ValueError(f"{what} must be >= 1, got {value}")
        self.info = info
        self.threads = threads
        self.max_batch = max_batch
        self.device = device
        self._queue: deque[tuple[_Job, int]] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self.state = LoadState.LOADING
        self.load_error: str | None = None  # why the model failed to load
        self._threads_set = threading.Event()
        count = torch.get_num_threads()  # what threads that first run torch later start from
        self._thread = threading.Thread(target=self._run, name="parrot-embeddings", daemon=True)
        self._thread.start()
        self._threads_set.wait()
        torch.set_num_threads(count)  # so that count stays as it was for them

    # -- event loop side ------------------------------------------------------------------------
    async def embed(self, inputs: Sequence[Input]) -> Embedded:
        """The vectors of `inputs` (each a text, or token ids of the model's vocabulary)."""
        loop = asyncio.get_running_loop()
        job = _Job(
            inputs,
            loop,
            loop.create_future(),
            np.empty((len(inputs), self.info.dimensions), dtype=np.float32),
            [0] * len(inputs),
            len(inputs),
        )
        with self._ready:
            if self.load_error is not None:
                raise EmbeddingModelUnavailableError(self.load_error)
            if self._stopping:
                raise ServerShuttingDownError("the server is shutting down")
            self._queue.extend((job, i) for i in range(len(inputs)))
            self._ready.notify()
        try:
            return await job.future
        finally:
            job.abandoned = True  # cancelled (the client left): its queued inputs are skipped

    async def stop(self) -> None:
        """Queued requests fail with a 503; the pass in progress finishes, then the thread ends."""
        with self._ready:
            self._stopping = True
            self._fail_queued(ServerShuttingDownError("the server is shutting down"))
            self._ready.notify()

    # -- worker thread --------------------------------------------------------------------------
    def _fail_queued(self, error: Exception) -> None:
        for job, _ in self._queue:
            job.fail(error)
        self._queue.clear()

    def _take(self) -> list[tuple[_Job, int]] | None:
        """The next pass's inputs (waits for some); None when stopping."""
        with self._ready:
            while True:
                while self._queue and self._queue[0][0].abandoned:
                    self._queue.popleft()
                if self._stopping:
                    return None
                if self._queue:
                    break
                self._ready.wait()
            batch: list[tuple[_Job, int]] = []
            while self._queue and len(batch) < self.max_batch:
                item = self._queue.popleft()
                if not item[0].abandoned:
                    batch.append(item)
            return batch

    def _run(self) -> None:
        torch.get_num_threads()  # this thread's first torch call: its lazy thread setup is done
        torch.set_num_threads(self.threads)  # so nothing later resets its count
        self._threads_set.set()
        try:
            embedder = Embedder(self.info, self.device)
        except Exception as exc:  # a broken folder: answer 503 with the cause, keep serving chat
            log.exception("embedding model %s failed to load", self.info.path)
            with self._ready:
                self.load_error = f"the embedding model {self.info.name} failed to load: {exc}"
                self.state = LoadState.FAILED
                self._fail_queued(EmbeddingModelUnavailableError(self.load_error))
            return
        self.state = LoadState.READY
        log.info(
            "embedding model %s loaded from %s (%d dimensions, inputs cut at %d tokens, "
            "%d torch threads)",
            self.info.name,
            self.info.path,
            self.info.dimensions,
            self.info.max_tokens,
            self.threads,
        )
        while (batch := self._take()) is not None:
            if not batch:
                continue
            try:
                out = embedder.embed([job.inputs[i] for job, i in batch])
            except Exception as exc:  # a bug must fail its requests, not hang them
                log.exception("embedding pass failed")
                for job in {job for job, _ in batch}:
                    job.fail(exc)
                continue
            for k, (job, i) in enumerate(batch):
                if not job.abandoned:
                    job.put(i, out.vectors[k], out.tokens[k])

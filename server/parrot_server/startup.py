"""How `parrot serve` and `parrot engine` start: the listening socket first (a port in use
fails before any model loads), then the embedded engine; and what they say meanwhile: where
they listen, the model and how it was loaded, its context window, the KV pool, the engines. A
few lines at info, each with its values as fields too (`--log-format json` keeps them)."""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine.async_engine import AsyncEngine
    from .engine.engine import Engine

log = logging.getLogger("parrot_server.startup")

BACKLOG = 2048  # uvicorn's default


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listen(args: argparse.Namespace) -> socket.socket | None:
    """The server's listening socket on `--host`/`--port`, for `http.serving.serve`; None
    (message printed) when the address cannot be had."""
    where = url_of(args.host, args.port)
    try:
        family = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((args.host, args.port), family=family, backlog=BACKLOG)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "another process holds it (stop it, or pick another --port)"
        else:
            why = exc.strerror or str(exc)
        print(f"parrot: cannot listen on {where}: {why}", file=sys.stderr)
        return None
    log_listening(url_of(args.host, sock.getsockname()[1]))
    return _says_tcp(sock)


def _says_tcp(sock: socket.socket) -> socket.socket:
    """The same listening socket, its protocol number set to TCP. Accepted connections take
    the listener's number, and asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    sockets that say TCP, which `create_server` leaves at 0. With Nagle on, a response written
    in two parts (uvicorn writes the head, then the body) waits for the client's delayed ACK
    on a kept-alive connection: about 40 ms a request on Linux."""
    return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())


def check_model(args: argparse.Namespace) -> bool:
    """False (message printed) when `--model` names nothing here, for a model loaded on this
    machine (the embedded engine, `--engines N`); before any import of the engine."""
    from .engine.model_source import missing_reason

    why = None if args.model is None else missing_reason(args.model)
    if why is not None:
        print(f"parrot: cannot load model {args.model!r}: {why}", file=sys.stderr)
    return why is None


def build_engine(args: argparse.Namespace) -> AsyncEngine | None:
    """The embedded engine on its worker thread, or None (message printed) if loading fails."""
    from .engine.async_engine import AsyncEngine
    from .engine.config import EngineConfig
    from .engine.engine import Engine
    from .engine.errors import EngineError
    from .engine.model import ModelLoadError

    try:
        config = EngineConfig(
            model=args.model,
            chat_template=args.chat_template,
            dtype=args.dtype,
            gemm_dtype=args.gemm_dtype,
            dense_weights_mb=args.dense_weights_mb,
            device=args.device,
            kv_pool_tokens=args.kv_pool_tokens,
            max_context_len=args.max_context_len,
            max_step_tokens=args.max_step_tokens,
            background_pause_steps=args.background_pause_steps,
            background_slice_layers=args.background_slice_layers,
            background_step_tokens=args.background_step_tokens,
            speculative_tokens=args.speculative_tokens,
            speculative_max_batch=args.speculative_max_batch,
            max_running_requests=args.max_running_requests,
            max_queued_requests=args.max_queued_requests,
            num_threads=args.threads,
        )
    except ValueError as exc:  # a flag out of range
        print(f"parrot: {exc}", file=sys.stderr)
        return None
    start = time.monotonic()
    try:
        engine = AsyncEngine(lambda: Engine(config))
    except (ModelLoadError, EngineError) as exc:
        print(f"parrot: {exc}", file=sys.stderr)
        return None
    log_engine(engine.engine, time.monotonic() - start)
    return engine


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def log_listening(url: str) -> None:
    log.info(
        "listening on %s (requests are answered once the model is loaded)", url, extra={"url": url}
    )


def log_engine(engine: Engine, seconds: float) -> None:
    """The embedded engine, once built: model, load time, window, KV pool."""
    loaded, pool = engine.loaded, engine.runner.pool
    kv_bytes = pool.k.nbytes + pool.v.nbytes
    blocks = loaded.weights.startswith("GGUF blocks")
    log.info(
        "model %s from %s, loaded in %.1f s; weights %s%s on %s",
        loaded.name,
        loaded.path,
        seconds,
        loaded.weights,
        "" if blocks else " (expanded, not kept as quantised blocks)",
        pool.k.device,
        extra={
            "model": loaded.name,
            "model_path": str(loaded.path),
            "load_seconds": round(seconds, 2),
            "weights": loaded.weights,
            "quantised_blocks": blocks,
            "device": str(pool.k.device),
        },
    )
    dtype = str(pool.k.dtype).removeprefix("torch.")
    log.info(
        "context window %d tokens; KV pool %d tokens, %s (%s)",
        engine.max_context_len,
        engine.config.kv_pool_tokens,
        _mib(kv_bytes),
        dtype,
        extra={
            "max_context_len": engine.max_context_len,
            "kv_pool_tokens": engine.config.kv_pool_tokens,
            "kv_pool_bytes": kv_bytes,
            "kv_dtype": dtype,
        },
    )


def log_engines(args: argparse.Namespace, local_urls: list[str]) -> None:
    """`parrot serve` driving engines in other processes: which, and how calls are placed (each
    engine's model is logged as it registers)."""
    urls = [*local_urls, *args.engine_url]
    local = f"{len(local_urls)} local `parrot engine` processes"
    if local_urls:
        local += f" ({args.model or 'the bundled SmolLM2-135M-Instruct'})"
    log.info(
        "engines: %s, %d attached (%s); placement %s",
        local,
        len(args.engine_url),
        ", ".join(urls),
        args.placement,
        extra={"engines": urls, "placement": args.placement},
    )


def log_served(names: tuple[str, ...], embedding_model: str | None = None) -> None:
    """The names clients call the model by, and the embedding model served beside it."""
    if names:
        log.info("served model names: %s", ", ".join(names), extra={"served_names": list(names)})
    if embedding_model is not None:
        log.info("embedding model %s", embedding_model, extra={"embedding_model": embedding_model})

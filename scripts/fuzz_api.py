"""Fuzz the HTTP API from its own OpenAPI document with schemathesis (the `dev` extra): every
operation gets generated valid and invalid requests, and each answer must be no 5xx, a status the
document lists, of a media type it lists, with a body that matches its schema, and a 405 must
list the allowed methods.

    python scripts/fuzz_api.py                # starts a small `parrot serve` and fuzzes it
    python scripts/fuzz_api.py --url http://127.0.0.1:8000 --max-time 600

Bounded: at most `--max-examples` cases per operation and `--max-time` seconds in all. The
server it starts keeps generation short (context window of 128 tokens, one-second variable
waits), so generated requests cannot run long. Exits non-zero when a check fails; schemathesis
prints each failure with a `curl` line that reproduces it.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from parrot_server.spawn import ServerNotReady, spawn_parrot

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "allow_header_conformance",
]
SERVER_FLAGS = [
    *("--max-context-len", "128", "--kv-pool-tokens", "2048", "--max-get-wait", "1"),
    *("--session-ttl", "30", "--max-sessions", "256", "--log-level", "warning"),
]


@contextlib.contextmanager
def _server(timeout: float) -> Iterator[tuple[str, Path]]:
    """A `parrot serve` with small limits on a free loopback port and its log, stopped on
    exit."""
    log = Path(tempfile.mkdtemp(prefix="parrot-fuzz-")) / "serve.log"
    with spawn_parrot(["serve", *SERVER_FLAGS], log) as server:
        try:
            server.wait_healthy(timeout)
        except ServerNotReady as exc:
            sys.exit(str(exc))
        print(f"parrot serve at {server.url}, log {log}", flush=True)
        yield server.url, log


def fuzz(url: str, max_examples: int, max_time: int, seed: int) -> int:
    cmd = [
        *(sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json"),
        *("--checks", ",".join(CHECKS)),
        *("--max-examples", str(max_examples), "--max-time", str(max_time)),
        *("--seed", str(seed), "--workers", "1", "--request-timeout", "60"),
        *("--phases", "examples,coverage,fuzzing", "--suppress-health-check", "all"),
    ]
    # Run elsewhere: schemathesis keeps its cache (`.schemathesis/`) in the working directory.
    return subprocess.run(cmd, cwd=tempfile.mkdtemp(prefix="parrot-fuzz-")).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--max-examples", type=int, default=20, help="cases per operation")
    parser.add_argument("--max-time", type=int, default=300, help="seconds for the whole run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-timeout", type=float, default=300, help="server start, s")
    args = parser.parse_args()
    if args.url:
        return fuzz(args.url.rstrip("/"), args.max_examples, args.max_time, args.seed)
    with _server(args.start_timeout) as (url, log):
        code = fuzz(url, args.max_examples, args.max_time, args.seed)
    # A bug the answers do not show (an engine step that failed, say) is a failure too.
    if "Traceback" in log.read_text():
        print(f"the server logged a traceback: {log}", file=sys.stderr)
        return code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())

"""ServeCore limits: every one explicit, each a `parrot serve` flag and a PARROT_* env var."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeConfig:
    max_sessions: int = 1024  # live sessions; creating one more is a 429
    session_ttl_seconds: float = 600.0  # idle sessions expire (variables, calls freed)
    max_session_ttl_seconds: float = 86400.0
    max_variables_per_session: int = 4096
    max_calls_per_session: int = 2048
    max_calls_per_program: int = 512
    max_get_wait_seconds: float = 300.0  # longest a GET on a pending variable may block
    max_value_chars: int = 1_000_000  # one variable's value (set by a client); /tokenize's text
    max_inflight_calls: int = 256  # calls submitted to the engines at once; the rest queue here
    # One request's body (then 413): room for a variable of max_value_chars even if every
    # character is sent as a JSON escape pair (12 bytes).
    max_request_bytes: int = 16 * 1024 * 1024
    request_body_timeout_seconds: float = 30.0  # for the whole body to arrive (then 408)

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not value > 0:
                raise ValueError(f"ServeConfig.{name} must be > 0, got {value!r}")

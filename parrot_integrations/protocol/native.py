"""Parrot's native API, version 1 (`/api/v1/...`): sessions, Semantic Variables, calls, programs.

One copy of the wire schema, imported by the SDK and the server alike.

Variable ids are chosen by the client (any string of letters, digits, `_`, `-`, `.`, unique in
its session), so a whole program of calls can name the variables that link its calls before
the server has seen any of them, and a client can submit a call without a round trip per
variable. The SDK makes them with uuid4.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ._strict import StrictModel as _Strict
from .penalties import Penalties

API_PREFIX = "/api/v1"
ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
MAX_CHOICES = 256  # strings an output may choose among


class Criteria(enum.StrEnum):
    """What the reader of a variable cares about; the server deduces each call's objective
    from it. LATENCY: the calls producing it run at high priority, as small batches.
    THROUGHPUT: they may be packed into big batches."""

    LATENCY = "latency"
    THROUGHPUT = "throughput"


class VariableStatus(enum.StrEnum):
    PENDING = "pending"  # no value yet (its producer has not finished, or nobody set it)
    READY = "ready"
    FAILED = "failed"  # its producer failed or was cancelled: `error` says why


class SamplingOptions(Penalties):
    """How one output is generated (OpenAI names; the server maps them to the engine's).
    `Penalties` adds `frequency_penalty`, `presence_penalty`, `repetition_penalty`, `min_p`
    and `logit_bias`, as on `/v1`."""

    max_tokens: int | None = Field(
        128,
        ge=1,
        description="most tokens generated for this output; None: until the end of the "
        "context window (the window, or the engine's KV pool if smaller, less the prompt and "
        "one token; the limit /v1 uses when max_tokens is unset)",
    )
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 means greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1, description="-1: no top-k cut")
    stop: list[str] = Field(default_factory=list, max_length=16)
    seed: int | None = None
    ignore_eos: bool = False
    # At most one constraint; the output then follows it (by constrained decoding), unless
    # max_tokens cuts it short.
    json_schema: dict[str, Any] | str | None = Field(
        None, description="the output is JSON valid for this JSON schema (a dict or its text)"
    )
    regex: str | None = Field(None, description="the output matches this regular expression")
    choices: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CHOICES,
        description="the output is exactly one of these strings",
    )

    @model_validator(mode="after")
    def _one_constraint(self) -> SamplingOptions:
        given = [n for n in ("json_schema", "regex", "choices") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"at most one of json_schema, regex, choices; got {given}")
        return self


# -- sessions -----------------------------------------------------------------------------------
class SessionCreate(_Strict):
    ttl_seconds: float | None = Field(
        None,
        gt=0,
        description="idle time after which the session expires (server default if unset)",
    )


class SessionInfo(BaseModel):
    session_id: str
    ttl_seconds: float
    expires_in: float  # seconds left before expiry if nothing touches the session
    variables: int
    calls: int
    calls_running: int


# -- variables ----------------------------------------------------------------------------------
class VariableCreate(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    value: str | None = Field(None, description="set now; else later with PUT, or by a call")


class VariableSet(_Strict):
    value: str


class OutputUsage(BaseModel):
    """How the server generated a variable's value (OpenAI's usage fields and finish reason,
    counted as `/v1` counts them)."""

    prompt_tokens: int = Field(description="tokens of the rendered prompt of this output")
    completion_tokens: int = Field(description="tokens generated")
    cached_tokens: int = Field(
        description="prompt tokens served from the prefix (radix) cache, not computed"
    )
    finish_reason: Literal["stop", "length"] = Field(
        description='"stop" (end of sequence, a stop string) or "length" (max_tokens or the '
        "context window)"
    )
    model: str | None = Field(None, description="the served model's name (as /v1/models)")


class VariableState(BaseModel):
    id: str
    status: VariableStatus
    value: str | None = None
    error: str | None = None
    producer: str | None = None  # id of the call that writes it
    usage: OutputUsage | None = Field(
        None, description="set once a call produced the value; None for values set by clients"
    )


class VariableChunk(BaseModel):
    """One server-sent event of `GET .../variables/{id}/stream`: text appended since the last
    event; the last event has `done=true` (and `error` if the producer failed, or `usage` if a
    call produced the value)."""

    id: str
    delta: str = ""
    done: bool = False
    error: str | None = None
    usage: OutputUsage | None = None


# -- calls and programs -------------------------------------------------------------------------
class OutputBinding(_Strict):
    var: str = Field(pattern=ID_PATTERN, description="the variable this output writes")
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)
    criteria: Criteria | None = Field(
        None, description="how this output will be read, if known at submit time"
    )


class CallSpec(_Strict):
    """One semantic call: a template, its inputs bound to variables, its outputs to new ones."""

    id: str | None = Field(None, pattern=ID_PATTERN, description="call id; the server makes one")
    template: str = Field(max_length=1_000_000)
    inputs: dict[str, str] = Field(
        default_factory=dict, description="input placeholder -> variable id"
    )
    outputs: dict[str, OutputBinding] = Field(description="output placeholder -> binding")
    chat: bool = Field(
        False,
        description="render as a conversation with the model's chat template: the text before "
        "each output is a user turn, each output an assistant turn (for instruct models)",
    )
    system: str | None = Field(
        None,
        max_length=100_000,
        description="chat calls only: a system turn before the conversation (constant text)",
    )
    task_group: str | None = Field(
        None,
        pattern=ID_PATTERN,
        description="a task group declared by the client (say, the inputs of one batch): its "
        "calls are dispatched together; unset, the server groups the producers of one consumer",
    )


class Program(_Strict):
    """Variables and calls submitted together: the server checks the whole graph (with what the
    session already holds) and rejects it as a unit, or accepts and starts it as a unit."""

    variables: list[VariableCreate] = Field(default_factory=list)
    calls: list[CallSpec] = Field(default_factory=list)


class CallStatus(enum.StrEnum):
    WAITING = "waiting"  # some input has no value yet
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CallInfo(BaseModel):
    id: str
    status: CallStatus
    outputs: dict[str, str]  # output placeholder -> variable id
    error: str | None = None
    objective: Criteria | None = None  # as deduced so far
    task_group: str | None = None


class ProgramAccepted(BaseModel):
    session_id: str
    calls: list[CallInfo]
    variables: list[str]

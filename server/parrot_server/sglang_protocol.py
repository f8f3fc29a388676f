"""SGLang 0.5.x native runtime protocol (`POST /generate` and friends), single-prompt form.

Field names follow SGLang's `GenerateReqInput` / `SamplingParams` / `AbortReq` /
`GetLoadReqOutput` (python/sglang/srt/managers/io_struct.py) so that the same client code
drives a real SGLang worker and Parrot's engine. Fields SGLang has and we do not use are
accepted and ignored (extra="allow"), as SGLang itself ignores unknown sampling fields.

What the 0.5.x line answers (read in the 0.5.5 and 0.5.23 sources), and our engine alike:
- `/generate` with `stream: true`: `data: {json}\\n\\n` events, then `data: [DONE]\\n\\n`. `text`
  is cumulative. `output_ids` is cumulative in 0.5.23 (by default: its `--incremental-streaming-
  output` flag makes text and ids incremental) but only the ids since the previous event in 0.5.5;
  `meta_info.completion_tokens` is always the running total. Our engine sends cumulative ids.
- An error before streaming: HTTP 400 with `{"error": {"message": ...}}`. An error after the
  stream started: one `data: {"error": {"message", "type"?, "code"?}}` event, then `[DONE]`
  (SGLang validates a streamed request inside the stream: a bad one is a 200 with an error event;
  our engine answers a 400 before streaming). A malformed body: 400 with SGLang's flat
  `{"object": "error", "message", "type", "code"}`.
- `/get_model_info` and `/get_server_info` (0.5.5), renamed `/model_info` and `/server_info`
  (0.5.23 keeps the old names as deprecated aliases); `/get_load` (0.5.5: a list, one entry per
  data-parallel rank; 0.5.23 has `/v1/loads` instead); `/abort_request` (200, empty body);
  `/flush_cache` (text); `/health`, `/health_generate`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SamplingParamsModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    sampling_seed: int | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    # Logit processors, as SGLang names them (neutral by default).
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_p: float = 0.0
    min_new_tokens: int = 0
    logit_bias: dict[str, float] | None = None  # token id (as a string) -> added to its logit
    # Constrained decoding, at most one: a JSON schema (JSON text; an object is accepted too),
    # a regular expression, an EBNF grammar with a `root` rule.
    json_schema: str | dict[str, Any] | None = None
    regex: str | None = None
    ebnf: str | None = None
    # Parrot's own: the last this-many input tokens were already generated under the
    # constraint (a request resumed on another engine). SGLang ignores it.
    constrained_prompt_tail: int | None = None


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: str | None = None
    input_ids: list[int] | None = None
    sampling_params: SamplingParamsModel = Field(default_factory=SamplingParamsModel)
    rid: str | None = None
    stream: bool = False
    priority: int | None = None  # higher runs first (SGLang's default order)
    extra_key: str | None = None  # cache namespace: different keys never share KV
    # Log-probabilities of the output tokens (the embedded engine does not score the prompt:
    # `logprob_start_len` other than -1 is refused) and of the `top_logprobs_num` best.
    return_logprob: bool = False
    top_logprobs_num: int = 0
    logprob_start_len: int = -1

    @model_validator(mode="after")
    def _one_input(self) -> GenerateRequest:
        if (self.text is None) == (self.input_ids is None):
            raise ValueError("give exactly one of `text` or `input_ids`")
        return self


class MetaInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    finish_reason: dict[str, Any] | None = None  # {"type": "stop"|"length"|"abort", ...}
    prompt_tokens: int
    completion_tokens: int  # output tokens so far (a running total in streams)
    cached_tokens: int  # prompt tokens served from the radix cache
    e2e_latency: float | None = None
    # With `return_logprob`: [logprob, token id, None] per output token so far, and per token
    # the `top_logprobs_num` best as such triples (SGLang's shapes; no token texts).
    output_token_logprobs: list[list[Any]] | None = None
    output_top_logprobs: list[list[list[Any]] | None] | None = None


class GenerateResponse(BaseModel):
    """One response, or one SSE event of a stream (text and output_ids so far)."""

    model_config = ConfigDict(extra="allow")

    text: str | None = None  # SGLang >= 0.5.9 may leave intermediate text to the last event
    output_ids: list[int]
    meta_info: MetaInfo


class AbortRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    rid: str = ""
    abort_all: bool = False


class LoadEntry(BaseModel):
    """One data-parallel rank of `GET /get_load` (SGLang's `GetLoadReqOutput`).

    `num_tokens` is SGLang's: KV tokens held by requests (not the evictable cache) plus the
    prompts still waiting. The `num_*` / `*_total` fields after it are Parrot's engine's
    additions (SGLang's newer `/v1/loads` names where one exists); SGLang leaves them out."""

    model_config = ConfigDict(extra="allow")

    dp_rank: int = 0
    num_reqs: int  # running + waiting
    num_waiting_reqs: int
    num_tokens: int
    num_running_reqs: int | None = None
    num_used_tokens: int | None = None  # KV slots in use, the prefix cache included
    num_total_tokens: int | None = None  # the KV pool
    num_cached_tokens: int | None = None  # held by the prefix cache
    prompt_tokens_total: int | None = None
    cached_prompt_tokens_total: int | None = None
    generated_tokens_total: int | None = None
    draft_tokens_total: int | None = None  # drafted from requests' own text, verified
    accepted_draft_tokens_total: int | None = None


def error_message(body: Any) -> tuple[str | None, int | None]:
    """(message, code) of an SGLang or Parrot error body, whichever shape it has:
    `{"error": {"message", "code"?}}` or the flat `{"message", "code"}`; (None, None) if neither."""
    if not isinstance(body, dict):
        return None, None
    inner = body.get("error")
    if isinstance(inner, dict):
        body = inner
    elif isinstance(inner, str):
        return inner, None
    message = body.get("message")
    code = body.get("code")
    return (
        str(message) if message is not None else None,
        code if isinstance(code, int) and not isinstance(code, bool) else None,
    )


def stream_error(event: dict[str, Any]) -> tuple[str, int | None] | None:
    """(message, HTTP status) if a stream event reports an error: an `{"error": ...}` event, or
    (SGLang 0.5.23) a request the engine refused mid-stream, sent as an abort finish carrying a
    status (503 queue full, 400 bad input); None for a normal event or a plain abort."""
    if "error" in event:
        message, code = error_message(event)
        return message or "error event in the stream", code
    finish = (event.get("meta_info") or {}).get("finish_reason")
    if isinstance(finish, dict) and finish.get("type") == "abort":
        code = finish.get("status_code")
        if isinstance(code, int) and code >= 400:
            return str(finish.get("message") or "aborted by the engine"), code
    return None


def last_logprobs(
    meta: dict[str, Any], count: int
) -> list[tuple[int, float, list[tuple[int, float]]]] | None:
    """The last `count` output tokens' (id, logprob, top (id, logprob) pairs) of a response's
    `meta_info`, whether its lists are cumulative or only this event's (both end with the
    newest tokens); None when it has none."""
    tokens = meta.get("output_token_logprobs")
    if tokens is None:
        return None
    tops = meta.get("output_top_logprobs") or [None] * len(tokens)
    pairs = list(zip(tokens, tops, strict=False))[len(tokens) - count :] if count else []
    return [
        (int(t[1]), float(t[0]), [(int(e[1]), float(e[0])) for e in top or ()]) for t, top in pairs
    ]


def parse_loads(body: Any) -> list[LoadEntry]:
    """`GET /get_load`'s list, or SGLang 0.5.23's `GET /v1/loads` ({"loads": [...]}, its own
    names) mapped to the same entries."""
    if isinstance(body, list):
        return [LoadEntry.model_validate(e) for e in body]
    return [
        LoadEntry(
            dp_rank=e.get("dp_rank", 0),
            num_reqs=e["num_running_reqs"] + e["num_waiting_reqs"],
            num_waiting_reqs=e["num_waiting_reqs"],
            num_tokens=e.get("num_used_tokens", 0),
            num_running_reqs=e["num_running_reqs"],
            num_used_tokens=e.get("num_used_tokens"),
            num_total_tokens=e.get("num_total_tokens") or e.get("max_total_num_tokens"),
        )
        for e in body["loads"]
    ]


class StreamDecoder:
    """One request's `/generate` stream events -> (new text, new token ids), whichever 0.5.x
    release sent them: text is cumulative unless the server runs with
    `incremental_streaming_output`; ids are told apart by `meta_info.completion_tokens` (ids as
    long as the running total are cumulative, else they are the ones since the last event)."""

    def __init__(self, incremental: bool = False) -> None:
        self.incremental = incremental
        self.text = ""  # everything so far
        self.ids: list[int] = []
        self.ids_lost = False  # SGLang 0.5.5 drops the ids of events it coalesces under load

    def feed(self, event: dict[str, Any]) -> tuple[str, list[int]]:
        text, ids = event.get("text"), list(event.get("output_ids") or ())
        total = event["meta_info"].get("completion_tokens")
        seen = len(self.ids)
        if self.incremental:
            new_text, new_ids = text or "", ids
        else:
            new_text = text[len(self.text) :] if isinstance(text, str) else ""
            cumulative = ids[:seen] == self.ids and (total is None or len(ids) == total)
            new_ids = ids[seen:] if cumulative else ids
        if isinstance(total, int) and seen + len(new_ids) != total:
            self.ids_lost = True
        self.text += new_text
        self.ids += new_ids
        return new_text, new_ids

"""What `/v1/chat/completions` and `/v1/completions` requests share: sampling fields (OpenAI's,
plus the vLLM/SGLang extensions Parrot honours), streaming options, `response_format`, and the
check that turns a field Parrot cannot honour into a 400 naming it (`unsupported`)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ._strict import StrictModel
from .native import Criteria
from .penalties import Penalties

MAX_CHOICES_PER_REQUEST = 16  # `n`
MAX_STOP_TOKEN_IDS = 256


def _no_choice(v: Any) -> bool:
    return v in (None, "none", "auto")


# Fields OpenAI (or vLLM) has that Parrot does not implement: value -> neutral or not.
_NEUTRAL: dict[str, Any] = {
    "functions": lambda v: not v,
    "function_call": _no_choice,
    "modalities": lambda v: v is None or v == ["text"],
    "audio": lambda v: v is None,
    "prediction": lambda v: v is None,
    "reasoning_effort": lambda v: v is None,
    "verbosity": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    "moderation": lambda v: v is None,
    "suffix": lambda v: v in (None, ""),
    "spaces_between_special_tokens": lambda v: v in (None, True),
}


def unsupported(value: Any, info: ValidationInfo) -> Any:
    """A field validator: only the field's neutral value passes (see `_NEUTRAL`)."""
    if not _NEUTRAL[info.field_name](value):
        raise PydanticCustomError(
            "unsupported_parameter",
            "{field}={value} is not supported by Parrot's OpenAI-compatible API",
            {"field": info.field_name, "value": repr(value)},
        )
    return value


class StreamOptions(StrictModel):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # we never obfuscate: nothing to switch off


class JsonSchemaFormat(StrictModel):
    """`response_format.json_schema`: a named JSON schema the output must follow."""

    model_config = ConfigDict(extra="forbid", serialize_by_alias=True)  # sent as "schema"

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    # `schema` would shadow a pydantic method; absent: any JSON object.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None  # the output follows the schema either way


class ResponseFormat(StrictModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise PydanticCustomError(
                "invalid_value", "json_schema must be given exactly when type is 'json_schema'"
            )
        return self

    @property
    def schema_text(self) -> str | None:
        """The JSON schema the output must follow, as JSON text; None for free text."""
        if self.type == "text":
            return None
        schema = self.json_schema.schema_ if self.json_schema else None
        return json.dumps(schema if schema is not None else {"type": "object"})


class SamplingRequest(Penalties):
    """What chat and completion requests share (the penalties, `min_p` and `logit_bias` come
    from `Penalties`)."""

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # OpenAI's int64
    stop: str | list[str] | None = None
    n: int | None = Field(default=1, ge=1, le=MAX_CHOICES_PER_REQUEST)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    # Accepted, no effect on the output.
    safety_identifier: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    # Parrot extensions.
    session_id: str | None = None
    criteria: Criteria | None = None
    # vLLM/SGLang extensions.
    top_k: int | None = None  # None or -1: off
    ignore_eos: bool = False  # generate exactly max_tokens
    min_tokens: int | None = Field(default=None, ge=0)  # EOS and stop_token_ids held off
    stop_token_ids: list[int] | None = Field(default=None, max_length=MAX_STOP_TOKEN_IDS)
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool | None = None  # only true (the decoder's way)

    _check_unsupported = field_validator("spaces_between_special_tokens")(unsupported)

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise PydanticCustomError(
                "too_many_stops", "at most 4 stop sequences, got {k}", {"k": len(v)}
            )
        return v

    @field_validator("stop_token_ids")
    @classmethod
    def _token_ids(cls, v: list[int] | None) -> list[int] | None:
        if v and min(v) < 0:
            raise PydanticCustomError("invalid_value", "token ids must be >= 0")
        return v

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingRequest:
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError(
                "invalid_value", "stream_options is only allowed when stream is true"
            )
        limit = self.max_new_tokens
        if self.min_tokens and limit is not None and self.min_tokens > limit:
            raise PydanticCustomError(
                "invalid_value",
                "min_tokens ({m}) must not exceed max_tokens ({k})",
                {"m": self.min_tokens, "k": limit},
            )
        return self

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def top_logprobs_wanted(self) -> int | None:
        """None: no log-probabilities; else how many alternatives per token (per endpoint)."""
        return None

    @property
    def choices(self) -> int:
        return self.n or 1

    def choice_seed(self, index: int) -> int | None:
        """Choice `index`'s seed: `seed` for the first, then derived (distinct draws that
        replay), wrapped into int64."""
        if self.seed is None:
            return None
        return (self.seed + index + 2**63) % 2**64 - 2**63

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

"""SGLang 0.5.x native runtime protocol (`POST /generate` and friends), single-prompt form.

Field names follow SGLang's `GenerateReqInput` / `SamplingParams` so that the same client code
drives a real SGLang worker and Parrot's embedded engine. Fields SGLang has and we do not use are
accepted and ignored (extra="allow"), as SGLang itself ignores unknown sampling fields.
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


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: str | None = None
    input_ids: list[int] | None = None
    sampling_params: SamplingParamsModel = Field(default_factory=SamplingParamsModel)
    rid: str | None = None
    stream: bool = False
    priority: int | None = None  # higher runs first
    extra_key: str | None = None  # cache namespace: different keys never share KV
    return_logprob: bool = False  # not supported by the embedded engine (rejected if true)

    @model_validator(mode="after")
    def _one_input(self) -> GenerateRequest:
        if (self.text is None) == (self.input_ids is None):
            raise ValueError("give exactly one of `text` or `input_ids`")
        return self


class MetaInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    finish_reason: dict[str, Any] | None = None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens served from the radix cache
    e2e_latency: float | None = None


class GenerateResponse(BaseModel):
    """One response, or one SSE chunk of a stream (text and output_ids so far, as SGLang)."""

    text: str
    output_ids: list[int]
    meta_info: MetaInfo


class AbortRequest(BaseModel):
    rid: str = ""
    abort_all: bool = False

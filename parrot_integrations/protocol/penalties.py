"""Logit processors a request may ask for, under OpenAI's names (and vLLM/SGLang's for the
extensions). Shared by `/v1` requests and native `SamplingOptions`, so both map them to the
engine the same way (the server's `sampling_params.processor_params`)."""

from __future__ import annotations

import math

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from ._strict import StrictModel

MAX_LOGIT_BIAS_TOKENS = 1024  # entries in one `logit_bias`
LOGIT_BIAS_RANGE = 100.0  # OpenAI's: each bias in [-100, 100]


class Penalties(StrictModel):
    # OpenAI's: subtracted from a token's logit per occurrence in the output so far
    # (frequency) and once if it occurs there at all (presence). In [-2, 2].
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    # vLLM/SGLang's: CTRL's penalty over the prompt and the output (> 1 discourages repeats).
    repetition_penalty: float | None = Field(default=None, gt=0, le=10)
    # vLLM/SGLang's: tokens less likely than min_p times the most likely one are never drawn.
    min_p: float | None = Field(default=None, ge=0, le=1)
    # OpenAI's: token id (as a string) -> added to its logit; -100 bans it, 100 all but forces it.
    logit_bias: dict[str, float] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _token_ids_and_range(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if not v:
            return v
        if len(v) > MAX_LOGIT_BIAS_TOKENS:
            raise PydanticCustomError(
                "invalid_value",
                "at most {n} tokens, got {k}",
                {"n": MAX_LOGIT_BIAS_TOKENS, "k": len(v)},
            )
        for key, bias in v.items():
            if not key.isascii() or not key.isdigit():
                raise PydanticCustomError(
                    "invalid_value", "keys must be token ids (digits), got '{key}'", {"key": key}
                )
            if not math.isfinite(bias) or abs(bias) > LOGIT_BIAS_RANGE:
                raise PydanticCustomError(
                    "invalid_value",
                    "biases must be in [-100, 100], got {bias} for token {key}",
                    {"bias": bias, "key": key},
                )
        return v

    @property
    def token_bias(self) -> dict[int, float]:
        return {int(k): b for k, b in (self.logit_bias or {}).items()}

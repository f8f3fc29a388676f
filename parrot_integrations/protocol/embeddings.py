"""`POST /v1/embeddings`, in OpenAI's shape. One copy, used by server and clients.

- `input`: a text, a list of texts, a list of token ids, or a list of lists of token ids; at most
  `MAX_INPUTS` inputs, none empty. Token ids are the embedding model's own (its tokenizer's
  vocabulary, not the chat model's): they are decoded to text and embedded as that text; an id
  outside the vocabulary is a 400.
- `model`: the embedding model's served name (GET /v1/models lists it); another is a 404.
- `encoding_format`: `float` (a JSON array per input) or `base64` (the little-endian float32
  bytes of the vector, base64-encoded, as OpenAI sends them).
- `dimensions`: only the model's own size is accepted (the model cannot shorten its vectors).
- `user`: accepted and ignored.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from ._strict import StrictModel

MAX_INPUTS = 2048  # inputs in one request, as OpenAI's
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"  # what `parrot serve` serves unless told otherwise


class EncodingFormat(StrEnum):
    FLOAT = "float"
    BASE64 = "base64"


class EmbeddingRequest(StrictModel):
    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: EncodingFormat = EncodingFormat.FLOAT
    dimensions: int | None = Field(default=None, gt=0)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _inputs_present(cls, value: str | list) -> str | list:
        if not value:
            raise PydanticCustomError("invalid_value", "an input may not be empty")
        items = value if isinstance(value, list) and not isinstance(value[0], int) else [value]
        if len(items) > MAX_INPUTS:
            raise PydanticCustomError(
                "invalid_value",
                "{n} inputs: at most {max} in one request",
                {"n": len(items), "max": MAX_INPUTS},
            )
        empty = next((i for i, item in enumerate(items) if not item), None)
        if empty is not None:
            raise PydanticCustomError(
                "invalid_value",
                "input {i} is empty: every input needs text or token ids",
                {"i": empty},
            )
        return value

    @property
    def inputs(self) -> list[str] | list[list[int]]:
        """Every input as one item: a text, or one text's token ids."""
        value = self.input
        if isinstance(value, str) or isinstance(value[0], int):
            return [value]  # type: ignore[list-item]
        return value  # type: ignore[return-value]


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage

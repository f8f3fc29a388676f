"""`--embedding-model` -> the embedding model `parrot serve` serves beside the chat model: a
folder, `none`, or by default the packaged all-MiniLM-L6-v2 (when its package is missing the
server runs without one and says so in one log line)."""

from __future__ import annotations

import logging
from pathlib import Path

from .model_dir import EmbeddingModelInfo, EmbeddingModelNotFoundError
from .packaged import INSTALL, MODEL_NAME, packaged_model_dir

log = logging.getLogger(__name__)

NONE = "none"  # `--embedding-model none` (or `--no-embedding-model`): serve no embedding model


def served_embedding_model(value: str | None) -> EmbeddingModelInfo | None:
    """The model of the flag's `value` (None: the default), or None for none. A folder that is
    not a model raises `EmbeddingModelNotFoundError`."""
    if value is not None and value.strip().lower() == NONE:
        return None
    if value is None:
        try:
            return EmbeddingModelInfo.read(packaged_model_dir(), MODEL_NAME)
        except EmbeddingModelNotFoundError:
            log.info(
                "no embedding model: /v1/embeddings answers 404 (%s for the default %s, or "
                "pass --embedding-model PATH)",
                INSTALL,
                MODEL_NAME,
            )
            return None
    return EmbeddingModelInfo.read(Path(value).expanduser())

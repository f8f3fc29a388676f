"""`ParrotEmbedding`: LlamaIndex's embedding model over the server's `/v1/embeddings`, so the
vectors of a RAG app come from the same server as its answers (no model in the app's process).

Texts go in batches of `embed_batch_size` (one request each; the server takes at most 2048
inputs per request); the async hooks await `AsyncParrotClient`, so LlamaIndex's concurrent
batches (`num_workers`) reach the server together, where they share forward passes.
"""

from __future__ import annotations

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field

from ..protocol.embeddings import DEFAULT_EMBEDDING_MODEL, EmbeddingResponse
from ._connection import ServerConnection


def _vectors(response: EmbeddingResponse) -> list[Embedding]:
    return [d.embedding for d in sorted(response.data, key=lambda d: d.index)]  # type: ignore[misc]


class ParrotEmbedding(BaseEmbedding, ServerConnection):
    """The server's embedding model (`parrot serve --embedding-model`; by default
    all-MiniLM-L6-v2) as LlamaIndex's `embed_model`.

    ```python
    from parrot_integrations.llamaindex import Parrot, ParrotEmbedding
    index = VectorStoreIndex.from_documents(docs, embed_model=ParrotEmbedding())
    engine = index.as_query_engine(llm=Parrot(max_tokens=128))
    ```
    """

    model_name: str = Field(
        default=DEFAULT_EMBEDDING_MODEL,
        description="The server's embedding model, as GET /v1/models lists it.",
    )

    @classmethod
    def class_name(cls) -> str:
        return "ParrotEmbedding"

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return _vectors(self.client.embeddings(texts, model=self.model_name))

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return _vectors(await self.aclient.embeddings(texts, model=self.model_name))

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await self._aget_text_embedding(query)

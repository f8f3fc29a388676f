"""`MiniLMEmbedding`: the packaged all-MiniLM-L6-v2, offline, as LlamaIndex's embed model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter

from parrot_integrations.llamaindex.embeddings import EmbeddingModelNotFoundError, MiniLMEmbedding

pytestmark = pytest.mark.slow  # loads a model (a few seconds)

DATA = Path(__file__).resolve().parent.parent / "cookbook" / "data"


@pytest.fixture(scope="module")
def embed_model():
    return MiniLMEmbedding()


def test_same_vectors_as_sentence_transformers(embed_model):
    a, b, c = map(
        np.array,
        embed_model.get_text_embedding_batch(
            [
                "A man is eating food.",
                "A man is eating a piece of bread.",
                "The girl is carrying a baby.",
            ]
        ),
    )
    assert a.shape == (384,)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    # sentence-transformers' documented similarity for this pair with all-MiniLM-L6-v2.
    assert float(a @ b) == pytest.approx(0.7553, abs=2e-3)
    assert float(a @ c) < 0.1


def test_vector_index_retrieves_the_relevant_chunk(embed_model):
    # Only the file name as metadata: the absolute path (part of each chunk's text) would make
    # chunking depend on where the checkout lives.
    docs = SimpleDirectoryReader(
        str(DATA), file_metadata=lambda path: {"file_name": Path(path).name}
    ).load_data()
    splitter = SentenceSplitter(chunk_size=128, chunk_overlap=0)
    index = VectorStoreIndex.from_documents(
        docs, embed_model=embed_model, transformations=[splitter]
    )
    assert len(index.docstore.docs) > len(docs)  # several chunks per document
    retriever = index.as_retriever(similarity_top_k=1)
    cases = {
        "How do bees tell each other where the flowers are?": ("honeybees.md", "waggle"),
        "What closed European airspace in 2010?": ("volcanoes.md", "ash cloud"),
        "How much salt goes into the loaf?": ("sourdough.md", "10 grams of salt"),
        "Why were lighthouse keepers called wickies?": ("lighthouses.md", "wickies"),
    }
    for question, (file_name, phrase) in cases.items():
        (hit,) = retriever.retrieve(question)
        assert hit.node.metadata["file_name"] == file_name, question
        assert phrase in hit.node.get_content(), question


def test_a_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(EmbeddingModelNotFoundError, match="config.json"):
        MiniLMEmbedding(model_path=str(tmp_path)).get_query_embedding("hi")

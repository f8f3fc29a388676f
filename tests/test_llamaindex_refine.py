"""`ParrotRefine` / `ParrotCompactAndRefine` against a real `parrot serve`: the refine chain as
one program, answers equal to LlamaIndex's own synthesizers over the same chunks."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.response_synthesizers import CompactAndRefine, Refine

from parrot_integrations.llamaindex import Parrot, ParrotCompactAndRefine, ParrotRefine
from parrot_integrations.llamaindex.embeddings import MiniLMEmbedding

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent.parent / "cookbook" / "data"
QUERY = "How do honeybees tell each other where the flowers are?"


@pytest.fixture(scope="module")
def index():
    # Only the file name as metadata: the absolute path (part of each chunk's text) would make
    # chunking depend on where the checkout lives.
    docs = SimpleDirectoryReader(
        str(DATA), file_metadata=lambda path: {"file_name": Path(path).name}
    ).load_data()
    splitter = SentenceSplitter(chunk_size=128, chunk_overlap=0)
    return VectorStoreIndex.from_documents(
        docs, embed_model=MiniLMEmbedding(), transformations=[splitter]
    )


@pytest.fixture
def llm(server_url):
    llm = Parrot(api_base=server_url, temperature=0.0, max_tokens=32)
    yield llm
    llm.close()


def _program_posts(llm: Parrot) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    llm.client._http.event_hooks["request"].append(lambda r: seen.append((r.method, r.url.path)))
    return seen


def test_refine_chain_matches_llamaindex_in_one_submit(llm, index):
    nodes = index.as_retriever(similarity_top_k=3).retrieve(QUERY)
    # Both with their defaults: LlamaIndex's chat QA prompt (system + user) and refine prompt.
    expected = str(Refine(llm=llm).synthesize(QUERY, nodes))

    ours = ParrotRefine(llm=llm)
    seen = _program_posts(llm)
    answer = str(ours.synthesize(QUERY, nodes))
    assert answer == expected and answer.strip()
    assert ours.last_plan == 3  # a chain of three dependent calls
    assert sum(m == "POST" and p.endswith("/programs") for m, p in seen) == 1
    assert not any(p.startswith("/v1/") for _, p in seen)


async def test_compact_and_refine_async_and_streaming(server_url, index):
    # A window that packs the 6 chunks into 2: a chain of two.
    llm = Parrot(api_base=server_url, temperature=0.0, max_tokens=32, context_window=1000)
    nodes = index.as_retriever(similarity_top_k=6).retrieve(QUERY)
    theirs = CompactAndRefine(llm=llm)
    expected = str(await theirs.asynthesize(QUERY, nodes))

    ours = ParrotCompactAndRefine(llm=llm)
    assert str(await ours.asynthesize(QUERY, nodes)) == expected
    assert ours.last_plan == 2

    streamed = ParrotCompactAndRefine(llm=llm, streaming=True).synthesize(QUERY, nodes)
    assert "".join(streamed.response_gen) == expected
    astreamed = await ParrotCompactAndRefine(llm=llm, streaming=True).asynthesize(QUERY, nodes)
    assert "".join([p async for p in astreamed.async_response_gen()]) == expected


def test_as_query_engine_and_edge_cases(llm, index):
    engine = index.as_query_engine(
        llm=llm, response_synthesizer=ParrotCompactAndRefine(llm=llm), similarity_top_k=2
    )
    response = engine.query("How much salt goes into the loaf?")
    assert str(response).strip()
    assert response.source_nodes[0].node.metadata["file_name"] == "sourdough.md"

    refine = ParrotRefine(llm=llm)
    assert refine.get_response(QUERY, []) == "Empty Response"
    assert refine.get_response(QUERY, [], prev_response="kept") == "kept"
    # A previous answer starts the chain at a refine step (no QA call).
    assert refine.get_response(QUERY, ["Bees dance."], prev_response="They dance.").strip()
    assert refine.last_plan == 1

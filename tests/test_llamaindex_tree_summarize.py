"""`ParrotTreeSummarize` against a real `parrot serve`: a VectorStoreIndex over cookbook/data
built offline (MiniLMEmbedding), queried through LlamaIndex's TreeSummarize and ours."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.prompts import ChatPromptTemplate
from llama_index.core.prompts.default_prompts import DEFAULT_TREE_SUMMARIZE_PROMPT
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers import TreeSummarize
from llama_index.core.schema import MetadataMode

from parrot_integrations import InvalidRequestError
from parrot_integrations.llamaindex import Parrot, ParrotTreeSummarize
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


@pytest.fixture(scope="module")
def nodes(index):
    return index.as_retriever(similarity_top_k=6).retrieve(QUERY)


@pytest.fixture
def llm(server_url):
    # A small window: the 6 chunks do not fit one prompt, so tree_summarize builds a tree.
    llm = Parrot(api_base=server_url, temperature=0.0, max_tokens=32, context_window=400)
    yield llm
    llm.close()


def _chunks(nodes) -> list[str]:
    """The texts a synthesizer receives (as BaseSynthesizer.synthesize passes them)."""
    return [n.node.get_content(metadata_mode=MetadataMode.LLM) for n in nodes]


class _Requests:
    """Every HTTP request a client sends (httpx event hook)."""

    def __init__(self, http) -> None:
        self.seen: list[tuple[str, str]] = []
        http.event_hooks["request"].append(lambda r: self.seen.append((r.method, r.url.path)))

    def count(self, method: str, suffix: str) -> int:
        return sum(m == method and p.endswith(suffix) for m, p in self.seen)


def test_same_answer_as_llamaindex_tree_summarize_in_one_submit(llm, nodes):
    # Both with their defaults: LlamaIndex's chat prompt (a system message, then the user's).
    theirs = TreeSummarize(llm=llm)
    assert [
        m.role.value
        for m in llm._get_messages(theirs._summary_template, query_str="q", context_str="c")
    ] == ["system", "user"]
    expected = str(theirs.synthesize(QUERY, nodes))

    ours = ParrotTreeSummarize(llm=llm)
    leaves, levels = ours.plan(QUERY, _chunks(nodes))
    assert len(leaves) == 3 and [len(level) for level in levels] == [1]  # a real tree

    requests = _Requests(llm.client._http)
    answer = str(ours.synthesize(QUERY, nodes))
    assert answer == expected and answer.strip()
    assert ours.last_plan == [3, 1]
    assert requests.count("POST", "/programs") == 1  # the whole tree, once
    assert not any(p.startswith("/v1/") for _, p in requests.seen)  # no per-call requests
    assert len(requests.seen) <= 4  # create session, program, get the answer, delete session


async def test_async_and_streaming_answers_match(llm, nodes):
    theirs = TreeSummarize(llm=llm, use_async=True)
    expected = str(await theirs.asynthesize(QUERY, nodes))

    assert str(await ParrotTreeSummarize(llm=llm).asynthesize(QUERY, nodes)) == expected

    streamed = ParrotTreeSummarize(llm=llm, streaming=True).synthesize(QUERY, nodes)
    pieces = list(streamed.response_gen)
    assert len(pieces) > 1 and "".join(pieces) == expected

    astreamed = await ParrotTreeSummarize(llm=llm, streaming=True).asynthesize(QUERY, nodes)
    assert "".join([p async for p in astreamed.async_response_gen()]) == expected


def test_query_engines(llm, index):
    synth = ParrotTreeSummarize(llm=llm)
    engine = index.as_query_engine(llm=llm, response_synthesizer=synth, similarity_top_k=3)
    response = engine.query("What closed European airspace in 2010?")
    assert str(response).strip()
    assert response.source_nodes[0].node.metadata["file_name"] == "volcanoes.md"

    retriever = index.as_retriever(similarity_top_k=2)
    engine = RetrieverQueryEngine.from_args(retriever, llm=llm, response_synthesizer=synth)
    assert str(engine.query("How much salt goes into the loaf?")).strip()


def test_a_deep_tree_is_one_program(server_url, index):
    # A tiny window: 6 leaves, fan-in 2, three upper levels, all in one program.
    llm = Parrot(api_base=server_url, temperature=0.0, max_tokens=32, context_window=180)
    nodes = index.as_retriever(similarity_top_k=6).retrieve(QUERY)
    synth = ParrotTreeSummarize(llm=llm)
    k = synth.fan_in(QUERY)
    leaves, levels = synth.plan(QUERY, _chunks(nodes))
    assert len(levels) >= 2, (len(leaves), levels)
    below = len(leaves)
    for level in levels:
        assert sorted(i for group in level for i in group) == list(range(below))
        assert all(1 <= len(group) <= k for group in level)
        below = len(level)
    assert below == 1

    requests = _Requests(llm.client._http)
    assert str(synth.synthesize(QUERY, nodes)).strip()
    assert requests.count("POST", "/programs") == 1
    assert synth.last_plan == [len(leaves)] + [len(level) for level in levels]


def test_text_prompt_and_system_prompt_as_llamaindex(llm, server_url, nodes):
    # An explicit text prompt is one user turn, as LlamaIndex sends it.
    text = DEFAULT_TREE_SUMMARIZE_PROMPT
    expected = str(TreeSummarize(llm=llm, summary_template=text).synthesize(QUERY, nodes))
    assert str(ParrotTreeSummarize(llm=llm, summary_template=text).synthesize(QUERY, nodes)) == (
        expected
    )
    # llm.system_prompt: LlamaIndex puts a system message first; here the call's system turn.
    sys_llm = Parrot(
        api_base=server_url,
        temperature=0.0,
        max_tokens=32,
        context_window=400,
        system_prompt="You answer in one short sentence.",
    )
    try:
        theirs = TreeSummarize(llm=sys_llm, summary_template=text)
        expected = str(theirs.synthesize(QUERY, nodes))
        ours = ParrotTreeSummarize(llm=sys_llm, summary_template=text)
        assert str(ours.synthesize(QUERY, nodes)) == expected
    finally:
        sys_llm.close()


def test_refuses_what_a_native_call_cannot_express(llm, server_url):
    from llama_index.core.llms import ChatMessage
    from llama_index.core.llms.mock import MockLLM

    with pytest.raises(InvalidRequestError, match="needs a Parrot LLM"):
        ParrotTreeSummarize(llm=MockLLM())

    def refused(template, match: str, on=llm) -> None:
        synth = ParrotTreeSummarize(llm=on, summary_template=template)
        with pytest.raises(InvalidRequestError, match=match):
            synth.get_response(QUERY, ["Bees dance."])

    user = ChatMessage(role="user", content="Context: {context_str}\nQuery: {query_str}\n")
    # A system message that is not the first one.
    refused(ChatPromptTemplate([user, ChatMessage(role="system", content="Be brief.")]), "system")
    # A system message with a template variable (a system turn is constant text).
    system = ChatMessage(role="system", content="Questions about {query_str}.")
    refused(ChatPromptTemplate([system, user]), "system message uses")
    # llm.system_prompt before LlamaIndex's chat default: two system messages.
    two = Parrot(api_base=server_url, temperature=0.0, max_tokens=32, system_prompt="Be brief.")
    try:
        refused(None, "system", on=two)
    finally:
        two.close()

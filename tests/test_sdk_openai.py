"""The SDK's OpenAI-compatible methods against a real `parrot serve` (`server_url`).

Tiny `max_tokens` everywhere: the default model runs on CPU.
"""

from __future__ import annotations

import asyncio

import pytest

from parrot_integrations import (
    AsyncParrotClient,
    InvalidRequestError,
    NotFoundError,
    ParrotClient,
    ServerError,
    _http,
)
from parrot_integrations.errors import OverloadedError
from parrot_integrations.protocol.errors import ErrorInfo, ErrorResponse
from parrot_integrations.protocol.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    StreamOptions,
)

MESSAGES = [{"role": "user", "content": "Name a colour."}]


def _chat(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(messages=MESSAGES, max_tokens=4, temperature=0, **kw)


@pytest.fixture
def client(server_url):
    with ParrotClient(server_url) as c:
        yield c


def test_list_models(client):
    models = client.list_models()
    assert len(models.data) == 2 and models.data[0].id  # the chat model, then the embedding one


def test_chat_completion(client):
    out = client.chat_completion(_chat())
    assert isinstance(out, ChatCompletion)
    assert out.choices[0].message.content
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.completion_tokens <= 4
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_stream_flag_is_the_methods_choice(client):
    # A caller's stream=True on the non-streaming method must not break the parse.
    out = client.chat_completion(
        _chat(stream=True, stream_options=StreamOptions(include_usage=True))
    )
    assert isinstance(out, ChatCompletion)


def test_chat_stream_matches_non_stream(client):
    full = client.chat_completion(_chat())
    chunks = list(
        client.chat_completion_stream(
            _chat(stream=True, stream_options=StreamOptions(include_usage=True))
        )
    )
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content  # greedy: same tokens
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    # The same prompt again: its prefix comes from the radix cache.
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0


def test_completion_and_stream(client):
    req = CompletionRequest(prompt="The sky is", max_tokens=3, temperature=0)
    full = client.completion(req)
    assert isinstance(full, Completion) and full.usage.completion_tokens <= 3
    chunks = list(client.completion_stream(req))
    assert all(isinstance(c, Completion) for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason


def test_errors_are_typed(client):
    with pytest.raises(NotFoundError) as info:
        client.chat_completion(_chat(model="no-such-model"))
    assert "no-such-model" in info.value.message and info.value.status_code == 404
    # A streamed request is validated before the 200: the typed error, not a broken stream.
    with pytest.raises(NotFoundError):
        list(client.chat_completion_stream(_chat(session_id="no-such-session")))
    too_long = CompletionRequest(prompt=list(range(1, 3000)), max_tokens=1)
    with pytest.raises(InvalidRequestError):
        client.completion(too_long)


def test_error_event_mid_stream_raises_typed_error():
    # What the server sends when a request fails after the 200 (server/openai_service.py).
    body = ErrorResponse(error=ErrorInfo(message="queue full", type="overloaded_error", code=503))
    with pytest.raises(OverloadedError, match="queue full"):
        _http.parse_openai_sse_line(f"data: {body.model_dump_json()}", ChatCompletionChunk)
    with pytest.raises(ServerError):
        _http.parse_openai_sse_line("data: {not json", ChatCompletionChunk)
    assert _http.parse_openai_sse_line("data: [DONE]", Completion) is _http.SSE_DONE
    assert _http.parse_openai_sse_line(": keep-alive", Completion) is None


def test_async_client(server_url):
    async def run():
        async with AsyncParrotClient(f"{server_url}/v1/") as client:
            models = await client.list_models()
            # Two requests at once on one event loop.
            full, comp = await asyncio.gather(
                client.chat_completion(_chat()),
                client.completion(CompletionRequest(prompt="One, two,", max_tokens=2)),
            )
            chunks = [c async for c in client.chat_completion_stream(_chat())]
            comp_chunks = [
                c
                async for c in client.completion_stream(
                    CompletionRequest(prompt="One, two,", max_tokens=2, temperature=0)
                )
            ]
            with pytest.raises(NotFoundError):
                await client.completion(CompletionRequest(prompt="x", model="nope"))
            return models, full, comp, chunks, comp_chunks

    models, full, comp, chunks, comp_chunks = asyncio.run(run())
    assert models.data[0].id == full.model
    assert comp.choices[0].text
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert comp_chunks[-1].choices[0].finish_reason is not None

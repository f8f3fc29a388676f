"""LlamaIndex `OpenAI` LLM keyword arguments on `Parrot`, against a real `parrot serve`:
`default_headers`, `http_client` / `async_http_client` seen on the wire by the caller's own httpx
clients, `additional_kwargs` in the body, and log probabilities in LlamaIndex's shape."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from llama_index.core.llms import ChatMessage, MessageRole
from wire import Wire

from parrot_integrations.llamaindex import Parrot

pytestmark = pytest.mark.slow

QUESTION = "Name a colour."


def test_headers_and_clients_reach_the_wire(server_url):
    wire = Wire()
    with httpx.Client(event_hooks={"request": [wire.hook]}) as http:
        llm = Parrot(
            api_base=server_url,
            temperature=0.0,
            max_tokens=3,
            default_headers={"X-App": "li"},
            http_client=http,
            additional_kwargs={"seed": 4, "top_k": 1},
        )
        assert llm.complete(QUESTION).text
        assert wire.requests[-1].headers["x-app"] == "li"
        assert wire.body()["top_k"] == 1
        llm.close()
        assert not http.is_closed  # the caller's client stays theirs

    async def run() -> str:
        async with httpx.AsyncClient(event_hooks={"request": [wire.ahook]}) as ahttp:
            llm = Parrot(api_base=server_url, max_tokens=3, default_headers={"X-App": "async"},
                         async_http_client=ahttp)  # fmt: skip
            answer = await llm.achat([ChatMessage(role=MessageRole.USER, content=QUESTION)])
            await llm.aclose()
            assert not ahttp.is_closed
            return answer.message.content

    assert asyncio.run(run())
    assert wire.requests[-1].headers["x-app"] == "async"


def test_chat_logprobs(server_url):
    llm = Parrot(api_base=server_url, temperature=0.0, max_tokens=4, logprobs=True, top_logprobs=2)
    response = llm.chat([ChatMessage(role=MessageRole.USER, content=QUESTION)])
    assert response.logprobs and all(len(alts) == 2 for alts in response.logprobs)
    assert all(a.logprob <= 0 and a.token for alts in response.logprobs for a in alts)
    assert len(response.logprobs) <= response.raw["usage"]["completion_tokens"]
    assert llm.complete(QUESTION).logprobs  # complete on a chat model: the chat's

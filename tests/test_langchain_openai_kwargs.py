"""`ChatOpenAI` / `OpenAI` keyword arguments on `ChatParrot` / `ParrotLLM`, against a real
`parrot serve`: HTTP settings (`default_headers`, `default_query`, `http_client`,
`http_async_client`) seen on the wire by the caller's own httpx client and acted on by a
key-protected server, `extra_body` / `model_kwargs` / `disabled_params` in the body and their
effect, `stream_usage`, fields accepted without effect, fields refused, and the answers' `n`
generations and log probabilities.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from langchain_core import exceptions as lc_errors
from langchain_core.messages import HumanMessage
from pydantic import ValidationError
from wire import Wire

from parrot_integrations.langchain import ChatParrot, ParrotLLM

pytestmark = pytest.mark.slow

PROMPT = "Name a colour."
KEY = "kwargs-key-0123456789"


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture(scope="module")
def keyed_server(parrot_process) -> str:
    flags = ["--api-key", KEY, "--kv-pool-tokens", "4096", "--max-context-len", "1024",
             "--log-level", "warning"]  # fmt: skip
    return parrot_process(["serve", *flags], "kwargs-keyed").wait_healthy().url


# -- HTTP settings ------------------------------------------------------------------------------
def test_headers_query_and_client_reach_the_wire(server_url, wire):
    with httpx.Client(event_hooks={"request": [wire.hook]}) as http:
        chat = ChatParrot(
            base_url=server_url,
            max_tokens=3,
            temperature=0,
            default_headers={"X-App": "kwargs-test"},
            default_query={"trace": "1"},
            http_client=http,
        )
        message = chat.invoke(PROMPT)
        assert message.content and message.usage_metadata["output_tokens"] <= 3
        sent = wire.requests[-1]
        assert sent.url.path == "/v1/chat/completions"
        assert sent.headers["x-app"] == "kwargs-test"
        assert sent.url.params["trace"] == "1"
        assert not http.is_closed  # the caller's client stays theirs
        llm = ParrotLLM(base_url=server_url, max_tokens=2, temperature=0, http_client=http,
                        default_headers={"X-App": "llm"})  # fmt: skip
        assert llm.invoke("The sky is")
        assert wire.requests[-1].url.path == "/v1/completions"
        assert wire.requests[-1].headers["x-app"] == "llm"


async def test_async_client_reaches_the_wire(server_url, wire):
    async with httpx.AsyncClient(event_hooks={"request": [wire.ahook]}) as http:
        chat = ChatParrot(
            base_url=server_url,
            max_tokens=3,
            temperature=0,
            default_headers={"X-App": "async"},
            http_async_client=http,
        )
        assert (await chat.ainvoke(PROMPT)).content
        chunks = [c async for c in chat.astream(PROMPT)]
        assert chunks[-1].usage_metadata["output_tokens"] <= 3
        assert [r.headers["x-app"] for r in wire.requests] == ["async", "async"]
        await chat._close_async_client()
        assert not http.is_closed


def test_default_headers_carry_the_key(keyed_server):
    """The server acts on a header given in `default_headers`: it wins over `api_key`."""
    good = {"Authorization": f"Bearer {KEY}"}
    chat = ChatParrot(
        base_url=keyed_server, max_tokens=2, temperature=0, api_key="wrong", default_headers=good
    )
    assert chat.invoke(PROMPT).content  # greedy: a sampled answer may start with blank tokens
    with pytest.raises(lc_errors.ModelAuthenticationError):
        ChatParrot(base_url=keyed_server, max_tokens=2, api_key="wrong").invoke(PROMPT)


def test_http_clients_are_checked():
    with pytest.raises(ValidationError, match="httpx.Client"):
        ChatParrot(http_client=httpx.AsyncClient())
    with pytest.raises(ValidationError, match="httpx.AsyncClient"):
        ParrotLLM(http_async_client=httpx.Client())
    with pytest.raises(ValidationError, match="http_client=httpx.Client"):
        ChatParrot(openai_proxy="http://127.0.0.1:3128")


# -- request fields -----------------------------------------------------------------------------
def test_extra_body_and_model_kwargs_are_sent_and_honoured(server_url, wire):
    with httpx.Client(event_hooks={"request": [wire.hook]}) as http:
        greedy = ChatParrot(base_url=server_url, max_tokens=8, temperature=0).invoke(PROMPT)
        # temperature 1 but only the best token kept (top_k from extra_body): the greedy answer
        chat = ChatParrot(base_url=server_url, max_tokens=8, temperature=1.0, http_client=http,
                          extra_body={"top_k": 1}, model_kwargs={"seed": 5})  # fmt: skip
        assert chat.invoke(PROMPT).content == greedy.content
        assert wire.body()["top_k"] == 1 and wire.body()["seed"] == 5
        # a call's extra_body merges over the model's
        chat.invoke(PROMPT, extra_body={"seed": 7, "ignore_eos": True})
        assert (wire.body()["top_k"], wire.body()["seed"], wire.body()["ignore_eos"]) == (
            1,
            7,
            True,
        )
        # disabled_params: never sent
        ChatParrot(base_url=server_url, max_tokens=2, seed=3, http_client=http,
                   disabled_params={"seed": None}).invoke(PROMPT)  # fmt: skip
        assert "seed" not in wire.body()


def test_unsupported_fields_are_langchain_errors(server_url):
    for kwargs in ({"extra_body": {"no_such_field": 1}}, {"reasoning_effort": "low"}):
        chat = ChatParrot(base_url=server_url, max_tokens=2, **kwargs)
        with pytest.raises(lc_errors.ModelInvalidRequestError) as err:
            chat.invoke(PROMPT)
        named = "no_such_field" if "extra_body" in kwargs else "reasoning_effort"
        assert named in str(err.value)


def test_accepted_without_effect(server_url):
    chat = ChatParrot(
        base_url=server_url,
        max_tokens=3,
        temperature=0,
        openai_organization="org-1",
        tiktoken_model_name="gpt-4o",
        service_tier="default",
        store=False,
        openai_api_key="unused",  # the server has no key
    )
    plain = ChatParrot(base_url=server_url, max_tokens=3, temperature=0)
    assert chat.invoke(PROMPT).content == plain.invoke(PROMPT).content
    llm = ParrotLLM(base_url=server_url, max_tokens=2, temperature=0, batch_size=4,
                    allowed_special="all", organization="o")  # fmt: skip
    assert llm.invoke("The sky is")


def test_stream_usage(server_url):
    chat = ChatParrot(base_url=server_url, max_tokens=3, temperature=0)
    assert list(chat.stream(PROMPT))[-1].usage_metadata["output_tokens"] <= 3
    quiet = ChatParrot(base_url=server_url, max_tokens=3, temperature=0, stream_usage=False)
    chunks = list(quiet.stream(PROMPT))
    assert all(c.usage_metadata is None for c in chunks)
    assert chunks[-1].response_metadata["finish_reason"] in ("stop", "length")
    assert list(chat.stream(PROMPT, stream_usage=False))[-1].usage_metadata is None
    assert list(quiet.stream(PROMPT, stream_usage=True))[-1].usage_metadata is not None


def test_n_refused_when_streaming(server_url):
    with pytest.raises(ValidationError, match="n must be 1 when streaming"):
        ChatParrot(base_url=server_url, n=2, streaming=True)
    with pytest.raises(ValidationError, match="must be 1 when streaming"):
        ParrotLLM(base_url=server_url, n=2, streaming=True)
    with pytest.raises(lc_errors.ModelInvalidRequestError, match="n must be 1"):
        list(ChatParrot(base_url=server_url, max_tokens=2, n=2).stream(PROMPT))


# -- needs the server's n / logprobs / penalties (see the module docstring) ---------------------
def test_chat_n_generations(server_url):
    chat = ChatParrot(base_url=server_url, max_tokens=4, temperature=1.0, seed=11, n=3)
    result = chat.generate([[HumanMessage(PROMPT)]])
    generations = result.generations[0]
    assert len(generations) == 3
    for g in generations:
        assert g.message.content and g.generation_info["finish_reason"] in ("stop", "length")
        assert g.message.usage_metadata["output_tokens"] >= 1
    assert chat.invoke(PROMPT).content  # invoke: the first
    assert len(chat.bind(n=2).invoke(PROMPT).content) > 0


def _check_token_logprobs(content: list[dict], top: int) -> None:
    assert content
    for entry in content:
        assert set(entry) >= {"token", "logprob", "bytes", "top_logprobs"}
        assert entry["logprob"] <= 0
        assert len(entry["top_logprobs"]) == top
        assert all(t["logprob"] <= 0 for t in entry["top_logprobs"])


def test_chat_logprobs(server_url):
    chat = ChatParrot(base_url=server_url, max_tokens=5, temperature=0, logprobs=True,
                      top_logprobs=2)  # fmt: skip
    message = chat.invoke(PROMPT)
    content = message.response_metadata["logprobs"]["content"]
    _check_token_logprobs(content, 2)
    assert len(content) <= message.usage_metadata["output_tokens"]  # an end token may be left out
    # greedy: each token is the most likely one
    assert all(e["token"] == e["top_logprobs"][0]["token"] for e in content)
    plain = ChatParrot(base_url=server_url, max_tokens=5, temperature=0).invoke(PROMPT)
    assert "logprobs" not in plain.response_metadata
    bound = ChatParrot(base_url=server_url, max_tokens=5, temperature=0).bind(logprobs=True)
    assert bound.invoke(PROMPT).response_metadata["logprobs"]["content"]


def test_chat_logprobs_streamed(server_url):
    chat = ChatParrot(base_url=server_url, max_tokens=5, temperature=0, logprobs=True,
                      top_logprobs=1)  # fmt: skip
    chunks = list(chat.stream(PROMPT))
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    content = total.response_metadata["logprobs"]["content"]
    _check_token_logprobs(content, 1)
    assert len(content) <= total.usage_metadata["output_tokens"]
    assert "".join(e["token"] for e in content).strip() == total.content.strip()


def test_chat_penalties_and_vendor_extras(server_url, wire):
    with httpx.Client(event_hooks={"request": [wire.hook]}) as http:
        chat = ChatParrot(
            base_url=server_url,
            max_tokens=6,
            temperature=0,
            frequency_penalty=0.5,
            presence_penalty=0.5,
            logit_bias={0: -100},
            extra_body={"repetition_penalty": 1.1, "min_p": 0.05},
            http_client=http,
        )
        assert chat.invoke(PROMPT).content
        body = wire.body()
        assert (body["frequency_penalty"], body["presence_penalty"]) == (0.5, 0.5)
        assert body["logit_bias"] == {"0": -100}
        assert (body["repetition_penalty"], body["min_p"]) == (1.1, 0.05)


def _abatch(wire: Wire, prompts: list[str], **fields) -> list:
    """`abatch` through a ChatParrot whose async httpx client records the wire (the client
    belongs to one event loop: made, used and closed in it)."""

    async def run() -> list:
        async with httpx.AsyncClient(event_hooks={"request": [wire.ahook]}) as http:
            chat = ChatParrot(http_async_client=http, **fields)
            return await chat.abatch(prompts)

    return asyncio.run(run())


def test_batch_with_penalties_runs_as_one_program_with_them(server_url, wire):
    """Native outputs take the penalties: such a batch is still one program, carrying them."""
    fields = {"base_url": server_url, "max_tokens": 3, "temperature": 0, "frequency_penalty": 0.2}
    answers = _abatch(wire, [PROMPT, PROMPT], **fields)
    assert [m.content for m in answers] == [ChatParrot(**fields).invoke(PROMPT).content] * 2
    programs = [i for i, r in enumerate(wire.requests) if r.url.path.endswith("/programs")]
    assert len(programs) == 1 and not any(r.url.path.startswith("/v1") for r in wire.requests)
    outputs = [o for c in wire.body(programs[0])["calls"] for o in c["outputs"].values()]
    assert len(outputs) == 2 and all(o["sampling"]["frequency_penalty"] == 0.2 for o in outputs)


def test_batch_with_logprobs_goes_through_v1(server_url, wire):
    """A native call has no logprobs: such a batch's inputs are sent to /v1, with them."""
    fields = {"base_url": server_url, "max_tokens": 3, "temperature": 0, "logprobs": True}
    answers = _abatch(wire, [PROMPT, PROMPT], **fields)
    assert all(m.response_metadata["logprobs"]["content"] for m in answers)
    assert [r.url.path for r in wire.requests] == ["/v1/chat/completions"] * 2
    assert all(wire.body(i)["logprobs"] is True for i in range(2))


def test_llm_n_and_logprobs(server_url):
    llm = ParrotLLM(base_url=server_url, max_tokens=3, temperature=1.0, seed=2, n=2, logprobs=2)
    result = llm.generate(["The sky is", "Grass is"])
    assert [len(g) for g in result.generations] == [2, 2]
    info = result.generations[0][0].generation_info
    logprobs = info["logprobs"]
    assert (
        len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["text_offset"])
    )
    assert len(logprobs["tokens"]) >= 1
    # OpenAI lists the sampled token too when it is not among the top 2
    assert all(2 <= len(t) <= 3 for t in logprobs["top_logprobs"])
    assert "".join(logprobs["tokens"]) == result.generations[0][0].text

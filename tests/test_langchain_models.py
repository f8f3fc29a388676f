"""`ChatParrot` / `ParrotLLM` specifics against a real `parrot serve` (`server_url`): usage and
cached tokens, token-by-token streaming, error mapping, aliases, batches, an LCEL chain.

The standard suites are in tests/test_langchain_standard.py. Tiny `max_tokens` throughout.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain_core import exceptions as lc_errors
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import (
    AIMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from pydantic import ValidationError

from parrot_integrations import (
    APIConnectionError,
    InvalidRequestError,
    NotFoundError,
    ParrotClient,
)
from parrot_integrations.langchain import ChatParrot, ParrotLLM
from parrot_integrations.protocol.native import Criteria

PROMPT = "Reply with one word: what colour is the sky on a clear day?"


@pytest.fixture
def chat(server_url) -> ChatParrot:
    return ChatParrot(base_url=server_url, temperature=0, max_tokens=6)


@pytest.fixture
def llm(server_url) -> ParrotLLM:
    return ParrotLLM(base_url=server_url, temperature=0, max_tokens=4)


# -- fields ---------------------------------------------------------------------------------------
def test_aliases_and_env(monkeypatch):
    monkeypatch.setenv("PARROT_BASE_URL", "http://10.1.2.3:9000/v1/")
    monkeypatch.setenv("PARROT_API_KEY", "secret-1")
    m = ChatParrot(
        model_name="m",
        max_completion_tokens=7,
        stop_sequences=["\n"],
        request_timeout=5,
    )
    assert (m.model, m.max_tokens, m.stop, m.timeout) == ("m", 7, ["\n"], 5)
    assert m.base_url == "http://10.1.2.3:9000"  # from the env, /v1 removed
    assert m.api_key.get_secret_value() == "secret-1"
    assert "secret-1" not in repr(m)
    for alias in ("api_base", "openai_api_base", "base_url"):
        assert ChatParrot(**{alias: "http://h:1/v1"}).base_url == "http://h:1"
    llm = ParrotLLM(model_name="x", stop_sequences="END", api_key="k")
    assert (llm.model, llm.stop, llm.api_key.get_secret_value()) == ("x", "END", "k")
    assert ChatParrot(criteria="throughput").criteria is Criteria.THROUGHPUT
    with pytest.raises(ValidationError):
        ChatParrot(base_url="ftp://nowhere")
    with pytest.raises(ValidationError):
        ChatParrot(criteria="fastest")
    with pytest.raises(ValidationError, match="max_tokenz"):  # a typo is not dropped silently
        ChatParrot(max_tokenz=3)
    assert ChatParrot(model_kwargs={"top_k": 3}, seed=1)._default_params() == {
        "top_k": 3,
        "seed": 1,
    }


def test_ls_params_and_identity():
    m = ChatParrot(max_tokens=3, temperature=0.5, stop=["x"], base_url="http://h:1")
    ls = m._get_ls_params()
    assert ls["ls_provider"] == "parrot" and ls["ls_model_name"] == "default"
    assert (ls["ls_max_tokens"], ls["ls_temperature"], ls["ls_stop"]) == (3, 0.5, ["x"])
    assert m._get_ls_params(model="other")["ls_model_name"] == "other"
    assert m._identifying_params["base_url"] == "http://h:1"
    assert m._llm_type == "parrot-chat" and ParrotLLM()._llm_type == "parrot"


@pytest.mark.slow
def test_ls_model_name_is_the_served_name(chat, llm):
    """Traces name the model the server serves, as its answers do, not the `default` alias."""
    served = chat.client.list_models().data[0].id
    assert served != "default"
    assert chat._get_ls_params()["ls_model_name"] == served
    assert llm._get_ls_params()["ls_model_name"] == served
    assert chat.invoke("Hi").response_metadata["model_name"] == served
    assert chat._get_ls_params(model="other")["ls_model_name"] == "other"


# -- chat -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_chat_invoke_usage_and_cached_tokens(chat):
    first = chat.invoke([SystemMessage("Be brief."), HumanMessage(PROMPT)])
    again = chat.invoke([SystemMessage("Be brief."), HumanMessage(PROMPT)])
    assert isinstance(first, AIMessage) and first.content
    assert again.content == first.content  # greedy
    usage = again.usage_metadata
    assert usage["output_tokens"] <= 6
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    # The repeated prompt is served from the radix cache (all but the last token).
    assert 0 < usage["input_token_details"]["cache_read"] < usage["input_tokens"]
    meta = again.response_metadata
    assert meta["model_name"] and meta["finish_reason"] in ("stop", "length")


@pytest.mark.slow
def test_chat_stream_token_by_token(chat):
    full = chat.invoke(PROMPT).content
    chunks = list(chat.stream(PROMPT))
    text_chunks = [c for c in chunks if c.content]
    assert len(text_chunks) >= 2  # more than one token arrived separately
    assert "".join(c.content for c in chunks) == full
    # Usage and metadata once, on the last chunk.
    assert [c.usage_metadata is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].chunk_position == "last"
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert total.usage_metadata["output_tokens"] >= len(text_chunks)
    assert total.response_metadata["model_name"] and total.response_metadata["finish_reason"]


@pytest.mark.slow
def test_chat_async_and_streaming_flag(server_url):
    model = ChatParrot(base_url=f"{server_url}/v1", temperature=0, max_tokens=4, streaming=True)

    async def run():
        tokens = []

        class Collect(AsyncCallbackHandler):
            async def on_llm_new_token(self, token, **kw):
                tokens.append(token)

        # streaming=True: ainvoke streams internally and callbacks get each token.
        msg = await model.ainvoke(PROMPT, config={"callbacks": [Collect()]})
        chunks = [c async for c in model.astream(PROMPT)]
        return msg, tokens, chunks

    msg, tokens, chunks = asyncio.run(run())
    assert msg.content and "".join(tokens) == msg.content and len(tokens) >= 2
    assert msg.usage_metadata["input_tokens"] > 0
    assert "".join(c.content for c in chunks) == msg.content


@pytest.mark.slow
def test_lcel_chain(chat):
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You answer in one word."), ("human", "What colour is {thing}?")]
    )
    chain = prompt | chat | StrOutputParser()
    out = chain.invoke({"thing": "grass"})
    assert isinstance(out, str) and out
    assert chain.invoke({"thing": "grass"}) == out  # greedy, and a plain string each time
    assert asyncio.run(chain.ainvoke({"thing": "grass"})) == out


@pytest.mark.slow
def test_batch_runs_on_one_loop(chat):
    threads: set[int] = set()

    class Where(AsyncCallbackHandler):
        # Async handlers run in the event loop's thread.
        async def on_chat_model_start(self, *args, **kw):
            threads.add(threading.get_ident())

    inputs = ["Say one.", "Say two.", "Say three."]
    out = chat.batch(inputs, config={"callbacks": [Where()]})
    assert len(out) == 3 and all(isinstance(m, AIMessage) and m.content for m in out)
    # One private event loop in this thread, not one pool thread per input.
    assert threads == {threading.get_ident()}
    assert not chat._aclients  # the private loop's client was closed with it

    singles = [chat.invoke(i) for i in inputs]
    assert [m.content for m in out] == [m.content for m in singles]  # same as one by one
    again = asyncio.run(chat.abatch(inputs))
    assert [m.content for m in again] == [m.content for m in singles]
    # Usage, finish reason and model name as /v1 reports them (both read the warm cache).
    again_singles = [chat.invoke(i) for i in inputs]

    def meta(m: AIMessage) -> tuple:
        r = m.response_metadata
        return m.usage_metadata, r["finish_reason"], r["model_name"], r["token_usage"]

    assert [meta(m) for m in again] == [meta(m) for m in again_singles]
    assert all(m.usage_metadata["input_token_details"]["cache_read"] > 0 for m in again)


@pytest.mark.slow
def test_session_id_extension(server_url, chat):
    with ParrotClient(server_url) as client, client.session() as session:
        out = chat.invoke(PROMPT, session_id=session.id, criteria="latency")
        assert out.content
    # Closed now: the server answers 404, mapped to LangChain's and the SDK's not-found.
    with pytest.raises(lc_errors.ModelNotFoundError) as info:
        chat.invoke(PROMPT, session_id=session.id)
    assert isinstance(info.value, NotFoundError) and session.id in info.value.message


@pytest.mark.slow
def test_agent_steps_reuse_the_growing_context(server_url):
    """An agent loop (plain text tool protocol) in one session: each step's prompt is the
    previous one plus the last answer and the tool result, so the engine serves the whole
    previous step from its prefix cache and the cached prompt tokens grow step by step."""
    agent = ChatParrot(base_url=server_url, temperature=0, max_tokens=12)
    history = [
        SystemMessage("You are an agent. To use the calculator write CALC: <expression>."),
        HumanMessage("What is 12 times 7, then plus 5?"),
    ]
    cached: list[int] = []
    with ParrotClient(server_url) as client, client.session() as session:
        for step in range(3):
            reply = agent.invoke(history, session_id=session.id)
            cached.append(reply.usage_metadata["input_token_details"]["cache_read"])
            history += [reply, HumanMessage(f"Tool result {step}: {84 + step * 5}. Continue.")]
    assert cached[1] > cached[0] and cached[2] > cached[1], cached
    # each step re-uses at least the previous step's prompt (minus the chat template's tail)
    prompt_tokens = reply.usage_metadata["input_tokens"]
    assert cached[2] >= prompt_tokens // 2, (cached, prompt_tokens)


# -- errors ---------------------------------------------------------------------------------------
def test_error_unknown_model(server_url):
    with pytest.raises(lc_errors.ModelNotFoundError) as info:
        ChatParrot(base_url=server_url, model="no-such-model", max_tokens=1).invoke("hi")
    assert isinstance(info.value, NotFoundError) and "no-such-model" in str(info.value)
    with pytest.raises(lc_errors.ModelNotFoundError):
        list(ParrotLLM(base_url=server_url, model="no-such-model").stream("hi"))


def test_error_context_overflow(server_url):
    long_text = "word " * 3000  # the test server's window is 2048 tokens
    with pytest.raises(lc_errors.ContextOverflowError) as info:
        ChatParrot(base_url=server_url, max_tokens=1).invoke(long_text)
    assert isinstance(info.value, InvalidRequestError) and "context window" in str(info.value)
    with pytest.raises(lc_errors.ContextOverflowError):
        asyncio.run(ParrotLLM(base_url=server_url, max_tokens=1).ainvoke(long_text))


def test_error_invalid_request(server_url, chat):
    with pytest.raises(lc_errors.ModelInvalidRequestError) as info:
        chat.invoke(PROMPT, temperature=5)  # caught by the shared request model, before sending
    assert "temperature" in str(info.value)
    with pytest.raises(lc_errors.ModelInvalidRequestError) as info:
        chat.invoke([FunctionMessage("42", name="f")])  # legacy: tools use ToolMessage
    assert "FunctionMessage" in str(info.value)
    # Images: refused by the shared request model (the server's own check), before sending.
    with pytest.raises(lc_errors.ModelInvalidRequestError) as info:
        chat.invoke([HumanMessage([{"type": "image_url", "image_url": {"url": "http://x/y.png"}}])])
    assert "image_url" in str(info.value)


def test_error_connection_and_timeout(server_url):
    dead = ChatParrot(base_url="http://127.0.0.1:9", max_retries=0)
    with pytest.raises(lc_errors.ModelConnectionError) as info:
        dead.invoke("hi")
    assert isinstance(info.value, APIConnectionError)
    slow = ChatParrot(base_url=server_url, max_tokens=200, timeout=0.05)
    with pytest.raises(lc_errors.ModelTimeoutError) as info:
        slow.invoke("Count to one hundred.", ignore_eos=True)
    assert isinstance(info.value, TimeoutError)


# -- completion LLM -------------------------------------------------------------------------------
@pytest.mark.slow
def test_llm_invoke_stream_and_usage(llm):
    text = llm.invoke("One, two, three,")
    assert isinstance(text, str) and text
    chunks = list(llm.stream("One, two, three,"))
    assert "".join(chunks) == text and sum(1 for c in chunks if c) >= 2
    result = llm.generate(["One, two, three,"])
    usage = result.llm_output["token_usage"]
    assert usage["completion_tokens"] <= 4 and usage["prompt_tokens"] > 0
    assert usage["cached_tokens"] > 0  # the same prompt was just served
    assert result.llm_output["model_name"]
    assert result.generations[0][0].generation_info["finish_reason"] in ("stop", "length")


@pytest.mark.slow
def test_llm_batch_and_async(llm):
    prompts = ["Monday, Tuesday,", "January, February,"]
    singles = [llm.invoke(p) for p in prompts]
    assert llm.batch(prompts) == singles
    assert asyncio.run(llm.abatch(prompts)) == singles
    # A batch (one native program) reports what one /v1 request per prompt reports.
    batched = llm.generate(prompts)
    one_by_one = [llm.generate([p]) for p in prompts]
    assert [g[0].generation_info for g in batched.generations] == [
        r.generations[0][0].generation_info for r in one_by_one
    ]
    assert batched.generations[0][0].generation_info["usage"]["completion_tokens"] > 0
    total = batched.llm_output["token_usage"]
    assert total["completion_tokens"] == sum(
        r.llm_output["token_usage"]["completion_tokens"] for r in one_by_one
    )
    assert total["cached_tokens"] == sum(
        r.llm_output["token_usage"]["cached_tokens"] for r in one_by_one
    )
    assert batched.llm_output["model_name"] == one_by_one[0].llm_output["model_name"]

    async def stream():
        return [c async for c in llm.astream(prompts[0])]

    assert "".join(asyncio.run(stream())) == singles[0]

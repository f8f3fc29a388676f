"""`ship(chain)` and batches as one task group, against a real `parrot serve` (`server_url`).

Each shipped chain is checked against the same chain run plainly (ChatParrot through `/v1`,
one request per model call): at temperature 0 both must give the same output. Requests are
counted with an httpx event hook on the model's own SDK client (the one the shipped run
uses). Tiny `max_tokens` throughout (CPU model).
"""

from __future__ import annotations

import asyncio
import logging
from operator import itemgetter

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.exceptions import ContextOverflowError
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder, PromptTemplate
from langchain_core.runnables import RunnableParallel, RunnablePassthrough
from pydantic import BaseModel, Field

from parrot_integrations.langchain import ChatParrot, ParrotLLM, _native, ship
from parrot_integrations.langchain._compile import plan

SHIP_LOG = "parrot_integrations.langchain.ship"
DOCS = [
    "The solar kettle heats a litre of water in twenty minutes of direct sun.",
    "Bees tell each other where flowers are with a waggle dance.",
    "The library lends drills and ladders {{for a week}} with a library card.",
]


class Requests:
    """Every HTTP request a (sync) SDK client sends."""

    def __init__(self, model) -> None:
        self.seen: list[tuple[str, str]] = []
        model.client._http.event_hooks["request"].append(
            lambda r: self.seen.append((r.method, r.url.path))
        )

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for m, p in self.seen if m == method and p.endswith(suffix))


def metadata(message: AIMessage) -> tuple:
    """What a chat answer reports besides its text: usage, finish reason, model name."""
    meta = message.response_metadata
    return message.usage_metadata, meta.get("finish_reason"), meta.get("model_name")


class Events(BaseCallbackHandler):
    """What tracing sees: model starts/ends (prompt texts, generated text, usage and finish
    reason) and chain runs."""

    def __init__(self) -> None:
        self.models: list[tuple[str, object]] = []
        self.metas: list[tuple] = []
        self.chains: list[str] = []

    def on_chat_model_start(self, serialized, messages, **kw):
        self.models.append(("start", [m.content for m in messages[0]]))

    def on_llm_start(self, serialized, prompts, **kw):
        self.models.append(("start", prompts))

    def on_llm_end(self, response, **kw):
        generation = response.generations[0][0]
        self.models.append(("end", generation.text))
        if hasattr(generation, "message"):
            self.metas.append(metadata(generation.message))

    def on_chain_start(self, serialized, inputs, **kw):
        if kw.get("parent_run_id") is None:
            self.chains.append(f"start {kw.get('name')}")

    def on_chain_end(self, outputs, **kw):
        if kw.get("parent_run_id") is None:
            self.chains.append("end")


def chat(server_url: str, **kw) -> ChatParrot:
    return ChatParrot(base_url=server_url, **({"temperature": 0, "max_tokens": 12} | kw))


def summary_chain(llm: ChatParrot):
    """prompt | llm | parser | prompt | llm | parser: the summary feeds the title."""
    summarize = ChatPromptTemplate.from_messages(
        [("system", "You are concise."), ("human", "Summarize in one sentence:\n{text}")]
    )
    title = PromptTemplate.from_template("Give a title of a few words for: {summary}")
    return (
        summarize
        | llm
        | StrOutputParser()
        | title
        | llm.bind(max_tokens=8, stop=["\n"])
        | StrOutputParser()
    )


# -- compile-time checks (no model call) --------------------------------------------------------
def test_plan_compiles_lcel_and_cuts_at_functions():
    llm = ChatParrot(max_tokens=4)
    chain = (
        {"a": itemgetter("x") | llm, "b": RunnablePassthrough()}
        | RunnablePassthrough.assign(c=lambda d: d["a"])
        | PromptTemplate.from_template("{a}{b}{c}")
        | llm.bind(stop=["."])
        | StrOutputParser()
    )
    p = plan(chain)
    assert [b.runnable.get_name() for b in p.cuts()] == ["RunnableLambda"]
    assert p.describe().startswith(
        "{a: operator.itemgetter('x') | ChatParrot, b: RunnablePassthrough}"
    )
    assert "ChatParrot.bind(stop)" in p.describe() and "<cut: RunnableLambda>" in p.describe()
    assert plan(summary_chain(llm)).cuts() == []


def test_native_call_mapping_and_refusals():
    llm = ChatParrot(max_tokens=5, temperature=0, top_p=0, stop="END", seed=3)
    call = _native.chat_call(llm, [SystemMessage("Be brief."), HumanMessage("a {{b}} c")], None, {})
    assert (call.chat, call.system) == (True, "Be brief.")
    assert call.template == "{{input:v0}}{{output:out}}" and call.inputs == {"v0": "a {{b}} c"}
    s = call.sampling  # as /v1 maps it: top_p=0 is greedy through top_k=1
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.stop, s.seed) == (
        5, 0.0, 1.0, 1, ["END"], 3,
    )  # fmt: skip

    def reason(chat_model, messages, **kwargs) -> str:
        with pytest.raises(_native.NotNative) as info:
            _native.chat_call(chat_model, messages, None, kwargs)
        return info.value.reason

    two_turns = [HumanMessage("hi"), AIMessage("hello"), HumanMessage("and?")]
    assert "messages ['user', 'assistant', 'user']" in reason(llm, two_turns)
    # max_tokens unset (ChatParrot's default): the native "to the end of the window".
    assert (
        _native.chat_call(ChatParrot(), [HumanMessage("x")], None, {}).sampling.max_tokens is None
    )
    assert "model='other'" in reason(llm, [HumanMessage("x")], model="other")
    assert "session_id" in reason(llm, [HumanMessage("x")], session_id="s")
    assert "invalid request" in reason(llm, [HumanMessage("x")], temperature=9)
    assert "empty system" in reason(llm, [SystemMessage(""), HumanMessage("x")])
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert "tools" in reason(llm, [HumanMessage("x")], tools=tools)
    structured = _native.chat_call(
        llm, [HumanMessage("x")], None, {"response_format": {"type": "json_object"}}
    )
    assert structured.sampling.json_schema == '{"type": "object"}'
    text = _native.completion_call(ParrotLLM(), "Q: 1+1=", None, {})
    assert (text.chat, text.template, text.sampling.max_tokens) == (
        False, "Q: 1+1={{output:out}}", 256,
    )  # fmt: skip


# -- shipped chains against the server ----------------------------------------------------------
@pytest.mark.slow
def test_sequential_chain_is_one_submit_and_one_read(server_url, caplog):
    llm = chat(server_url)
    chain = summary_chain(llm)
    x = {"text": DOCS[2]}  # literal `{{...}}` in the input travels as a variable
    plain = chain.invoke(x)
    shipped = ship(chain)
    assert shipped.invoke(x) == plain  # also opens the model's shared session
    requests = Requests(llm)
    with caplog.at_level(logging.DEBUG, logger=SHIP_LOG):
        assert shipped.invoke(x) == plain
    # Both calls ran on the server: one program, then the final value read. Nothing else.
    assert requests.count("POST", "/programs") == 1 and requests.count("GET", "") == 1
    assert len(requests.seen) == 2, requests.seen
    assert "program 1 submitted (2 calls)" in caplog.text
    assert list(shipped.stream(x)) == [plain]


@pytest.mark.slow
def test_map_reduce_with_parallel_maps_in_one_program(server_url, caplog):
    llm = chat(server_url, max_tokens=10)
    summarize = ChatPromptTemplate.from_messages([("human", "One short sentence about: {doc}")])
    maps = RunnableParallel(
        {
            f"s{k}": {"doc": itemgetter(k)} | summarize | llm | StrOutputParser()
            for k in range(len(DOCS))
        }
    )
    reduce = ChatPromptTemplate.from_messages(
        [("human", "Notes:\n- {s0}\n- {s1}\n- {s2}\nOne word they share:")]
    )
    chain = maps | reduce | llm.bind(max_tokens=6) | StrOutputParser()
    plain = chain.invoke(DOCS)
    requests = Requests(llm)
    with caplog.at_level(logging.DEBUG, logger=SHIP_LOG):
        assert ship(chain).invoke(DOCS) == plain
    assert "program 1 submitted (4 calls)" in caplog.text and "cut at" not in caplog.text
    assert requests.count("POST", "/programs") == 1
    assert not any(p.startswith("/v1/") for _, p in requests.seen)


@pytest.mark.slow
def test_assign_passthrough_and_completion_model(server_url):
    llm = chat(server_url, max_tokens=8)
    completion = ParrotLLM(base_url=server_url, temperature=0, max_tokens=6)
    chain = (
        RunnablePassthrough.assign(
            fact=PromptTemplate.from_template("One fact about {topic}:") | llm | StrOutputParser()
        )
        | {
            "topic": itemgetter("topic"),
            "fact": itemgetter("fact"),
            "echo": RunnablePassthrough() | itemgetter("topic"),
        }
        | RunnablePassthrough.assign(
            line=PromptTemplate.from_template("{topic} ({echo}): {fact}\nIn short:") | completion
        )
    )
    x = {"topic": "the moon"}
    plain = chain.invoke(x)
    assert set(plain) == {"topic", "fact", "echo", "line"}
    requests, other = Requests(llm), Requests(completion)
    assert ship(chain).invoke(x) == plain
    # Both models talk to one server: the completion call joins the chat call's program.
    assert requests.count("POST", "/programs") == 1 and not other.seen


@pytest.mark.slow
def test_a_formatter_that_alters_a_computed_value_cuts_before_the_call(server_url, caplog):
    llm = chat(server_url, max_tokens=6)
    shout = PromptTemplate.from_template("Repeat: {{ word | upper }}", template_format="jinja2")
    animal = PromptTemplate.from_template("Name one animal.") | llm | StrOutputParser()
    chain = {"word": animal} | shout | llm | StrOutputParser()
    with caplog.at_level(logging.DEBUG, logger=SHIP_LOG):
        assert ship(chain).invoke({}) == chain.invoke({})
    assert "cut before ChatParrot: a computed value was altered by formatting" in caplog.text


@pytest.mark.slow
def test_lambda_is_a_barrier_and_the_rest_ships_again(server_url, caplog):
    llm = chat(server_url, max_tokens=8)
    first = ChatPromptTemplate.from_messages([("human", "Name one fruit.")]) | llm
    second = PromptTemplate.from_template("Describe {fruit} in three words.") | llm
    shout = lambda text: {"fruit": text.upper()}  # noqa: E731 - the barrier under test
    chain = first | StrOutputParser() | shout | second | StrOutputParser()
    plain = chain.invoke({})
    requests = Requests(llm)
    shipped = ship(chain)
    with caplog.at_level(logging.DEBUG, logger=SHIP_LOG):
        assert shipped.invoke({}) == plain
    assert "cut at RunnableLambda" in caplog.text  # said when shipped and when it ran
    assert "program 2 submitted (1 calls)" in caplog.text
    assert requests.count("POST", "/programs") == 2 and requests.count("GET", "") == 2
    assert not any(p.startswith("/v1/") for _, p in requests.seen)


@pytest.mark.slow
def test_a_prompt_too_long_once_computed_fails_as_the_plain_chain_does(server_url):
    """The second prompt's length is known only on the server, after the first call: the call
    fails there, and the error is LangChain's context overflow, as through /v1."""
    llm = chat(server_url, max_tokens=4)
    long = "word " * 2040  # with the first answer, over the test server's 2048-token window
    chain = (
        {"a": PromptTemplate.from_template("Say hi.") | llm | StrOutputParser()}
        | PromptTemplate.from_template(long + "{a}")
        | llm
    )
    with pytest.raises(ContextOverflowError):
        chain.invoke({})
    with pytest.raises(ContextOverflowError) as info:
        ship(chain).invoke({})
    assert "context window" in str(info.value)


@pytest.mark.slow
def test_chat_prompt_with_system_and_history(server_url, caplog):
    llm = chat(server_url, max_tokens=10)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You answer briefly."), MessagesPlaceholder("history"), ("human", "{q}")]
    ).partial(q="Name a colour.")
    chain = prompt | llm | StrOutputParser()
    shipped = ship(chain)
    requests = Requests(llm)
    # Empty history: system + one user turn, a native chat call rendered as /v1 would.
    assert shipped.invoke({"history": []}) == chain.invoke({"history": []})
    assert requests.count("POST", "/programs") == 1
    # A history is several turns: not one native call, so this call goes through /v1.
    history = [HumanMessage("Hi."), AIMessage("Hello!")]
    requests.seen.clear()
    with caplog.at_level(logging.DEBUG, logger=SHIP_LOG):
        assert shipped.invoke({"history": history}) == chain.invoke({"history": history})
    assert "runs locally through /v1: messages ['system', 'user', 'assistant', 'user']" in (
        caplog.text
    )
    assert requests.count("POST", "/programs") == 0
    assert requests.count("POST", "/v1/chat/completions") == 2  # plain and shipped


@pytest.mark.slow
def test_async_and_batches_of_a_shipped_chain(server_url):
    llm = chat(server_url, max_tokens=8)
    chain = summary_chain(llm)
    inputs = [{"text": d} for d in DOCS[:2]]
    plain = chain.batch(inputs)
    shipped = ship(chain)

    paths: list[str] = []

    async def run():
        async def hook(r):
            paths.append(r.url.path)

        llm.async_client._http.event_hooks["request"].append(hook)
        return await shipped.ainvoke(inputs[0]), await shipped.abatch(inputs)

    one, both = asyncio.run(run())
    assert one == plain[0] and both == plain
    assert sum(p.endswith("/programs") for p in paths) == 3
    assert not any(p.startswith("/v1/") for p in paths)
    assert shipped.batch(inputs) == plain


@pytest.mark.slow
def test_callbacks_fire_for_each_shipped_model_call(server_url):
    llm = chat(server_url, max_tokens=8)
    chain = summary_chain(llm)
    x = {"text": DOCS[1]}
    plain, shipped = Events(), Events()
    out = chain.invoke(x, config={"callbacks": [plain]})
    requests = Requests(llm)
    assert ship(chain).invoke(x, config={"callbacks": [shipped], "run_name": "app"}) == out
    assert requests.count("POST", "/programs") == 1
    assert not any(p.startswith("/v1/") for _, p in requests.seen)
    # The same model events (real prompts, generated texts), in dependency order.
    assert shipped.models == plain.models and len(plain.models) == 4
    assert shipped.chains == ["start app", "end"]
    # With the usage /v1 reports: compared with a plain run on the same (warm) prefix cache.
    warm = Events()
    assert chain.invoke(x, config={"callbacks": [warm]}) == out
    assert shipped.metas == warm.metas and len(warm.metas) == 2
    assert all(m[0] is not None and m[1] in ("stop", "length") and m[2] for m in warm.metas)

    class AsyncEvents(AsyncCallbackHandler):
        raise_error = True  # the assert below fails the test, not just a log line

        def __init__(self) -> None:
            self.models: list[tuple[str, object]] = []
            self.metas: list[tuple] = []

        async def on_chat_model_start(self, serialized, messages, **kw):
            self.models.append(("start", [m.content for m in messages[0]]))

        async def on_llm_end(self, response, **kw):
            self.models.append(("end", response.generations[0][0].text))
            self.metas.append(metadata(response.generations[0][0].message))

    events = AsyncEvents()
    assert asyncio.run(ship(chain).ainvoke(x, config={"callbacks": [events]})) == out
    assert events.models == plain.models and events.metas == warm.metas


# -- batches as one task group ------------------------------------------------------------------
@pytest.mark.slow
def test_chat_batch_is_one_program(server_url):
    llm = chat(server_url, max_tokens=6)
    prompts = ["Say one.", "Say two.", "Say three."]
    singles = [llm.invoke(p).content for p in prompts]
    requests: list[str] = []

    class Seen(AsyncCallbackHandler):
        async def on_llm_end(self, response, **kw):
            requests.append(f"end {response.generations[0][0].text}")

    async def run():
        client = llm.async_client

        async def hook(r):
            requests.append(f"{r.method} {r.url.path.rsplit('/', 1)[-1]}")

        client._http.event_hooks["request"].append(hook)
        configs = [{"callbacks": [Seen()]}, {"tags": ["x"]}, {"callbacks": [Seen()]}]
        out = await llm.abatch(prompts, configs)
        await llm._close_async_client()
        return out

    out = asyncio.run(run())
    assert [m.content for m in out] == singles
    assert requests.count("POST programs") == 1 and not any("completions" in r for r in requests)
    assert sorted(r for r in requests if r.startswith("end")) == sorted(
        f"end {singles[k]}" for k in (0, 2)
    )
    batched = llm.batch(prompts)
    assert [m.content for m in batched] == singles
    # The metadata /v1 gives (same prompts, same warm prefix cache), no /v1 response id.
    again = [llm.invoke(p) for p in prompts]
    assert [metadata(m) for m in batched] == [metadata(m) for m in again]
    assert all(m.usage_metadata["input_token_details"]["cache_read"] > 0 for m in batched)
    assert batched[0].response_metadata["token_usage"] == again[0].response_metadata["token_usage"]


@pytest.mark.slow
def test_batch_errors_stay_per_input(server_url):
    llm = chat(server_url, max_tokens=4)
    too_long = "word " * 3000  # over the test server's 2048-token window
    out = llm.batch(["Say yes.", too_long], return_exceptions=True)
    assert isinstance(out[0], AIMessage) and out[0].content == llm.invoke("Say yes.").content
    assert isinstance(out[1], ContextOverflowError)
    with pytest.raises(ContextOverflowError):
        llm.batch(["Say yes.", too_long])
    # Not expressible natively (two turns): through /v1, as before, in the same batch.
    turns = [HumanMessage("Hi."), AIMessage("Hello."), HumanMessage("Say no.")]
    mixed = llm.batch(["Say yes.", turns])
    assert [m.content for m in mixed] == [out[0].content, llm.invoke(turns).content]


@pytest.mark.slow
def test_llm_batch_is_one_program(server_url):
    llm = ParrotLLM(base_url=server_url, temperature=0, max_tokens=4)
    prompts = ["Monday, Tuesday,", "January, February,", "one, two,"]
    singles = [llm.invoke(p) for p in prompts]
    requests = Requests(llm)
    assert llm.batch(prompts) == singles
    assert requests.count("POST", "/programs") == 1 and requests.count("POST", "/completions") == 0
    assert asyncio.run(llm.abatch(prompts)) == singles


@pytest.mark.slow
def test_default_max_tokens_ships_and_batches(server_url):
    """ChatParrot's default max_tokens=None (to the end of the context window) is a native
    call too: shipped and batched answers equal /v1's, metadata included. The prompt makes the
    model stop by itself after a few tokens."""
    llm = ChatParrot(base_url=server_url, temperature=0)
    assert llm.max_tokens is None
    chain = ChatPromptTemplate.from_messages([("human", "Answer with one word: {q}")]) | llm
    x = {"q": "what colour is the sky?"}
    plain = chain.invoke(x)
    assert plain.response_metadata["finish_reason"] == "stop"
    requests = Requests(llm)
    shipped = ship(chain).invoke(x)
    assert requests.count("POST", "/programs") == 1
    assert not any(p.startswith("/v1/") for _, p in requests.seen)
    again = chain.invoke(x)  # the same warm prefix cache as the shipped call
    assert shipped.content == plain.content == again.content
    assert metadata(shipped) == metadata(again)
    assert shipped.response_metadata["token_usage"] == again.response_metadata["token_usage"]
    questions = ["Answer with one word: what colour is the sky?", "Answer with one word: 2+2?"]
    for q in questions:  # warm the prefix cache, so both paths below read the same from it
        llm.invoke(q)
    batched = asyncio.run(llm.abatch(questions))
    singles = [llm.invoke(q) for q in questions]
    assert all("id" not in m.response_metadata for m in batched)  # native: no /v1 response id
    assert [m.content for m in batched] == [m.content for m in singles]
    assert [metadata(m) for m in batched] == [metadata(m) for m in singles]


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=150)


@pytest.mark.slow
def test_a_structured_model_step_ships_with_its_constraint(server_url):
    llm = chat(server_url, max_tokens=40)
    prompt = ChatPromptTemplate.from_messages([("human", "Extract the person: {text}")])
    chain = prompt | llm.with_structured_output(Person)
    x = {"text": "Ann is 31 years old."}
    plain = chain.invoke(x)
    assert isinstance(plain, Person) and plain.age == 31
    shipped = ship(chain)
    requests = Requests(llm)
    assert shipped.invoke(x) == plain
    # The model step ran as a native call (the parser is local, on its value).
    assert requests.count("POST", "/programs") == 1
    assert requests.count("POST", "/chat/completions") == 0
    # Tools cannot be offered to a native call: that step goes through /v1.
    tool_step = ship(prompt | llm.with_structured_output(Person, method="function_calling"))
    before = requests.count("POST", "/chat/completions")
    assert isinstance(tool_step.invoke(x), Person)
    assert requests.count("POST", "/chat/completions") == before + 1

"""Tool calling on `/v1/chat/completions` with the real model, through the official `openai`
client: calls follow their tools' schemas under every `tool_choice`, histories with calls and
results are served, streamed calls reassemble to the non-streamed ones, bad requests are 400s.
The generic JSON tool format's parser is also checked piece by piece, without a server."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from parrot_integrations.protocol.openai import ChatCompletionRequest
from parrot_server.tool_calls.format import CallPiece, TextPiece
from parrot_server.tool_calls.generic import GenericJsonTools

SYSTEM = "You are an assistant with tools. Always use the tools to look things up."


def tool(name: str, description: str, parameters: dict) -> dict:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


WEATHER = tool(
    "get_weather",
    "Get the current weather in a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 30},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
)
CONVERT = tool(
    "convert_currency",
    "Convert an amount of money between two currencies.",
    {
        "type": "object",
        "properties": {
            "amount": {"type": "number", "minimum": 0, "maximum": 1000000},
            "source": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "target": {"type": "string", "pattern": "^[A-Z]{3}$"},
        },
        "required": ["amount", "source", "target"],
    },
)
SEARCH = tool(
    "search_books",
    "Search a library catalogue.",
    {
        "type": "object",
        "properties": {
            "query": {"type": "string", "maxLength": 40},
            "filters": {
                "type": "object",
                "properties": {
                    "year_from": {"type": "integer", "minimum": 1500, "maximum": 2030},
                    "languages": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                },
            },
        },
        "required": ["query"],
    },
)
TOOLS = [WEATHER, CONVERT, SEARCH]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def ask(text: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def checked_calls(message) -> list[tuple[str, dict]]:
    """(name, arguments) of each call, every one valid for its tool."""
    assert message.tool_calls, message
    out = []
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, SCHEMAS[call.function.name])
        out.append((call.function.name, arguments))
    assert len({c.id for c in message.tool_calls}) == len(message.tool_calls)
    return out


@pytest.fixture(scope="module")
def client(server_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0)


# -- the server -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "question",
    [
        "What is the weather in Oslo, in celsius?",
        "How much is 250 US dollars in euros?",
        "Find books about sailing written after 1990.",
        "Hello! Who are you?",  # no tool fits: a call is still required, and valid
    ],
)
def test_required_calls_follow_their_schemas(client, question):
    r = client.chat.completions.create(
        model="default",
        messages=ask(question),
        tools=TOOLS,
        tool_choice="required",
        max_tokens=200,
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    checked_calls(choice.message)


@pytest.mark.slow
def test_named_choice_calls_that_tool_once_without_parallel_calls(client):
    for seed in range(3):
        r = client.chat.completions.create(
            model="default",
            messages=ask("I am going to Rome tomorrow."),
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
            max_tokens=80,
            temperature=1.0,
            seed=seed,
        )
        [(name, arguments)] = checked_calls(r.choices[0].message)
        assert name == "get_weather"


@pytest.mark.slow
def test_none_and_auto_answer_in_text_or_valid_calls(client):
    r = client.chat.completions.create(
        model="default",
        messages=ask("Say hello."),
        tools=TOOLS,
        tool_choice="none",
        max_tokens=20,
        temperature=0,
    )
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content
    for question in ("What is the weather in Paris, in celsius?", "Tell me a joke."):
        r = client.chat.completions.create(
            model="default", messages=ask(question), tools=TOOLS, max_tokens=120, temperature=0
        )
        message = r.choices[0].message
        if message.tool_calls:
            assert r.choices[0].finish_reason == "tool_calls"
            checked_calls(message)
        else:
            assert message.content and not message.content.lstrip().startswith("{")


@pytest.mark.slow
def test_history_with_calls_and_results_is_served(client):
    first = client.chat.completions.create(
        model="default",
        messages=ask("What is the weather in Oslo, in celsius?"),
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=80,
        temperature=0,
    )
    message = first.choices[0].message
    [(name, _)] = checked_calls(message)
    history = ask("What is the weather in Oslo, in celsius?") + [
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "Sunny, 21 C"},
    ]
    r = client.chat.completions.create(
        model="default", messages=history, tools=TOOLS, max_tokens=60, temperature=0
    )
    answer = r.choices[0].message
    assert answer.content or answer.tool_calls
    if answer.tool_calls:
        checked_calls(answer)
    # Without tools offered the same history is still a valid conversation.
    r = client.chat.completions.create(
        model="default", messages=history, max_tokens=20, temperature=0
    )
    assert r.choices[0].message.content and r.choices[0].message.tool_calls is None


@pytest.mark.slow
def test_streamed_calls_reassemble_to_the_non_streamed_ones(client):
    kw = dict(
        model="default",
        messages=ask("Convert 100 euros to yen, and the weather in Tokyo in celsius."),
        tools=TOOLS,
        tool_choice="required",
        max_tokens=200,
        temperature=0,
    )
    whole = client.chat.completions.create(**kw)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        finish = chunk.choices[0].finish_reason or finish
        for d in chunk.choices[0].delta.tool_calls or ():
            call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += d.id or ""
            call["name"] += d.function.name or ""
            call["arguments"] += d.function.arguments or ""
    assert finish == whole.choices[0].finish_reason == "tool_calls"
    streamed = [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    assert streamed == checked_calls(whole.choices[0].message)
    assert all(c["id"].startswith("call_") for c in calls.values())


@pytest.mark.slow
def test_streamed_plain_answer_with_tools_is_text(client):
    kw = dict(model="default", messages=ask("Tell me a joke."), tools=TOOLS, temperature=0)
    whole = client.chat.completions.create(max_tokens=60, **kw).choices[0].message
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(stream=True, max_tokens=60, **kw)
        if c.choices
    )
    assert text == (whole.content or "")


@pytest.mark.slow
@pytest.mark.parametrize(
    "body, needle",
    [
        (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "nope"),
        (dict(tool_choice="required"), "needs tools"),
        (dict(tools=[WEATHER, WEATHER]), "unique"),
        (dict(tools=[tool("bad name!", "", {"type": "object"})]), "name"),
        (
            dict(
                tools=[tool("t", "", {"type": "object", "properties": {"a": {"type": "nope"}}})],
                tool_choice="required",
            ),
            'invalid JSON schema: Unsupported type "nope"',
        ),
        (dict(messages=[{"role": "tool", "content": "21 C"}]), "tool_call_id"),
        (dict(messages=[{"role": "function", "name": "f", "content": "x"}]), "legacy"),
        (
            dict(messages=[{"role": "user", "content": "x", "tool_calls": []}], tools=TOOLS),
            None,
        ),  # empty calls on a user turn: harmless
    ],
)
def test_bad_tool_requests_are_400s(client, body, needle):
    body = {"messages": ask("hi"), **body}
    if needle is None:
        r = client.chat.completions.create(model="default", max_tokens=2, **body)
        assert r.choices[0].finish_reason in ("length", "stop", "tool_calls")
        return
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="default", max_tokens=2, **body)
    assert needle in str(err.value)


# -- the generic format, without a server ------------------------------------------------------


def request(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(messages=ask("hi"), tools=TOOLS, **kw)


def parse(req: ChatCompletionRequest, text: str, step: int):
    parser = GenericJsonTools().parser(req)
    pieces = []
    for i in range(0, len(text), step):
        pieces += parser.feed(text[i : i + step])
    pieces += parser.finish()
    answer = "".join(p.text for p in pieces if isinstance(p, TextPiece))
    calls = [
        (p.index, p.call.function.name, p.call.function.arguments)
        for p in pieces
        if isinstance(p, CallPiece)
    ]
    return answer, calls


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_parser_reads_the_same_however_the_output_is_split(step):
    req = request()
    text = ' {"response" :  "caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ end"}'
    assert parse(req, text, step) == ('café 😀 "q" \\ end', [])
    text = (
        '{"tool_calls": [ {"name": "get_weather", "arguments": {"city": "Ri\\u00f5", '
        '"unit": "celsius"}} ,\n{"name":"search_books","arguments":{"query":"[x]}"}}]}'
    )
    assert parse(req, text, step) == (
        "",
        [
            (0, "get_weather", '{"city": "Riõ", "unit": "celsius"}'),
            (1, "search_books", '{"query": "[x]}"}'),
        ],
    )
    repeated = '{"tool_calls": [{"name": "f", "arguments": {}}, {"name": "f", "arguments": {}}]}'
    assert parse(req, repeated, step) == ("", [(0, "f", "{}")])
    # Cut short by max_tokens: complete calls are kept, the partial one is not.
    assert parse(req, text[:100], step)[1] == [
        (0, "get_weather", '{"city": "Riõ", "unit": "celsius"}')
    ]
    assert parse(req, '{"resp', step) == ('{"resp', [])  # the format never showed
    # A lone surrogate from a JSON escape cannot be sent as UTF-8: it is replaced.
    assert parse(req, '{"response": "a\\ud800b"}', step)[0] == "a\ufffdb"


def test_answer_with_response_format_is_the_json_value():
    req = request(
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "p",
                "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
            },
        }
    )
    schema = json.loads(GenericJsonTools().output_schema(req))
    assert schema["anyOf"][1]["properties"]["response"]["properties"]["n"]["type"] == "integer"
    assert parse(req, '{"response": {"n": 3} }', 2) == ('{"n": 3}', [])


def test_turns_render_calls_and_results_for_a_template_without_tools():
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    req = ChatCompletionRequest(
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
            {"role": "tool", "tool_call_id": "call_9", "content": "?"},
        ],
        tools=TOOLS,
        tool_choice="none",
    )
    turns = GenericJsonTools().turns(req)
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert json.loads(turns[1]["content"]) == {
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    }
    assert "get_weather returned: Sunny" in turns[2]["content"]
    assert "a tool returned: ?" in turns[2]["content"]
    assert GenericJsonTools().output_schema(req) is None  # "none": nothing offered
    offered = GenericJsonTools().turns(request())
    assert offered[0]["role"] == "system" and offered[0]["content"].startswith(SYSTEM)
    assert '"name": "search_books"' in offered[0]["content"]

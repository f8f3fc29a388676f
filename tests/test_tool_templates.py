"""Tool calling for models whose chat template has its own tool format: the syntax is found
in the template, the template renders the tools, calls and results, the output is constrained
to the model's call syntax and parsed from it. End to end with the default model's weights
under a Hermes-style template (`--chat-template`), the syntax Qwen2.5 and Hermes models use."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import openai
import pytest

from parrot_integrations.protocol.openai import ChatCompletionRequest
from parrot_server.tool_calls import GenericJsonTools, TemplateTools, tool_format
from parrot_server.tool_calls.format import CallPiece, TextPiece
from parrot_server.tool_calls.template import HERMES, LLAMA, syntax_of

HERMES_TEMPLATE = Path(__file__).parent / "data" / "hermes_tools.jinja"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
        },
    },
}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}


def test_the_syntax_is_found_in_the_template():
    chatml = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}{% endfor %}"
    assert syntax_of(chatml) is None and syntax_of(None) is None  # SmolLM2's kind: no tools
    assert isinstance(tool_format(chatml), GenericJsonTools)
    assert syntax_of(HERMES_TEMPLATE.read_text()) is HERMES
    llama = '{% if tools %}{"name": ..., "parameters": ...}<|python_tag|>{% endif %}<|eot_id|>'
    assert syntax_of(llama) is LLAMA
    assert isinstance(tool_format(HERMES_TEMPLATE.read_text()), TemplateTools)


def parse(syntax, text: str, step: int):
    req = ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], tools=[WEATHER])
    parser = TemplateTools(syntax).parser(req)
    pieces = []
    for i in range(0, len(text), step):
        pieces += parser.feed(text[i : i + step])
    pieces += parser.finish()
    content = "".join(p.text for p in pieces if isinstance(p, TextPiece))
    calls = [
        (p.call.function.name, json.loads(p.call.function.arguments))
        for p in pieces
        if isinstance(p, CallPiece)
    ]
    return content, calls


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_calls_are_read_from_the_models_syntax_however_split(step):
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    oslo = ("get_weather", {"city": "Oslo"})
    assert parse(HERMES, f"Let me check.\n{call}\n{call}\n", step) == ("Let me check.", [oslo])
    assert parse(HERMES, "No tool: a < b, <tool is fine", step) == (
        "No tool: a < b, <tool is fine",
        [],
    )
    cut = call.replace("}}\n</tool_call>", "")
    assert parse(HERMES, f"{call}\n{cut}", step) == ("", [oslo])  # the cut call is not made
    llama = '{"name": "get_weather", "parameters": {"city": "Oslo"}}'
    assert parse(LLAMA, llama, step) == ("", [oslo])
    assert parse(LLAMA, f"Sure. {llama}", step) == ("Sure.", [oslo])


@pytest.fixture(scope="module")
def hermes_server(parrot_process) -> str:
    flags = ["--chat-template", str(HERMES_TEMPLATE), "--kv-pool-tokens", "8192"]
    server = parrot_process(["serve", *flags, "--log-level", "warning"], "hermes")
    return server.wait_healthy().url


@pytest.fixture(scope="module")
def client(hermes_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{hermes_server}/v1", api_key="unused", max_retries=0)


def checked(message) -> list[tuple[str, dict]]:
    assert message.tool_calls
    out = []
    for call in message.tool_calls:
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, SCHEMAS[call.function.name])
        out.append((call.function.name, arguments))
    return out


@pytest.mark.slow
def test_hermes_template_calls_results_and_streams(client):
    ask = [{"role": "user", "content": "What is the weather in Oslo?"}]
    kw = dict(model="default", tools=[WEATHER, TIME], max_tokens=120, temperature=0)
    r = client.chat.completions.create(messages=ask, tool_choice="required", **kw)
    assert r.choices[0].finish_reason == "tool_calls"
    calls = checked(r.choices[0].message)
    named = client.chat.completions.create(
        messages=ask, tool_choice={"type": "function", "function": {"name": "get_time"}}, **kw
    )
    assert {n for n, _ in checked(named.choices[0].message)} == {"get_time"}
    streamed: dict[int, dict] = {}
    for chunk in client.chat.completions.create(
        messages=ask, tool_choice="required", stream=True, **kw
    ):
        for d in (chunk.choices[0].delta.tool_calls or ()) if chunk.choices else ():
            c = streamed.setdefault(d.index, {"name": "", "arguments": ""})
            c["name"] += d.function.name or ""
            c["arguments"] += d.function.arguments or ""
    assert [(c["name"], json.loads(c["arguments"])) for _, c in sorted(streamed.items())] == calls
    # The history goes back through the template (calls as <tool_call>, results as responses).
    message = r.choices[0].message
    history = (
        ask
        + [message.model_dump(exclude_none=True)]
        + [
            {"role": "tool", "tool_call_id": c.id, "content": "Sunny, 21 C"}
            for c in message.tool_calls
        ]
    )
    answer = client.chat.completions.create(messages=history, **kw).choices[0].message
    assert answer.content or checked(answer)
    with pytest.raises(openai.BadRequestError, match="response_format together with tools"):
        client.chat.completions.create(messages=ask, response_format={"type": "json_object"}, **kw)

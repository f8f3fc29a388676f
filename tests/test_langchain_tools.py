"""`ChatParrot` tools and structured output against a live `parrot serve` with the default
model: a LangChain agent with two tools runs its loop to an answer, `with_structured_output`
parses by every method, streamed calls add up to the invoked ones, batches with tools work."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from parrot_integrations.langchain import ChatParrot

pytestmark = pytest.mark.slow

AGENT_PROMPT = (
    "You are an assistant with tools. Always use the tools to look things up, then answer "
    "from their results."
)


@tool
def get_weather(city: str) -> str:
    """Get the current temperature in a city, in Celsius."""
    return "18 degrees Celsius"


@tool
def celsius_to_fahrenheit(celsius: float) -> str:
    """Convert a temperature from Celsius to Fahrenheit."""
    return f"{celsius * 9 / 5 + 32:.1f} degrees Fahrenheit"


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(max_length=30)
    age: int = Field(ge=0, le=150)


class PersonDict(TypedDict):
    name: str
    age: int


@pytest.fixture
def chat(server_url) -> ChatParrot:
    return ChatParrot(base_url=server_url, temperature=0, max_tokens=80)


def valid_calls(message: AIMessage, tools) -> None:
    """Every call names one of `tools` with arguments valid for its schema."""
    schemas = {t.name: t.tool_call_schema.model_json_schema() for t in tools}
    assert message.tool_calls and not message.invalid_tool_calls
    for call in message.tool_calls:
        jsonschema.validate(call["args"], schemas[call["name"]])


def test_agent_with_two_tools_calls_a_tool_then_answers(chat):
    tools = [get_weather, celsius_to_fahrenheit]
    agent = create_agent(chat, tools=tools, system_prompt=AGENT_PROMPT)
    question = "What is the temperature in Paris in Fahrenheit?"
    out = agent.invoke({"messages": [HumanMessage(question)]}, {"recursion_limit": 12})
    messages = out["messages"]
    steps = [m for m in messages if isinstance(m, AIMessage)]
    assert len(steps) >= 2  # at least one step calling tools, then the answer
    for step in steps[:-1]:
        valid_calls(step, tools)
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert results and all(r.status == "success" for r in results)
    assert {r.tool_call_id for r in results} == {c["id"] for s in steps for c in s.tool_calls}
    final = steps[-1]
    assert not final.tool_calls and final.text.strip()
    assert final.response_metadata["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_structured_output_by_every_method(chat, method):
    text = "Alice is 31 years old. Extract the person as JSON with keys name and age."
    person = chat.with_structured_output(Person, method=method).invoke(text)
    assert isinstance(person, Person) and person.age == 31
    as_dict = chat.with_structured_output(PersonDict, method=method).invoke(text)
    assert isinstance(as_dict, dict) and set(as_dict) == {"name", "age"}


def test_structured_output_include_raw_keeps_what_did_not_parse(server_url):
    short = ChatParrot(base_url=server_url, temperature=0, max_tokens=3)
    out = short.with_structured_output(Person, include_raw=True).invoke("Alice is 31.")
    assert isinstance(out["raw"], AIMessage) and out["parsed"] is None
    assert out["parsing_error"] is not None  # cut by max_tokens: not valid JSON yet
    good = ChatParrot(base_url=server_url, temperature=0, max_tokens=60)
    out = good.with_structured_output(Person, include_raw=True).invoke("Alice is 31.")
    assert isinstance(out["parsed"], Person) and out["parsing_error"] is None


def test_tool_choice_forms_and_streamed_calls(chat):
    tools = [get_weather, celsius_to_fahrenheit]
    for choice in ("any", "required", True, "celsius_to_fahrenheit"):
        bound = chat.bind_tools(tools, tool_choice=choice, parallel_tool_calls=False)
        message = bound.invoke([SystemMessage(AGENT_PROMPT), HumanMessage("Convert 20 C.")])
        valid_calls(message, tools)
        assert len(message.tool_calls) == 1
        if choice == "celsius_to_fahrenheit":
            assert message.tool_calls[0]["name"] == choice
    bound = chat.bind_tools(tools, tool_choice="required")
    question = [SystemMessage(AGENT_PROMPT), HumanMessage("Weather in Rome, in Fahrenheit?")]
    invoked = bound.invoke(question)
    full = None
    for chunk in bound.stream(question):
        full = chunk if full is None else full + chunk
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [
        (c["name"], c["args"]) for c in invoked.tool_calls
    ]
    assert full.response_metadata["finish_reason"] == "tool_calls"
    with pytest.raises(ValueError, match="none of the tools"):
        chat.bind_tools(tools, tool_choice="nope")


def test_history_with_tool_messages_and_batches(chat):
    call = {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_1"}
    history = [
        SystemMessage(AGENT_PROMPT),
        HumanMessage("Weather in Oslo?"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("Sunny, 21 degrees Celsius", tool_call_id="call_1"),
    ]
    answer = chat.bind_tools([get_weather]).invoke(history)
    assert answer.text or answer.tool_calls
    plain = chat.invoke(history)  # no tools offered: the history is still served
    assert plain.text and not plain.tool_calls
    # A batch with tools cannot be a native program: each input goes through /v1.
    bound = chat.bind_tools([get_weather], tool_choice="required")
    questions = [f"Weather in {c}?" for c in ("Oslo", "Lima")]
    for message in bound.batch(questions):
        valid_calls(message, [get_weather])
    for message in asyncio.run(bound.abatch(questions)):
        valid_calls(message, [get_weather])
    assert json.loads(
        bound.invoke("Weather in Oslo?").additional_kwargs["tool_calls"][0]["function"]["arguments"]
    )

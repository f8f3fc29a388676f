"""`Parrot` (LlamaIndex) as a function-calling LLM against a live `parrot serve` with the
default model: a `FunctionAgent` with two tools runs to an answer, `chat_with_tools` (plain
and streamed) returns valid calls, `structured_predict` and `as_structured_llm` parse."""

from __future__ import annotations

import jsonschema
import pytest
from llama_index.core.agent.workflow import AgentOutput, FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from parrot_integrations.llamaindex import Parrot

pytestmark = pytest.mark.slow

AGENT_PROMPT = (
    "You are an assistant with tools. Always use the tools to look things up, then answer "
    "from their results."
)


def get_weather(city: str) -> str:
    """Get the current temperature in a city, in Celsius."""
    return "18 degrees Celsius"


def celsius_to_fahrenheit(celsius: float) -> str:
    """Convert a temperature from Celsius to Fahrenheit."""
    return f"{celsius * 9 / 5 + 32:.1f} degrees Fahrenheit"


TOOLS = [FunctionTool.from_defaults(get_weather), FunctionTool.from_defaults(celsius_to_fahrenheit)]
SCHEMAS = {t.metadata.name: t.metadata.get_parameters_dict() for t in TOOLS}


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(max_length=30)
    age: int = Field(ge=0, le=150)


@pytest.fixture
def llm(server_url) -> Parrot:
    return Parrot(api_base=server_url, temperature=0, max_tokens=80)


def valid(selections) -> None:
    assert selections
    for s in selections:
        assert s.tool_id.startswith("call_")
        jsonschema.validate(s.tool_kwargs, SCHEMAS[s.tool_name])


def test_is_a_function_calling_llm(llm):
    assert isinstance(llm, FunctionCallingLLM) and llm.metadata.is_function_calling_model
    completion_only = Parrot(api_base=llm.api_base, is_chat_model=False)
    assert not completion_only.metadata.is_function_calling_model


async def test_function_agent_with_two_tools_calls_a_tool_then_answers(llm):
    agent = FunctionAgent(tools=TOOLS, llm=llm, system_prompt=AGENT_PROMPT)
    out = await agent.run(
        user_msg="What is the temperature in Paris in Fahrenheit?", max_iterations=8
    )
    assert isinstance(out, AgentOutput)
    assert out.tool_calls and all(not c.tool_output.is_error for c in out.tool_calls)
    for call in out.tool_calls:
        jsonschema.validate(call.tool_kwargs, SCHEMAS[call.tool_name])
    assert out.response.content and not any(
        isinstance(b, ToolCallBlock) for b in out.response.blocks
    )


def test_chat_with_tools_plain_and_streamed(llm):
    ask = "What is the weather in Rome?"
    for required in (True, False):
        response = llm.chat_with_tools(TOOLS, user_msg=ask, tool_required=required)
        if required or llm.get_tool_calls_from_response(response, error_on_no_tool_call=False):
            valid(llm.get_tool_calls_from_response(response))
    response = llm.chat_with_tools(TOOLS, user_msg=ask, tool_choice="celsius_to_fahrenheit")
    [selection] = llm.get_tool_calls_from_response(response)
    assert selection.tool_name == "celsius_to_fahrenheit"
    chunks = list(llm.stream_chat_with_tools(TOOLS, user_msg=ask, tool_required=True))
    streamed = llm.get_tool_calls_from_response(chunks[-1])
    whole = llm.get_tool_calls_from_response(
        llm.chat_with_tools(TOOLS, user_msg=ask, tool_required=True)
    )
    assert [(s.tool_name, s.tool_kwargs) for s in streamed] == [
        (s.tool_name, s.tool_kwargs) for s in whole
    ]
    with pytest.raises(ValueError, match="expected at least one tool call"):
        llm.get_tool_calls_from_response(llm.chat_with_tools([], user_msg="Say hi."))


async def test_history_with_calls_and_results(llm):
    call = ToolCallBlock(
        tool_call_id="call_1", tool_name="get_weather", tool_kwargs={"city": "Oslo"}
    )
    history = [
        ChatMessage(role=MessageRole.SYSTEM, content=AGENT_PROMPT),
        ChatMessage(role=MessageRole.USER, content="Weather in Oslo?"),
        ChatMessage(role=MessageRole.ASSISTANT, blocks=[call]),
        ChatMessage(
            role=MessageRole.TOOL,
            content="Sunny, 21 C",
            additional_kwargs={"tool_call_id": "call_1"},
        ),
    ]
    answer = await llm.achat_with_tools(TOOLS, chat_history=history)
    assert answer.message.content or llm.get_tool_calls_from_response(answer, False)
    plain = await llm.achat(history)  # no tools offered: still a valid conversation
    assert plain.message.content


def test_structured_predict_and_structured_llm(llm):
    prompt = PromptTemplate("Extract the person: {text}")
    person = llm.structured_predict(Person, prompt, text="Alice is 31 years old.")
    assert isinstance(person, Person) and person.age == 31
    structured = llm.as_structured_llm(Person)
    response = structured.chat([ChatMessage(role=MessageRole.USER, content="Bob is 40.")])
    assert isinstance(response.raw, Person) and response.raw.age == 40

"""An agent with tools, in LangChain and in LlamaIndex, served by Parrot.

Start a server first (`.venv/bin/parrot serve`), then run `python cookbook/agent_tools.py`.
The server URL comes from PARROT_BASE_URL (default http://127.0.0.1:8000).

Both agents are the frameworks' own (`langchain.agents.create_agent`, LlamaIndex's
`FunctionAgent`); the model is Parrot's. Every tool call the model makes names a real tool with
arguments valid for its schema: the server constrains the output by decoding, so even the
default 135M model never emits a malformed call. (Whether it picks the right tool is up to the
model: a bigger one chains tools where the 135M one answers after the first result.)
"""

from __future__ import annotations

import asyncio
import time

SYSTEM = (
    "You are an assistant with tools. Always use the tools to look things up, then answer "
    "from their results."
)
QUESTION = "What is the temperature in Paris in Fahrenheit?"


def get_weather(city: str) -> str:
    """Get the current temperature in a city, in Celsius."""
    return "18 degrees Celsius"


def celsius_to_fahrenheit(celsius: float) -> str:
    """Convert a temperature from Celsius to Fahrenheit."""
    return f"{celsius * 9 / 5 + 32:.1f} degrees Fahrenheit"


def langchain_agent() -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    from parrot_integrations.langchain import ChatParrot

    llm = ChatParrot(temperature=0, max_tokens=80)
    agent = create_agent(
        llm, tools=[tool(get_weather), tool(celsius_to_fahrenheit)], system_prompt=SYSTEM
    )
    t = time.perf_counter()
    out = agent.invoke({"messages": [("user", QUESTION)]}, {"recursion_limit": 12})
    for m in out["messages"]:
        calls = getattr(m, "tool_calls", None)
        print(f"  {m.type:>5}: {m.text or ''}{f' calls {calls}' if calls else ''}")
    print(f"  ({time.perf_counter() - t:.2f} s)\n")


async def llamaindex_agent() -> None:
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.tools import FunctionTool

    from parrot_integrations.llamaindex import Parrot

    llm = Parrot(temperature=0, max_tokens=80)
    tools = [
        FunctionTool.from_defaults(get_weather),
        FunctionTool.from_defaults(celsius_to_fahrenheit),
    ]
    agent = FunctionAgent(tools=tools, llm=llm, system_prompt=SYSTEM)
    t = time.perf_counter()
    out = await agent.run(user_msg=QUESTION, max_iterations=8)
    for call in out.tool_calls:
        print(f"  tool: {call.tool_name}({call.tool_kwargs}) -> {call.tool_output.content}")
    print(f"  answer: {out.response.content}")
    print(f"  ({time.perf_counter() - t:.2f} s)")


def main() -> None:
    print("LangChain create_agent:")
    langchain_agent()
    print("LlamaIndex FunctionAgent:")
    asyncio.run(llamaindex_agent())


if __name__ == "__main__":
    main()

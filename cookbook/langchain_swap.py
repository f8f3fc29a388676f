"""A typical small LangChain app, written for ChatOpenAI, served by Parrot with a one-line swap.

Start a server first (`.venv/bin/parrot serve`), then run `python cookbook/langchain_swap.py`.
The server URL comes from PARROT_BASE_URL (default http://127.0.0.1:8000); the API key, if
the server has one, from PARROT_API_KEY.

Nothing below the swap knows it talks to Parrot: LCEL chains, a two-step chain, `batch` for
several inputs, and streaming. (Shipping the whole chain to the server as one program, so its
dependent calls run server-side, is `parrot_integrations.langchain.ship` — a separate recipe.)
"""

from __future__ import annotations

import time

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

# -- the swap -------------------------------------------------------------------------------------
# from langchain_openai import ChatOpenAI
# llm = ChatOpenAI(model="gpt-4o-mini", temperature=0, max_tokens=60)
from parrot_integrations.langchain import ChatParrot

llm = ChatParrot(temperature=0, max_tokens=60)  # same arguments; model: the server's one

# -- the app, unchanged ---------------------------------------------------------------------------
summarize = (
    ChatPromptTemplate.from_messages(
        [
            ("system", "You are a concise assistant."),
            ("human", "Summarize in one sentence:\n\n{text}"),
        ]
    )
    | llm
    | StrOutputParser()
)
title = (
    ChatPromptTemplate.from_messages([("human", "Give a title of a few words for: {summary}")])
    | llm.bind(max_tokens=16, stop=["\n"])
    | StrOutputParser()
)
# Two dependent calls: the summary feeds the title.
summary_and_title = summarize | (lambda summary: {"summary": summary}) | title

NOTES = [
    "The solar kettle heats a litre of water in twenty minutes of direct sun. It folds flat, "
    "weighs under a kilogram, and needs no fuel, which makes it popular with hikers.",
    "Our city library now lends tools: drills, ladders and sewing machines can be borrowed "
    "for a week with a library card, and volunteers run repair evenings on Thursdays.",
    "Bees communicate the direction and distance of flowers through a waggle dance; the angle "
    "of the dance relative to vertical encodes the direction relative to the sun.",
]


def main() -> None:
    t = time.perf_counter()
    print("summary:", summarize.invoke({"text": NOTES[0]}))
    print(f"  ({time.perf_counter() - t:.2f} s)\n")

    t = time.perf_counter()
    print("title of the summary:", summary_and_title.invoke({"text": NOTES[1]}))
    print(f"  ({time.perf_counter() - t:.2f} s)\n")

    # batch: with ChatParrot the inputs go to the server at once, from one event loop.
    t = time.perf_counter()
    for note, out in zip(NOTES, summarize.batch([{"text": n} for n in NOTES]), strict=True):
        print(f"- {note[:40]}... -> {out}")
    print(f"  (batch of {len(NOTES)}: {time.perf_counter() - t:.2f} s)\n")

    print("streamed: ", end="", flush=True)
    for piece in summarize.stream({"text": NOTES[2]}):
        print(piece, end="", flush=True)
    print()

    usage = llm.invoke("Say hello.").usage_metadata  # cached prompt tokens, as OpenAI reports
    print(f"\nusage of one call: {usage}")


if __name__ == "__main__":
    main()

"""The app of cookbook/langchain_swap.py, run plainly and shipped with `ship(chain)`.

Start a server first (`.venv/bin/parrot serve`), then:

    .venv/bin/python cookbook/langchain_ship.py [--rtt-ms 50] [--runs 3] [--max-tokens 60]

Plainly, `ChatParrot` sends one `/v1` request per model call and the client waits for each
answer before it sends the next. Shipped, each stretch of the chain without a barrier is one
native program: dependent calls run on the server back to back, the maps of a map-reduce start
together. Outputs are compared (temperature 0: they must be equal) and the median wall time of
`--runs` runs is printed, with the HTTP requests of one run. On loopback a request costs well
under a millisecond, so the gain is small; `--rtt-ms` adds a simulated client<->server round
trip to every request (an httpx event hook that sleeps), as for a server across a network.
The server URL comes from PARROT_BASE_URL (default http://127.0.0.1:8000).
"""

from __future__ import annotations

import argparse
import statistics
import time

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableParallel

from parrot_integrations.langchain import ChatParrot, ship

NOTES = [
    "The solar kettle heats a litre of water in twenty minutes of direct sun. It folds flat, "
    "weighs under a kilogram, and needs no fuel, which makes it popular with hikers.",
    "Our city library now lends tools: drills, ladders and sewing machines can be borrowed "
    "for a week with a library card, and volunteers run repair evenings on Thursdays.",
    "Bees communicate the direction and distance of flowers through a waggle dance; the angle "
    "of the dance relative to vertical encodes the direction relative to the sun.",
]


def build_app(llm: ChatParrot) -> dict[str, tuple[Runnable, object]]:
    """The chains of langchain_swap.py (unchanged), plus the same title chain written without
    the lambda and a map-reduce over the notes; each with its input."""
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
    combine = (
        ChatPromptTemplate.from_messages(
            [("human", "Three summaries:\n- {a}\n- {b}\n- {c}\nOne sentence on what they share:")]
        )
        | llm
        | StrOutputParser()
    )
    notes = {"a": NOTES[0], "b": NOTES[1], "c": NOTES[2]}
    summarize_each = RunnableParallel(
        {
            k: ChatPromptTemplate.from_messages(
                [
                    ("system", "You are a concise assistant."),
                    ("human", "Summarize in one sentence:\n\n{" + k + "}"),
                ]
            )
            | llm
            | StrOutputParser()
            for k in notes
        }
    )
    return {
        # As written in langchain_swap.py: the lambda is a barrier, so two programs.
        "summary | lambda | title": (
            summarize | (lambda summary: {"summary": summary}) | title,
            {"text": NOTES[1]},
        ),
        # The same chain with a dict literal instead of the lambda: one program.
        "{summary: ...} | title": ({"summary": summarize} | title, {"text": NOTES[1]}),
        # Map-reduce: three summaries (one task group on the server), then one combination.
        "map-reduce over 3 notes": (summarize_each | combine, notes),
    }


class Wire:
    """Counts the requests of a model's blocking client and delays each by a simulated
    round trip (`rtt` seconds)."""

    def __init__(self, llm: ChatParrot, rtt: float) -> None:
        self.requests = 0
        self.rtt = rtt
        llm.client._http.event_hooks["request"].append(self._on_request)

    def _on_request(self, request: object) -> None:
        self.requests += 1
        if self.rtt:
            time.sleep(self.rtt)


def timed(chain: Runnable, x: object, wire: Wire, runs: int) -> tuple[object, float, int]:
    chain.invoke(x)  # warm: prompt prefixes cached, the shipped chain's session opened
    times, before = [], wire.requests
    for _ in range(runs):
        t = time.perf_counter()
        out = chain.invoke(x)
        times.append(time.perf_counter() - t)
    return out, statistics.median(times), (wire.requests - before) // runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="simulated round trip")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=60)
    args = parser.parse_args()

    llm = ChatParrot(temperature=0, max_tokens=args.max_tokens)
    wire = Wire(llm, args.rtt_ms / 1000)
    print(f"server {llm.base_url}; simulated round trip {args.rtt_ms:g} ms; {args.runs} runs\n")
    print(f"{'chain':34} {'plain s':>8} {'shipped s':>10} {'speed-up':>9} {'requests':>10}")
    for name, (chain, x) in build_app(llm).items():
        plain, t_plain, n_plain = timed(chain, x, wire, args.runs)
        shipped, t_ship, n_ship = timed(ship(chain), x, wire, args.runs)
        same = "same output" if shipped == plain else "DIFFERENT OUTPUT"
        print(
            f"{name:34} {t_plain:8.2f} {t_ship:10.2f} {t_plain / t_ship:8.2f}x "
            f"{n_plain:>4} -> {n_ship:<3} {same}"
        )
        if shipped != plain:
            print(f"  plain:   {plain!r}\n  shipped: {shipped!r}")
    print(f"\nlast output: {shipped!r}")


if __name__ == "__main__":
    main()

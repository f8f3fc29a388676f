"""Parrot quickstart: semantic functions, a 3-step chain and a small map-reduce.

Start a server first (`.venv/bin/parrot serve`), then run `python cookbook/quickstart.py`.
The server URL comes from PARROT_BASE_URL (default http://127.0.0.1:8000).

The functions use `chat=True`: the text before an output is the user's turn and the output
is the model's answer, rendered with the model's chat template (SmolLM2 is an instruct model).
Each app is submitted at once: calling a semantic function returns Semantic Variables
(futures) immediately, and the server runs every call as soon as its inputs exist, with no
round trip back to this script in between. `get()` is the only wait.
"""

from __future__ import annotations

import time

from parrot_integrations import Criteria, ParrotClient, SemanticFunction, semantic_function


@semantic_function(max_tokens=40, temperature=0, chat=True)
def outline(topic):
    """In one sentence, plan a short note about {{input:topic}}.{{output:plan}}"""


@semantic_function(max_tokens=60, temperature=0, chat=True)
def draft(plan):
    """Write two sentences following this plan: {{input:plan}}{{output:note}}"""


@semantic_function(max_tokens=16, temperature=0, chat=True, stop=["\n"])
def title(note):
    """Give a short title (a few words) for this note: {{input:note}}{{output:title}}"""


@semantic_function(max_tokens=24, temperature=0, chat=True, stop=["\n"])
def summarize(fact):
    """Summarize in a few words: {{input:fact}}{{output:summary}}"""


FACTS = [
    "Parrots can live for more than fifty years.",
    "Some parrots learn hundreds of words.",
    "Parrots use their feet to hold food.",
    "Many parrots live in tropical forests.",
]


def combine_template(n: int) -> str:
    lines = "\n".join(f"- {{{{input:s{k}}}}}" for k in range(n))
    return f"Combine these facts into one sentence:\n{lines}{{{{output:sentence}}}}"


def main() -> None:
    with ParrotClient() as client, client.session() as session:
        # 1. A 3-step chain: each step's output is the next step's input.
        start = time.perf_counter()
        with session.program() as program:  # one request for the whole chain
            plan = outline(program, topic="why parrots talk")
            note = draft(program, plan=plan)
            heading = title(program, note=note)
        print("Chain")
        print("  title:", heading.get(criteria=Criteria.LATENCY).strip())
        print("  note: ", note.get().strip())
        print(f"  time:  {time.perf_counter() - start:.2f} s")

        # 2. Map-reduce: the maps run together (a task group); the reduce starts on the server
        #    the moment the last map finishes.

        combine = SemanticFunction(
            combine_template(len(FACTS)), max_tokens=48, temperature=0, chat=True
        )
        start = time.perf_counter()
        with session.program() as program:
            summaries = [summarize(program, fact=f) for f in FACTS]
            sentence = combine(program, **{f"s{k}": s for k, s in enumerate(summaries)})
        print("Map-reduce")
        print("  result:", sentence.get(criteria=Criteria.LATENCY).strip())
        print(f"  time:   {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()

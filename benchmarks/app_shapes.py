"""The apps `apps.py` runs, as LangChain code that any chat model drives: the Parrot paper's
app shapes scaled to a CPU. Each is plain LCEL, so `chain.invoke` runs it call by call through
any OpenAI-compatible server, and `ship(chain).invoke` runs it on Parrot as native programs.

Texts come from `cookbook/data` (no network)."""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableParallel

DATA = Path(__file__).resolve().parents[1] / "cookbook" / "data"


def corpus() -> str:
    return "\n\n".join(p.read_text() for p in sorted(DATA.glob("*.md")))


def words(text: str, n: int, start: int = 0) -> str:
    """`n` words of `text` from word `start` (wrapping around)."""
    w = text.split()
    return " ".join(w[(start + i) % len(w)] for i in range(n))


@dataclass(frozen=True)
class Scale:
    chain_steps: int = 8
    maps: int = 16
    map_words: int = 120
    agents: int = 8
    context_words: int = 1100  # ~1.5K tokens
    chat_turns: int = 8
    max_tokens: int = 32

    @classmethod
    def quick(cls) -> Scale:
        return cls(
            chain_steps=4, maps=6, map_words=80, agents=4, context_words=500, chat_turns=4,
            max_tokens=16,
        )  # fmt: skip


def _step(llm: BaseChatModel, human: str, system: str | None = None) -> Runnable:
    turns = ([("system", system)] if system else []) + [("human", human)]
    return ChatPromptTemplate.from_messages(turns) | llm | StrOutputParser()


def summary_chain(llm: BaseChatModel, steps: int) -> Runnable:
    """Each step rewrites the previous summary: `steps` dependent calls."""
    chain: Runnable = _step(llm, "Summarize in one sentence:\n{text}")
    for _ in range(steps - 1):
        chain = chain | (
            ChatPromptTemplate.from_messages([("human", "Make this sentence clearer:\n{text}")])
            | llm
            | StrOutputParser()
        ).with_config(run_name="rewrite")
    return chain


def map_reduce(llm: BaseChatModel, maps: int) -> Runnable:
    """`maps` independent summaries of chunks, then one call combining them."""
    mapped = RunnableParallel(
        {
            f"s{i}": itemgetter(f"c{i}")
            | _step(llm, "Summarize in a few words:\n{chunk}").with_config(run_name="map")
            for i in range(maps)
        }  # noqa: E501
    )
    listing = "\n".join(f"- {{s{i}}}" for i in range(maps))
    return mapped | _step(llm, f"Combine these notes into one sentence:\n{listing}")


def map_inputs(maps: int, n_words: int) -> dict:
    text = corpus()
    return {f"c{i}": {"chunk": words(text, n_words, i * n_words)} for i in range(maps)}


ROLES = [
    "a historian", "an engineer", "a teacher", "a journalist", "a biologist", "a poet",
    "a lawyer", "a child",
]  # fmt: skip


def fan_out(llm: BaseChatModel, agents: int) -> Runnable:
    """`agents` calls over one shared long context (each with its own question), then a merge."""
    system = "You are a helpful assistant. Read the document and answer briefly.\n\n{context}"
    branches = {
        f"a{i}": _step(llm, f"In one sentence, what would {ROLES[i % len(ROLES)]} notice?", system)
        for i in range(agents)
    }
    listing = "\n".join(f"- {{a{i}}}" for i in range(agents))
    return RunnableParallel(branches) | _step(
        llm, f"Merge these views into one sentence:\n{listing}"
    )


CHAT_QUESTIONS = [
    "What is a lighthouse for?", "How do bees find flowers?", "Why does bread rise?",
    "What is lava?", "Who won the race, the tortoise or the hare?", "Name a warm colour.",
    "What is two plus two?", "Say hello in French.",
]  # fmt: skip

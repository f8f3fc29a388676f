"""LLM apps end to end, side by side: the same LangChain apps through three stacks in one run.

- `llama.cpp`: `ChatOpenAI` against llama.cpp's `llama-server` (16 slots) on the same GGUF,
  the peer a CPU user would pick (built by `llama_server.py`; its column is skipped when the
  binary is not there);
- `parrot /v1`: the same `ChatOpenAI` code against Parrot's OpenAI-compatible API (drop-in);
- `parrot`: the app written for Parrot: `ChatParrot`, chains shipped (`ship`) as native
  programs, latency/throughput criteria given.

Apps (`app_shapes.py`): a summary chain, a map-reduce, a fan-out of agents over one shared
long context then a merge, chat turns beside a background map-reduce, and requests of several
apps with long system prompts arriving as a Poisson process at a sweep of rates (per-token
latency percentiles; `--plot` draws them). Every cache is flushed before each run; greedy
decoding, so the two Parrot stacks must give the same outputs (checked). Wall times are medians
over `--reps`, the stacks' runs taken in turn (the VM's speed drifts over minutes); a ratio is
the best other stack's time over Parrot's. Each server answers one short call before any run.

    python benchmarks/apps.py --quick                  # a few minutes
    python benchmarks/apps.py --plot apps.png          # the full run
    python benchmarks/apps.py --peer-args "--spec-type ngram-simple"   # the peer's own drafts
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import llama_server
from app_shapes import (
    CHAT_QUESTIONS,
    Scale,
    corpus,
    fan_out,
    map_inputs,
    map_reduce,
    summary_chain,
    words,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from processes import Server, parrot_serve

from parrot_integrations.langchain import ChatParrot, ship
from parrot_server.engine.model.loader import default_model_path

SLOTS = 16  # llama-server's parallel sequences; Parrot batches up to its own limit
CONTEXT = 2048


@dataclass
class Stack:
    name: str
    server: Server
    native: bool  # the app written for Parrot: chains shipped, criteria given
    # How to empty its caches when no route does: llama-server keeps prompts in host memory
    # too (--cache-ram), so it is started again on the same port (about a second).
    restart: Callable[[int], Server] | None = None

    def llm(self, max_tokens: int, criteria: str | None = None) -> BaseChatModel:
        if self.native:
            return ChatParrot(
                base_url=self.server.url, temperature=0, max_tokens=max_tokens, criteria=criteria
            )
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            base_url=f"{self.server.url}/v1", api_key="unused", model="default",
            temperature=0, max_tokens=max_tokens, max_retries=0, timeout=600,
        )  # fmt: skip

    def run(self, chain: Runnable) -> Runnable:
        return ship(chain) if self.native else chain

    def busy_seconds(self) -> float | None:
        """Seconds Parrot's engines have spent in steps so far (None for the peer): what a
        part of an app took of the engine, idle gaps between its calls left out."""
        if self.restart is not None:
            return None
        info = httpx.get(f"{self.server.url}/server_info", timeout=30).raise_for_status().json()
        return sum(state["busy_seconds_total"] for state in info["internal_states"])

    def flush(self) -> None:
        """Every prompt cache emptied, so each run starts cold."""
        if self.restart is not None:
            port = int(self.server.url.rsplit(":", 1)[1])
            self.server.stop()
            self.server = self.restart(port)
        else:
            httpx.post(f"{self.server.url}/flush_cache", timeout=30).raise_for_status()


# -- each app, built once per stack (as an app keeps its model), run many times --------------------
def prepare_chain(stack: Stack, scale: Scale) -> Callable[[], Any]:
    chain = stack.run(summary_chain(stack.llm(scale.max_tokens), scale.chain_steps))
    text = words(corpus(), 150)
    return lambda: chain.invoke({"text": text})


def prepare_map_reduce(stack: Stack, scale: Scale) -> Callable[[], Any]:
    chain = stack.run(map_reduce(stack.llm(scale.max_tokens, "throughput"), scale.maps))
    inputs = map_inputs(scale.maps, scale.map_words)
    return lambda: chain.invoke(inputs)


def prepare_fan_out(stack: Stack, scale: Scale) -> Callable[[], Any]:
    chain = stack.run(fan_out(stack.llm(scale.max_tokens), scale.agents))
    context = words(corpus(), scale.context_words)
    return lambda: chain.invoke({"context": context})


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


async def chat_beside_map_reduce(stack: Stack, scale: Scale) -> dict[str, float]:
    """Chat turns one after another alone, the map-reduce alone, then both at once: chat
    latency both ways and the map-reduce's time both ways (alone measured here, in the same
    minute, so that the VM's drift between an app's runs does not enter the ratio); on Parrot
    also the engine time each took alone."""
    questions = CHAT_QUESTIONS[: scale.chat_turns]
    inputs = map_inputs(scale.maps, scale.map_words)

    async def turns() -> list[float]:
        chat = stack.llm(scale.max_tokens, "latency")  # after a flush: the server may be new
        out = []
        for q in questions:
            t = time.perf_counter()
            await chat.ainvoke(q)
            out.append(time.perf_counter() - t)
        return out

    def background() -> Runnable:
        return stack.run(map_reduce(stack.llm(scale.max_tokens, "throughput"), scale.maps))

    busy = [stack.busy_seconds()]
    alone = await turns()
    busy.append(stack.busy_seconds())
    stack.flush()
    start = time.perf_counter()
    await background().ainvoke(inputs)
    mr_alone = time.perf_counter() - start
    busy.append(stack.busy_seconds())
    stack.flush()
    start = time.perf_counter()
    job = asyncio.ensure_future(background().ainvoke(inputs))
    await asyncio.sleep(0.5)  # the map-reduce is queued first
    beside = await turns()
    await job
    out = {
        "alone p50": statistics.median(alone),
        "beside p50": statistics.median(beside),
        "beside worst": max(beside),
        "map-reduce alone": mr_alone,
        "map-reduce beside": time.perf_counter() - start,
    }
    if busy[0] is not None:
        # The engine runs one step at a time: unless the chat's tokens ride in the map-reduce's
        # steps (which would cost the chat several times its own step), the map-reduce beside
        # the chat ends about when the engine time of both is spent.
        out["chat engine"] = busy[1] - busy[0]
        out["map-reduce engine"] = busy[2] - busy[1]
    return out


async def poisson(stack: Stack, scale: Scale, rate: float, requests: int) -> list[float]:
    """Requests of 4 apps (each a long system prompt of its own) arriving at `rate` per second:
    each one's latency per generated token."""
    text = corpus()
    systems = [
        f"You answer for app {a}. Background:\n" + words(text, 400, a * 400) for a in range(4)
    ]
    llm = stack.llm(scale.max_tokens)
    rng = random.Random(0)
    at, plan = 0.0, []
    for i in range(requests):
        at += rng.expovariate(rate)
        plan.append((at, systems[i % 4], CHAT_QUESTIONS[i % len(CHAT_QUESTIONS)]))
    start = time.perf_counter()

    async def one(when: float, system: str, question: str) -> float:
        await asyncio.sleep(max(0.0, when - (time.perf_counter() - start)))
        t = time.perf_counter()
        msg = await llm.ainvoke([("system", system), ("human", question)])
        tokens = (msg.usage_metadata or {}).get("output_tokens") or 1
        return (time.perf_counter() - t) / tokens

    return await asyncio.gather(*(one(*p) for p in plan))


# -- the run ------------------------------------------------------------------------------------
APPS = {"chain": prepare_chain, "map-reduce": prepare_map_reduce, "fan-out": prepare_fan_out}
EVERY_APP = [*APPS, "mixed", "rates"]  # `mixed`: chat beside a map-reduce; `rates`: the sweep


def start_stacks(args) -> list[Stack]:
    stacks = []
    model = default_model_path()
    if llama_server.available():

        def peer(port: int | None = None) -> Server:
            return llama_server.llama_server(
                model, slots=SLOTS, context=CONTEXT, port=port, extra=shlex.split(args.peer_args)
            )

        stacks.append(Stack("llama.cpp", peer(), native=False, restart=peer))
    else:
        print(f"llama-server not built ({llama_server.binary()}): its column is skipped")
    parrot = parrot_serve("--max-context-len", str(CONTEXT), "--log-level", "warning")
    stacks += [Stack("parrot /v1", parrot, native=False), Stack("parrot", parrot, native=True)]
    return stacks


def sustained(rates: list[float], curves: dict[str, list[float]], slo: float) -> str:
    """Each stack's highest swept rate whose median latency per token stays within `slo`
    (every lower rate too), and Parrot's against each other stack's."""
    best: dict[str, float] = {}
    for name, medians in curves.items():
        best[name] = 0.0
        for rate, median in sorted(zip(rates, medians, strict=True)):
            if median > slo:
                break
            best[name] = rate
    cells = ", ".join(f"{k} {v:g}/s" for k, v in best.items())
    mine = best.get("parrot", 0.0)
    vs = ", ".join(f"{mine / v:.1f}x {k}" for k, v in best.items() if k != "parrot" and v)
    return f"sustained at median <= {slo:g} s/token: {cells}; parrot = {vs or '-'}"


def rotated(items: list, rep: int) -> list:
    """The stacks in turn, starting one further each repetition: every stack's runs fall in
    the same minutes as the others', and none always runs first (the VM's speed drifts)."""
    k = rep % len(items)
    return items[k:] + items[:k]


def spread(runs: dict[str, list[float]]) -> str:
    return "  ".join(f"{k} {' '.join(f'{x:.2f}' for x in v)}" for k, v in runs.items())


def ratio(times: dict[str, float]) -> str:
    others = [v for k, v in times.items() if k != "parrot"]
    return f"{min(others) / times['parrot']:.2f}x" if others and "parrot" in times else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small apps, one repetition")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per app (median)")
    ap.add_argument("--rates", type=float, nargs="*", default=None, help="requests per second")
    ap.add_argument("--requests", type=int, default=None, help="requests per rate")
    ap.add_argument("--plot", default=None, help="write the latency-vs-rate plot to this PNG")
    ap.add_argument(
        "--slo",
        type=float,
        default=0.1,
        help="median seconds per output token a rate must keep to count as sustained",
    )
    ap.add_argument(
        "--peer-args",
        default="",
        help="more llama-server flags, e.g. '--spec-type ngram-simple' (its draftless "
        "speculative decoding, off by default)",
    )
    ap.add_argument(
        "--apps", nargs="+", choices=EVERY_APP, default=EVERY_APP, help="which apps (default: all)"
    )
    args = ap.parse_args()
    scale = Scale.quick() if args.quick else Scale()
    reps = args.reps or (1 if args.quick else 3)
    rates = args.rates or ([0.5, 1.0] if args.quick else [0.25, 0.5, 1.0, 2.0, 3.0, 4.0])
    requests = args.requests or (8 if args.quick else 24)
    stacks = start_stacks(args)
    try:
        report(stacks, scale, reps, rates, requests, args.plot, args.apps, args.slo)
    finally:
        for server in {id(s.server): s.server for s in stacks}.values():
            server.stop()


def report(
    stacks: list[Stack],
    scale: Scale,
    reps: int,
    rates,
    requests: int,
    plot,
    apps: list[str],
    slo: float,
) -> None:
    # One loop for every async part: ChatOpenAI's HTTP client outlives a loop of its own.
    loop = asyncio.new_event_loop()
    print(f"stacks: {', '.join(s.name for s in stacks)}; {scale}; median of {reps}")
    for stack in stacks:  # each server's first call sets up what a long-running one has
        stack.llm(4).invoke("Hello")
    for app, prepare in APPS.items():
        if app not in apps:
            continue
        runs: dict[str, list[float]] = {s.name: [] for s in stacks}
        outputs = {}
        prepared = [(stack, prepare(stack, scale)) for stack in stacks]
        for rep in range(reps):
            for stack, go in rotated(prepared, rep):
                stack.flush()
                seconds, outputs[stack.name] = timed(go)
                runs[stack.name].append(seconds)
        times = {k: statistics.median(v) for k, v in runs.items()}
        same = outputs.get("parrot") == outputs.get("parrot /v1")
        cells = "  ".join(f"{k} {v:6.2f} s" for k, v in times.items())
        print(f"{app:12s} {cells}  ratio {ratio(times)}  parrot outputs equal: {same}")
        # Each run too: the VM's speed moves between runs, and a median of few hides how much.
        print(f"{'':12s} runs (s): {spread(runs)}")
    if "mixed" in apps:
        mixed: dict[str, list[dict[str, float]]] = {s.name: [] for s in stacks}
        for rep in range(reps):
            for stack in rotated(stacks, rep):
                stack.flush()
                mixed[stack.name].append(
                    loop.run_until_complete(chat_beside_map_reduce(stack, scale))
                )
        for name, ms in mixed.items():
            m = {k: statistics.median(r[k] for r in ms) for k in ms[0]}
            cells = "  ".join(f"{k} {v:.2f} s" for k, v in m.items())
            slowdown = m["map-reduce beside"] / m["map-reduce alone"]
            print(f"chat+MR      {name:10s} {cells}  map-reduce beside/alone {slowdown:.2f}x")
            if "chat engine" in m:
                both = (m["chat engine"] + m["map-reduce engine"]) / m["map-reduce alone"]
                print(
                    f"{'':12s} engine time of the chat and the map-reduce alone, added: "
                    f"{both:.2f}x the map-reduce alone"
                )
            runs = {
                k: [r[k] for r in ms]
                for k in ("alone p50", "beside p50", "map-reduce alone", "map-reduce beside")
            }
            print(f"{'':12s} runs (s): {spread(runs)}")
    curves: dict[str, list[float]] = {}
    for rate in rates if "rates" in apps else []:
        for stack in stacks:
            stack.flush()
            lat = sorted(loop.run_until_complete(poisson(stack, scale, rate, requests)))
            p = [lat[int(q * (len(lat) - 1))] for q in (0.5, 0.9, 0.99)]
            curves.setdefault(stack.name, []).append(p[0])
            print(
                f"rate {rate:4.2f}/s  {stack.name:10s} s/token p50 {p[0]:.3f} p90 {p[1]:.3f} "
                f"p99 {p[2]:.3f}"
            )
    if curves:
        print(sustained(rates, curves, slo))
    if plot and curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for name, ys in curves.items():
            plt.plot(rates, ys, marker="o", label=name)
        plt.xlabel("requests per second")
        plt.ylabel("median latency per output token (s)")
        plt.legend()
        plt.title("Apps with long system prompts, Poisson arrivals")
        plt.savefig(plot, dpi=120)
        print(f"plot: {plot}")


if __name__ == "__main__":
    main()

"""ServeCore benchmark: an app's dependent calls submitted as one program (native API, the
server runs the DAG) vs the same server driven request by request through its OpenAI endpoint
(what a LangChain app does today: the client waits for each answer to build the next prompt).

Two apps: a chain of 8 steps, and a map-reduce with 16 maps and one reduce. Both modes send
identical prompts (greedy), so they compute the same tokens; the prefix cache is flushed before
each run (the server's `/flush_cache`), and the order of the modes alternates. `--rtt-ms` adds a simulated
client<->server round trip to every HTTP request of both modes (the paper's setting: the
client is an app server some milliseconds away).

    python benchmarks/servecore.py --quick            # starts `parrot serve`, < 2 min on 2 cores
    python benchmarks/servecore.py --rtt-ms 50        # with a simulated 50 ms round trip
    python benchmarks/servecore.py --url http://127.0.0.1:8000   # against a running server
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from functools import partial

import httpx
from processes import parrot_serve

API = "/api/v1"

CHAIN_TEMPLATE = (
    "You are writing a story one sentence at a time.\n"
    "Story so far: {{input:story}}\n"
    "Next sentence: {{output:next}}"
)
MAP_TEMPLATE = (
    "Summarize the note in a few words.\nNote: {{input:note}}\nSummary: {{output:summary}}"
)


def fill(template: str, **values: str) -> str:
    """The prompt the native mode's server renders, rendered on the client for the baseline."""
    text = template
    for name, value in values.items():
        text = text.replace(f"{{{{input:{name}}}}}", value)
    return text[: text.index("{{output:")]


def reduce_template(n: int) -> str:
    notes = "\n".join(f"- {{{{input:s{k}}}}}" for k in range(n))
    return f"Combine these summaries into one sentence.\n{notes}\nCombined: {{{{output:final}}}}"


class Client:
    """httpx with a simulated round trip before each request."""

    def __init__(self, url: str, rtt: float) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=600)
        self.rtt = rtt
        self.requests = 0
        self.session: str | None = None  # native mode: opened before the clock starts

    async def post(self, path: str, body: dict) -> dict:
        return (await self._send("POST", path, json=body)).json()

    async def get(self, path: str, **params) -> dict:
        return (await self._send("GET", path, params=params)).json()

    async def _send(self, method: str, path: str, **kw) -> httpx.Response:
        self.requests += 1
        if self.rtt:
            await asyncio.sleep(self.rtt)
        resp = await self.http.request(method, path, **kw)
        resp.raise_for_status()
        return resp


# -- the request-by-request baseline (OpenAI /v1/completions) --------------------------------------
async def complete(c: Client, prompt: str, max_tokens: int) -> str:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    return (await c.post("/v1/completions", body))["choices"][0]["text"]


async def chain_openai(c: Client, seed: str, steps: int, max_tokens: int) -> str:
    story = seed
    for _ in range(steps):
        story = await complete(c, fill(CHAIN_TEMPLATE, story=story), max_tokens)
    return story


async def map_reduce_openai(c: Client, notes: list[str], max_tokens: int) -> str:
    summaries = await asyncio.gather(
        *(complete(c, fill(MAP_TEMPLATE, note=n), max_tokens) for n in notes)
    )
    values = {f"s{k}": s for k, s in enumerate(summaries)}
    return await complete(c, fill(reduce_template(len(notes)), **values), max_tokens)


# -- Parrot native: one program, one result fetch ---------------------------------------------------
def output(var: str, max_tokens: int, criteria: str | None = None) -> dict:
    out = {"var": var, "sampling": {"max_tokens": max_tokens, "temperature": 0}}
    return out | ({"criteria": criteria} if criteria else {})


async def run_program(c: Client, variables: list[dict], calls: list[dict], final: str) -> str:
    """One submit and one result fetch. The session is the app's, opened once beforehand (an
    app keeps it for many runs), so it is not on this run's critical path."""
    sid = c.session
    await c.post(f"{API}/sessions/{sid}/programs", {"variables": variables, "calls": calls})
    state = await c.get(f"{API}/sessions/{sid}/variables/{final}", criteria="latency", timeout=600)
    assert state["status"] == "ready", state
    return state["value"]


async def chain_native(c: Client, seed: str, steps: int, max_tokens: int) -> str:
    calls = [
        {
            "template": CHAIN_TEMPLATE,
            "inputs": {"story": f"v{k}"},
            "outputs": {"next": output(f"v{k + 1}", max_tokens)},
        }
        for k in range(steps)
    ]
    return await run_program(c, [{"id": "v0", "value": seed}], calls, f"v{steps}")


async def map_reduce_native(c: Client, notes: list[str], max_tokens: int) -> str:
    variables = [{"id": f"note{k}", "value": n} for k, n in enumerate(notes)]
    calls = [
        {
            "template": MAP_TEMPLATE,
            "inputs": {"note": f"note{k}"},
            "outputs": {"summary": output(f"s{k}", max_tokens)},
        }
        for k in range(len(notes))
    ]
    calls.append(
        {
            "template": reduce_template(len(notes)),
            "inputs": {f"s{k}": f"s{k}" for k in range(len(notes))},
            "outputs": {"final": output("final", max_tokens, "latency")},
        }
    )
    return await run_program(c, variables, calls, "final")


# -- driver ---------------------------------------------------------------------------------------
async def measure(url: str, args) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for rep in range(args.reps + 1):  # repetition 0 warms up (caches the static prefixes)
        salt = uuid.uuid4().hex[:6]
        seed = f"Once upon a time ({salt}) a parrot learned to count."
        notes = [f"Note {k} ({salt}): item {k} costs {k * 3} coins." for k in range(args.maps)]
        cases = {
            "chain": (
                partial(chain_native, seed=seed, steps=args.steps, max_tokens=args.max_tokens),
                partial(chain_openai, seed=seed, steps=args.steps, max_tokens=args.max_tokens),
            ),
            "map-reduce": (
                partial(map_reduce_native, notes=notes, max_tokens=args.max_tokens),
                partial(map_reduce_openai, notes=notes, max_tokens=args.max_tokens),
            ),
        }
        for name, (native, baseline) in cases.items():
            results = {}
            modes = [("native", native), ("openai", baseline)]
            for mode, fn in modes if rep % 2 else modes[::-1]:
                # Both modes send the same prompts: without a flush the second would find the
                # first one's prompts in the prefix cache.
                httpx.post(url + "/flush_cache", timeout=30).raise_for_status()
                c = Client(url, args.rtt_ms / 1000)
                if mode == "native":
                    c.session = (await c.http.post(f"{API}/sessions", json={})).json()["session_id"]
                t0 = time.perf_counter()
                results[mode] = await fn(c)
                elapsed = time.perf_counter() - t0
                if c.session:
                    await c.http.delete(f"{API}/sessions/{c.session}")
                await c.http.aclose()
                if rep:
                    times.setdefault(f"{name} {mode}", []).append(elapsed)
                    times.setdefault(f"{name} {mode} requests", []).append(c.requests)
            if results["native"] != results["openai"]:
                print(f"note: {name} outputs differ between modes (rep {rep})")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, short outputs")
    ap.add_argument("--url", default=os.environ.get("PARROT_BENCH_URL"), help="running server")
    ap.add_argument("--rtt-ms", type=float, default=0.0, help="simulated round trip per request")
    ap.add_argument("--steps", type=int, default=8, help="chain length")
    ap.add_argument("--maps", type=int, default=16, help="map calls feeding the reduce")
    ap.add_argument("--max-tokens", type=int, default=None, help="tokens per call")
    ap.add_argument("--reps", type=int, default=None, help="measured repetitions (median)")
    args = ap.parse_args()
    args.max_tokens = args.max_tokens or (12 if args.quick else 32)
    args.reps = args.reps or (3 if args.quick else 5)
    if args.url is not None:
        times = asyncio.run(measure(args.url, args))
    else:
        with parrot_serve("--log-level", "warning") as server:
            times = asyncio.run(measure(server.url, args))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"rtt {args.rtt_ms:.0f} ms, {args.max_tokens} tokens per call, median of {args.reps}")
    for app in ("chain", "map-reduce"):
        n, o = med[f"{app} native"], med[f"{app} openai"]
        print(
            f"{app:10s} native {n:6.2f} s ({med[f'{app} native requests']:.0f} requests)  "
            f"openai {o:6.2f} s ({med[f'{app} openai requests']:.0f} requests)  "
            f"speedup {o / n:.2f}x"
        )


if __name__ == "__main__":
    main()

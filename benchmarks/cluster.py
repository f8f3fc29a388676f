"""Placement benchmark: one ServeCore over 2 engine processes (`parrot serve --engines 2`),
a multi-app workload whose apps each have a long system prompt, under each placement policy:
app-aware (prefix affinity), round-robin, least-loaded. The same requests (seeded Poisson
arrivals, greedy, `ignore_eos`, so every policy computes the same number of tokens) go to a
fresh server per policy and run.

Reported per policy and rate: completed requests/s, median and p90 normalized latency (request
latency / output tokens, the paper's per-token latency), and the cached-token hit rate (prompt
tokens served from the engines' radix caches / all prompt tokens). The KV pool is smaller than
all apps' prompts together, as on a busy server: an engine that gets every app thrashes its
cache; affinity keeps each app's prompt on one engine. `--slo` reports, per policy, the highest
swept rate whose median normalized latency stays within the SLO.

    python benchmarks/cluster.py --quick            # one rate, one run per policy, ~5 min
    python benchmarks/cluster.py --rates 0.5 1 1.5 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time

import httpx
from processes import parrot_serve

POLICIES = ["app-aware", "round-robin", "least-loaded"]
FACTS = [
    "the museum opens at nine", "tickets cost twelve euros", "the cafe serves soup",
    "guided tours start every hour", "the garden closes at dusk", "dogs are welcome outside",
    "the library lends maps", "parking is free on Sundays", "the tower has 210 steps",
]  # fmt: skip
QUESTIONS = [
    "When can I visit?", "What does it cost?", "Is there food?", "Can I bring my dog?",
    "Where do I park?", "How high is the tower?",
]  # fmt: skip


def system_prompt(app: int, words: int) -> str:
    """A distinct, long system prompt per app (different from its first token on)."""
    rng = random.Random(app)
    facts = [rng.choice(FACTS) for _ in range(words // 5)]
    return f"You are assistant number {app} of the city guide. " + ". ".join(facts) + "."


def workload(apps: int, requests: int, rate: float, words: int, seed: int = 0):
    """(arrival time s, app, messages) for every request: Poisson arrivals, apps at random."""
    rng = random.Random(seed)
    t, out = 0.0, []
    systems = [system_prompt(a, words) for a in range(apps)]
    for _ in range(requests):
        t += rng.expovariate(rate)
        app = rng.randrange(apps)
        msgs = [
            {"role": "system", "content": systems[app]},
            {"role": "user", "content": rng.choice(QUESTIONS)},
        ]
        out.append((t, app, msgs))
    return out


async def run_workload(url: str, work, max_tokens: int, sessions: list[str]) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        start = time.monotonic()

        async def one(at: float, app: int, msgs) -> tuple[float, int, int, int]:
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            t0 = time.monotonic()
            body = {
                "messages": msgs,
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
                "session_id": sessions[app],
            }
            r = await http.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            u = r.json()["usage"]
            cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            return time.monotonic() - t0, u["completion_tokens"], u["prompt_tokens"], cached

        results = await asyncio.gather(*(one(*w) for w in work))
        wall = time.monotonic() - start
    norm = sorted(lat / max(1, n) for lat, n, _, _ in results)
    return {
        "req_per_s": len(results) / wall,
        "norm_p50": statistics.median(norm),
        "norm_p90": norm[int(0.9 * (len(norm) - 1))],
        "hit_rate": sum(c for *_, c in results) / max(1, sum(p for *_, p, _ in results)),
    }


def measure(policy: str, rate: float, args) -> dict:
    flags = [
        "--engines", "2", "--placement", policy, "--kv-pool-tokens", str(args.kv_pool_tokens),
        "--max-context-len", "2048", "--log-level", "warning",
    ]  # fmt: skip
    with parrot_serve(*flags, engines=2) as server:
        url = server.url
        sessions = [
            httpx.post(url + "/api/v1/sessions", json={}).json()["session_id"]
            for _ in range(args.apps)
        ]
        work = workload(args.apps, args.requests, rate, args.prompt_words)
        return asyncio.run(run_workload(url, work, args.max_tokens, sessions))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one rate, one run, 32 requests")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.4, 0.8, 1.2], help="req/s")
    ap.add_argument("--runs", type=int, default=3, help="runs per point; medians reported")
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--apps", type=int, default=8)
    ap.add_argument("--prompt-words", type=int, default=300, help="system prompt size per app")
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--kv-pool-tokens", type=int, default=3072, help="per engine")
    ap.add_argument("--slo", type=float, default=None, help="normalized latency SLO, s/token")
    args = ap.parse_args()
    if args.quick:
        args.rates, args.runs, args.requests = [args.rates[1]], 1, 32
    print(f"cpu cores {os.cpu_count()}, {args.apps} apps, {args.requests} requests, "
          f"kv pool {args.kv_pool_tokens}/engine, {args.runs} run(s) per point")  # fmt: skip
    table: dict[tuple[str, float], dict] = {}
    for rate in args.rates:
        for policy in POLICIES:
            runs = [measure(policy, rate, args) for _ in range(args.runs)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            table[policy, rate] = med
            print(
                f"rate {rate:4.2f}  {policy:13s} {med['req_per_s']:5.2f} req/s  "
                f"norm latency p50 {med['norm_p50']:.3f} p90 {med['norm_p90']:.3f} s/tok  "
                f"hit rate {med['hit_rate']:.2f}",
                flush=True,
            )
        base = table["app-aware", rate]
        for policy in POLICIES[1:]:
            other = table[policy, rate]
            print(
                f"rate {rate:4.2f}  app-aware vs {policy}: norm latency p50 "
                f"{other['norm_p50'] / base['norm_p50']:.2f}x lower, hit rate "
                f"{base['hit_rate']:.2f} vs {other['hit_rate']:.2f}"
            )
    if args.slo is not None:
        for policy in POLICIES:
            ok = [r for r in args.rates if table[policy, r]["norm_p50"] <= args.slo]
            print(f"max rate within {args.slo} s/tok: {policy}: {max(ok) if ok else 'none'}")


if __name__ == "__main__":
    main()

"""Many engines behind one ServeCore, end to end: `parrot serve --engines 2` (two real
`parrot engine` processes on SGLang's protocol) on 127.0.0.1. Prefix-affinity placement is seen
in the engines' own cached-token counts; a SIGKILLed engine loses no work and is restarted,
again and again; the engines die with a SIGKILLed server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

import httpx
import pytest

from parrot_integrations import ParrotClient, semantic_function
from parrot_integrations.protocol.openai import ChatCompletionRequest

pytestmark = pytest.mark.slow

SYSTEM = (
    "You are the help desk of the Lighthouse Museum. The museum opens at nine and closes at "
    "five, every day but Monday. Tickets cost twelve euros, children under ten enter free. "
) * 12  # ~500 tokens: long enough that where it is cached shows clearly


ENGINE_KEY = "engine-key-for-tests-only"
ENGINE_AUTH = {"Authorization": f"Bearer {ENGINE_KEY}"}
CLUSTER = [
    "serve", "--engines", "2", "--kv-pool-tokens", "8192", "--max-context-len", "2048",
    "--health-interval", "0.5", "--log-level", "warning", "--engine-api-key", ENGINE_KEY,
    # Requests resumed on the other engine must give the text they would have: fp32 GEMMs, whose
    # results do not depend on how a text was split into steps (bf16 ones can flip near-ties).
    "--gemm-dtype", "float32",
]  # fmt: skip


def _health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=5).json()


def _wait_for(check, timeout: float, what: str):
    """Poll `check` until it returns something true (returned), failing after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(0.1)
    return got


def _start_cluster(parrot_process, name: str):
    serve = parrot_process(CLUSTER, name).wait_healthy(240)  # healthy: one engine registered
    _wait_for(lambda: _health(serve.url)["status"] == "ok", 120, "second engine registered")
    return serve


@pytest.fixture(scope="module")
def cluster(parrot_process):
    """`parrot serve --engines 2`; yields (url, serve process)."""
    serve = _start_cluster(parrot_process, "cluster")
    yield serve.url, serve.proc
    serve.stop(grace=60)
    # The engines are stopped by the ServeCore on its way out: none may be left behind.
    assert not _children(serve.proc.pid), "engine processes outlived parrot serve"


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def _engine_stats(engine_url: str) -> dict:
    info = httpx.get(f"{engine_url}/server_info", headers=ENGINE_AUTH, timeout=5).json()
    return info["internal_states"][0]


def test_health_lists_both_engines(cluster):
    url, proc = cluster
    h = _health(url)
    assert h["status"] == "ok"
    assert [e["healthy"] for e in h["engines"]] == [True, True]
    assert all(e["name"].startswith("http://127.0.0.1:") for e in h["engines"])
    assert sorted(e["pid"] for e in h["engines"]) == sorted(_children(proc.pid))
    for e in h["engines"]:  # the engines the server starts answer only to their key
        free = httpx.post(f"{e['name']}/generate", json={"text": "x"}, timeout=5)
        assert free.status_code == 401
        assert httpx.get(f"{e['name']}/get_load", headers=ENGINE_AUTH, timeout=5).status_code == 200


def test_apps_sharing_a_system_prompt_land_on_the_engine_holding_it(cluster):
    url, _ = cluster
    engines = [e["name"] for e in _health(url)["engines"]]
    before = {e: _engine_stats(e)["cached_prompt_tokens_total"] for e in engines}
    cached = []
    with ParrotClient(url) as client:
        sessions = [client.create_session() for _ in range(2)]  # two apps
        for k, question in enumerate(["When do you open?", "How much is a ticket?"] * 2):
            r = client.chat_completion(
                ChatCompletionRequest(
                    messages=[
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": question},
                    ],
                    max_tokens=2,
                    temperature=0,
                    session_id=sessions[k % 2].session_id,
                )
            )
            cached.append(r.usage.prompt_tokens_details.cached_tokens)
        system_tokens = r.usage.prompt_tokens - 20
    # The first request computed the system prompt; every later one, of either app, found it.
    assert all(c >= system_tokens for c in cached[1:]), cached
    gained = {e: _engine_stats(e)["cached_prompt_tokens_total"] - before[e] for e in engines}
    holder = max(gained, key=gained.get)
    assert gained[holder] >= 3 * system_tokens, gained
    assert all(g < system_tokens for e, g in gained.items() if e != holder), gained


@semantic_function(max_tokens=16, temperature=0.0, ignore_eos=True)
def fact(topic):
    """One fact about {{input:topic}}: {{output:fact}}"""


@semantic_function(max_tokens=16, temperature=0.0, ignore_eos=True)
def rephrase(text):
    """Say it again in other words: {{input:text}}
    Again: {{output:again}}"""


TOPICS = [f"{thing} number {n}" for n, thing in enumerate(["the sea", "a lamp", "bread"] * 7)][:20]


def _run_programs(url: str, on_running=None) -> list[str]:
    with ParrotClient(url) as client, client.session() as s:
        outs = []
        for topic in TOPICS:  # 20 programs, each a chain of two calls
            with s.program() as p:
                outs.append(rephrase(p, text=fact(p, topic=topic)))
        if on_running is not None:
            on_running()
        return [o.get(timeout=300) for o in outs]


def test_sigkilled_engine_loses_no_work(cluster):
    url, proc = cluster
    reference = _run_programs(url)
    assert len(set(reference)) > 1

    killed: list[int] = []

    def kill_busy_engine() -> None:
        # Wait until both engines hold requests, then SIGKILL one of them mid-generation.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = [e["running_requests"] for e in _health(url)["engines"]]
            if min(running) > 0:
                break
            time.sleep(0.05)
        pid = _children(proc.pid)[0]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    def start_killer() -> None:
        threading.Thread(target=kill_busy_engine, daemon=True).start()

    again = _run_programs(url, on_running=start_killer)
    assert killed, "no engine was killed"
    assert again == reference  # greedy: the resumed calls finish exactly as without the kill
    # The supervisor restarts the engine; its health check re-registers it.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all(e["healthy"] for e in _health(url)["engines"]):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"killed engine did not come back: {_health(url)}")
    assert killed[0] not in _children(proc.pid)


def test_unresponsive_engine_is_taken_out_and_comes_back(cluster):
    """SIGSTOP: the engine's sockets stay open but nothing answers. Health checks take it out of
    rotation, its requests resume on the other engine, and after SIGCONT it re-registers."""
    url, proc = cluster
    reference = _run_programs(url)
    stopped: list[int] = []

    def freeze_busy_engine() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if min(e["running_requests"] for e in _health(url)["engines"]) > 0:
                break
            time.sleep(0.05)
        pid = _children(proc.pid)[-1]
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)

    try:
        again = _run_programs(
            url, on_running=lambda: threading.Thread(target=freeze_busy_engine).start()
        )
        assert stopped, "no engine was stopped"
        assert again == reference
        assert sum(e["healthy"] for e in _health(url)["engines"]) == 1
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 60
    while not all(e["healthy"] for e in _health(url)["engines"]):
        assert time.monotonic() < deadline, f"engine did not re-register: {_health(url)}"
        time.sleep(0.5)


def test_serve_attaches_a_running_engine_by_url(parrot_process):
    """`parrot serve --engine-url URL`: no embedded engine; calls go to the attached engine."""
    engine = parrot_process(
        [
            "engine",
            "--kv-pool-tokens",
            "4096",
            "--max-context-len",
            "2048",
            "--api-key",
            ENGINE_KEY,
        ],
        "attached",
    ).wait_healthy()
    front = parrot_process(
        ["serve", "--engine-url", engine.url, "--health-interval", "0.5",
         "--engine-api-key", ENGINE_KEY],
        "front",
    ).wait_healthy()  # fmt: skip
    h = _health(front.url)
    assert [(e["name"], e["healthy"]) for e in h["engines"]] == [(engine.url, True)]
    before = _engine_stats(engine.url)["generated_tokens_total"]
    with ParrotClient(front.url) as client, client.session() as s:
        assert fact(s, topic="the moon").get(timeout=120)
    assert _engine_stats(engine.url)["generated_tokens_total"] - before == 16  # ignore_eos
    # The front counts the tokens its engines answered, under the model's name.
    counted = 'parrot_generated_tokens_total{model_name="SmolLM2-135M-Instruct"} 16.0'
    assert counted in httpx.get(f"{front.url}/metrics").text.splitlines()
    # The front has no engine of its own, so it serves no SGLang /generate route.
    assert httpx.post(f"{front.url}/generate", json={"text": "x"}).status_code == 404
    front.stop()
    assert engine.proc.poll() is None  # attached engines are not the front's to stop


def _complete(url: str) -> str:
    body = {"prompt": "The lighthouse", "max_tokens": 2, "temperature": 0}
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_engine_killed_again_and_again_is_restarted_each_time(cluster):
    """Each restart waits longer (backoff), and every one happens; the other engine serves
    meanwhile and `/health` says the pool is degraded, not down."""
    url, _ = cluster
    engine = _health(url)["engines"][0]
    name, pid, restarts = engine["name"], engine["pid"], engine["restarts"]
    for k in range(1, 4):
        os.kill(pid, signal.SIGKILL)
        # Observable: the restart waits its backoff, then the model loads.
        _wait_for(lambda: _health(url)["status"] == "degraded", 30, f"degraded after kill {k}")
        assert _complete(url)

        def back(old=pid):
            h = _health(url)
            e = h["engines"][0]
            return h["status"] == "ok" and e["pid"] not in (None, old) and e

        engine = _wait_for(back, 120, f"engine restarted after kill {k}")
        assert engine["name"] == name and engine["restarts"] == restarts + k
        pid = engine["pid"]
    assert _complete(url)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has ended: only its exit status waits to be collected


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As a server binds: connections closed a moment ago (TIME_WAIT) do not hold the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_engines_die_with_a_sigkilled_server(parrot_process):
    serve = _start_cluster(parrot_process, "orphans")
    engines = _health(serve.url)["engines"]
    pids = [e["pid"] for e in engines]
    ports = [int(e["name"].rsplit(":", 1)[1]) for e in engines]
    assert all(_alive(p) for p in pids) and not any(_port_free(p) for p in ports)
    serve.proc.kill()
    serve.proc.wait(10)
    try:
        _wait_for(
            lambda: not any(_alive(p) for p in pids) and all(_port_free(p) for p in ports),
            20,
            "engines gone and their ports free",
        )
    finally:
        for pid in pids:  # never leave a survivor behind, whatever the outcome
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_engine_stops_gracefully_when_its_parents_pipe_closes(parrot_process):
    """The portable path (without Linux's parent-death signal): EOF on the engine's stdin means
    its parent is gone. Here the parent, this test's process, lives on: only the pipe tells."""
    read_end, write_end = os.pipe()
    engine = parrot_process(
        ["engine", "--kv-pool-tokens", "4096", "--max-context-len", "2048",
         "--log-level", "warning", "--parent-pid", str(os.getpid())],
        "piped",
        stdin=read_end,
    )  # fmt: skip
    os.close(read_end)
    try:
        engine.wait_healthy()
    finally:
        os.close(write_end)
    # Killed by its own SIGTERM after a graceful stop (a hard exit would be status 1).
    assert engine.proc.wait(20) == -signal.SIGTERM
    assert "is gone: stopping" in engine.log.read_text()

"""API keys and tenants against a real `parrot serve` on loopback: every route but /health needs
a key, operator routes need the admin key, tenants never see each other's sessions, requests
or cached prefixes (unless the operator gives them one cache namespace), quotas answer 429,
and `/generate` stops when its client leaves."""

from __future__ import annotations

import time

import httpx
import pytest

from parrot_server.core.tenants import KeyTable, TenantConfigError

pytestmark = pytest.mark.slow

ADMIN = "admin-key-0123456789"
KEYS = {
    "alice": "alice-key-0123456789",
    "bob": "bob-key-0123456789ab",
    "carol": "carol-key-0123456789",  # carol and dave share one cache namespace
    "dave": "dave-key-0123456789a",
    "tiny": "tiny-key-0123456789a",  # small quotas
}
TENANTS = f"""
[tenants.alice]
keys = ["{KEYS["alice"]}"]
[tenants.bob]
keys = ["{KEYS["bob"]}"]
[tenants.carol]
keys = ["{KEYS["carol"]}"]
cache = "public"
[tenants.dave]
keys = ["{KEYS["dave"]}"]
cache = "public"
[tenants.tiny]
keys = ["{KEYS["tiny"]}"]
max_sessions = 2
max_pending = 1
"""
# A prompt that reads like a private record: what a cache-timing probe would guess at.
RECORD = "Patient record 4471: Jane Roe, born 1961, diagnosis: " + "confidential. " * 40


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN if who == 'admin' else KEYS[who]}"}


@pytest.fixture(scope="module")
def server(parrot_process, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tenants") / "tenants.toml"
    path.write_text(TENANTS)
    flags = ["--tenants", str(path), "--admin-key", ADMIN, "--kv-pool-tokens", "8192",
             "--max-context-len", "2048", "--log-level", "warning"]  # fmt: skip
    return parrot_process(["serve", *flags], "tenants").wait_healthy().url


def test_every_route_but_health_needs_a_key(server):
    doc = httpx.get(f"{server}/openapi.json", headers=auth("admin"), timeout=10).json()
    routes = [(m, p) for p, ops in doc["paths"].items() for m in ops] + [
        ("get", "/openapi.json"),
        ("get", "/docs"),
    ]
    assert len(routes) > 20
    for method, path in routes:
        concrete = path.replace("{", "x").replace("}", "")
        r = httpx.request(method.upper(), f"{server}{concrete}", timeout=10)
        assert r.status_code == (200 if path == "/health" else 401), (method, path, r.text)
    wrong = httpx.get(f"{server}/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"


def test_operator_routes_need_the_admin_key(server):
    for method, path in [("POST", "/flush_cache"), ("GET", "/metrics"),
                         ("GET", "/server_info"), ("GET", "/get_load")]:  # fmt: skip
        r = httpx.request(method, f"{server}{path}", headers=auth("alice"), timeout=30)
        assert r.status_code == 403 and "admin key" in r.json()["error"]["message"], path
        assert httpx.request(method, f"{server}{path}", headers=auth("admin")).status_code == 200
    assert httpx.get(f"{server}/v1/models", headers=auth("alice")).status_code == 200


def test_a_tenant_cannot_touch_another_tenants_session(server):
    api = f"{server}/api/v1/sessions"
    sid = httpx.post(api, json={}, headers=auth("alice")).json()["session_id"]
    var = {"id": "secret", "value": "the launch code is 0000"}
    assert httpx.post(f"{api}/{sid}/variables", json=var, headers=auth("alice")).status_code == 201
    attempts = [
        ("GET", f"{api}/{sid}", None),
        ("GET", f"{api}/{sid}/variables/secret", None),
        ("GET", f"{api}/{sid}/variables/secret/stream", None),
        ("PUT", f"{api}/{sid}/variables/secret", {"value": "x"}),
        ("POST", f"{api}/{sid}/variables", {"id": "mine"}),
        (
            "POST",
            f"{api}/{sid}/calls",
            {"template": "{{output:o}}", "outputs": {"o": {"var": "o"}}},
        ),  # noqa: E501
        ("DELETE", f"{api}/{sid}/calls/c0", None),
        ("DELETE", f"{api}/{sid}", None),
    ]
    missing = httpx.get(f"{api}/{'0' * 32}", headers=auth("bob")).json()
    for method, url, body in attempts:
        r = httpx.request(method, url, json=body, headers=auth("bob"), timeout=10)
        assert r.status_code == 404, (method, url, r.text)
        # Told apart from a session that does not exist by nothing but its id.
        assert r.json()["error"]["message"].replace(sid, "0" * 32) == missing["error"]["message"]
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "session_id": sid}
    r = httpx.post(f"{server}/v1/chat/completions", json=chat, headers=auth("bob"), timeout=60)
    assert r.status_code == 404
    # Untouched for its owner.
    state = httpx.get(f"{api}/{sid}/variables/secret", headers=auth("alice")).json()
    assert state["value"] == "the launch code is 0000"
    assert httpx.delete(f"{api}/{sid}", headers=auth("alice")).status_code == 204


def _cached(server: str, who: str, prompt: str) -> int:
    body = {"prompt": prompt, "max_tokens": 1, "temperature": 0}
    r = httpx.post(f"{server}/v1/completions", json=body, headers=auth(who), timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]


def test_cached_prefixes_are_per_tenant_unless_shared(server):
    httpx.post(f"{server}/flush_cache", headers=auth("admin"), timeout=30)
    assert _cached(server, "alice", RECORD) == 0
    assert _cached(server, "alice", RECORD) > 0  # alice's own prefix is cached for her
    assert _cached(server, "carol", RECORD) == 0  # others cannot probe it
    # Nor through /generate, whatever `extra_key` they pick.
    for extra in ("tenant:alice", '["tenant:alice", null]', None):
        body = {"text": RECORD, "sampling_params": {"max_new_tokens": 1}, "extra_key": extra}
        r = httpx.post(f"{server}/generate", json=body, headers=auth("bob"), timeout=120)
        assert r.status_code == 200 and r.json()["meta_info"]["cached_tokens"] == 0, extra
    # carol and dave were given one namespace by the operator: a public system prompt.
    public = "You are the museum's help desk. " * 20
    assert _cached(server, "carol", public) == 0
    assert _cached(server, "dave", public) > 0


def test_a_tenant_aborts_only_its_own_requests(server):
    body = {"text": "Count to a thousand:", "stream": True,
            "sampling_params": {"max_new_tokens": 400, "ignore_eos": True}}  # fmt: skip
    url = f"{server}/generate"
    with httpx.stream("POST", url, json=body, headers=auth("alice"), timeout=120) as stream:
        events = stream.iter_lines()
        assert next(e for e in events if e.startswith("data: {"))
        r = httpx.post(f"{server}/abort_request", json={"abort_all": True}, headers=auth("bob"))
        assert r.status_code == 200 and r.json() == {"aborted": []}
        assert next(e for e in events if e.startswith("data: {"))  # still generating
        r = httpx.post(f"{server}/abort_request", json={"abort_all": True}, headers=auth("alice"))
        assert len(r.json()["aborted"]) == 1
        last = [e for e in events if e.startswith("data: {")][-1]
        assert '"abort"' in last


def _running(server: str) -> int:
    return httpx.get(f"{server}/get_load", headers=auth("admin"), timeout=10).json()[0]["num_reqs"]


def _wait_idle(server: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _running(server):
        assert time.monotonic() < deadline, "the request kept running for nobody"
        time.sleep(0.2)


def test_generate_stops_when_its_client_leaves(server):
    body = {"text": "Tell a long story.", "sampling_params": {"max_new_tokens": 1500,
            "ignore_eos": True}}  # fmt: skip
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server}/generate", json=body, headers=auth("alice"), timeout=2)
    _wait_idle(server)
    streamed = body | {"stream": True}
    with httpx.stream(
        "POST", f"{server}/generate", json=streamed, headers=auth("alice"), timeout=60
    ) as s:
        lines = s.iter_lines()
        first = next(e for e in lines if e.startswith("data: {"))
        assert '"output_ids"' in first
        n = _running(server)
        assert n == 1, [first, *lines][-3:]
    _wait_idle(server)


def test_generate_fields_are_bounded(server):
    url = f"{server}/generate"
    for sampling in ({"max_new_tokens": 2**70}, {"stop": ["x"] * 17}, {"stop": ["x" * 513]},
                     {"stop_token_ids": list(range(257))}):  # fmt: skip
        body = {"text": "hi", "sampling_params": sampling}
        r = httpx.post(url, json=body, headers=auth("alice"), timeout=30)
        assert r.status_code == 400, (sampling, r.text)


def test_quotas_answer_429(server):
    api = f"{server}/api/v1/sessions"
    tiny = auth("tiny")
    sids = [httpx.post(api, json={}, headers=tiny).json()["session_id"] for _ in range(2)]
    third = httpx.post(api, json={}, headers=tiny)
    assert third.status_code == 429 and "at most 2 sessions" in third.json()["error"]["message"]
    assert httpx.post(api, json={}, headers=auth("bob")).status_code == 201  # others unaffected

    def call(var: str) -> dict:
        out = {"var": var, "sampling": {"max_tokens": 4}}
        return {"template": "Say hi. {{output:o}}", "outputs": {"o": out}}

    two = {"calls": [call("o"), call("p")]}
    r = httpx.post(f"{api}/{sids[0]}/programs", json=two, headers=tiny)
    assert r.status_code == 429 and "at most 1" in r.json()["error"]["message"]
    for sid in sids:
        httpx.delete(f"{api}/{sid}", headers=tiny)


def test_bad_tenant_files_are_refused(tmp_path):
    path = tmp_path / "t.toml"
    for text, why in [
        ('[tenants.a]\nkeys = ["short"]', "at least 16"),
        ('[tenants."a b"]\nkeys = ["0123456789abcdef"]', "names are"),
        ('[tenants.a]\nkeys = ["0123456789abcdef"]\nmax_sessions = 0', "max_sessions"),
        ('[tenants.a]\nkeys = ["0123456789abcdef"]\nquota = 1', "unknown keys"),
        ('[tenants.a]\nkeys = ["0123456789abcdef"]\n[tenants.b]\nkeys = ["0123456789abcdef"]',
         "twice"),
        ("x = 1", r"no \[tenants\.NAME\]"),
    ]:  # fmt: skip
        path.write_text(text)
        with pytest.raises(TenantConfigError, match=why):
            KeyTable.build(tenants_file=path)

"""Client SDK tests that need no Parrot server.

HTTP behaviour (error mapping, retries, timeouts, waits, streams, what a program sends) is
checked against a real HTTP server on 127.0.0.1 (`http.server` in a thread) that answers from
a per-test script and records every request it receives; nothing of the SDK is mocked. The
script's successful answers take their status from the real server's routes and their bodies
from the protocol's response models, so they cannot drift from what the server sends.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from parrot_integrations import (
    APIConnectionError,
    APITimeoutError,
    AsyncParrotClient,
    AuthenticationError,
    ConflictError,
    Criteria,
    GetTimeoutError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    ParrotClient,
    ParrotError,
    SamplingOptions,
    SemanticFunction,
    SemanticVariable,
    ServerError,
    VariableFailedError,
    semantic_function,
)
from parrot_integrations._http import RetryPolicy, normalize_base_url, retry_after
from parrot_integrations.protocol.native import (
    CallInfo,
    ProgramAccepted,
    SessionInfo,
    VariableChunk,
    VariableState,
)
from parrot_server.http.native_routes import router as native_router

P = "/api/v1/sessions"


def real_status(method: str, path: str) -> int:
    """The status the real server's native route for `method path` answers a success with."""
    for route in native_router.routes:
        if method in route.methods and route.path_regex.match(path):
            return route.status_code or 200
    raise AssertionError(f"the server has no route {method} {path}")


# -- a scripted HTTP server ---------------------------------------------------------------------
@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    sse: list[str] | None = None  # `data:` payloads of a text/event-stream answer


def err(status: int, kind: str, message: str, param: str | None = None) -> Reply:
    return Reply(
        status, {"error": {"message": message, "type": kind, "param": param, "code": status}}
    )


def session_info(sid: str = "S1") -> Reply:
    info = SessionInfo(
        session_id=sid, ttl_seconds=600.0, expires_in=600.0, variables=0, calls=0, calls_running=0
    )
    return Reply(real_status("POST", P), info.model_dump(mode="json"))


def call_info(call: dict[str, Any]) -> CallInfo:
    outputs = {name: b["var"] for name, b in call["outputs"].items()}
    return CallInfo(id=call.get("id") or "c0", status="waiting", outputs=outputs)


def native(req: Seen) -> Reply:
    """Happy-path answers of the native API, for the parts a test does not script."""
    if req.method == "POST" and req.path == P:
        return session_info()
    status = real_status(req.method, req.path)
    if req.method == "DELETE" and req.path.count("/") == 4:
        return Reply(status)
    if req.method == "POST" and req.path.endswith("/programs"):
        calls = [call_info(c) for c in req.body.get("calls", [])]
        variables = [v["id"] for v in req.body.get("variables", [])]
        accepted = ProgramAccepted(session_id="S1", calls=calls, variables=variables)
        return Reply(status, accepted.model_dump(mode="json"))
    if req.method == "POST" and req.path.endswith("/calls"):
        return Reply(status, call_info(req.body).model_dump(mode="json"))
    if req.method == "POST" and req.path.endswith("/variables"):
        value = req.body.get("value")
        state = VariableState(
            id=req.body["id"], status="pending" if value is None else "ready", value=value
        )
        return Reply(status, state.model_dump(mode="json"))
    return err(404, "not_found_error", f"no route {req.method} {req.path}")


class Stub:
    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.respond: Callable[[Seen], Reply] = native
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                seen = Seen(
                    self.command,
                    url.path,
                    dict(parse_qsl(url.query)),
                    {k.lower(): v for k, v in self.headers.items()},
                    json.loads(raw) if raw else None,
                )
                stub.requests.append(seen)
                reply = stub.respond(seen)
                time.sleep(reply.delay)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.sse is not None:
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    for data in reply.sse:
                        self.wfile.write(f"data: {data}\n\n".encode())
                        self.wfile.flush()
                    return
                payload = (
                    json.dumps(reply.json).encode()
                    if reply.json is not None
                    else (reply.text or "").encode()
                )
                ctype = "application/json" if reply.json is not None else "text/plain"
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval: shutdown() waits for it at each test's teardown.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def seen(self, method: str | None = None, suffix: str = "") -> list[Seen]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and r.path.endswith(suffix)
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


@pytest.fixture
def client(stub):
    with ParrotClient(stub.url, timeout=5, backoff_base=0.01) as c:
        yield c


def sequence(*replies: Reply) -> Callable[[Seen], Reply]:
    """Answer with `replies` in order, then repeat the last one."""
    it = iter(replies)
    last: list[Reply] = []

    def respond(_: Seen) -> Reply:
        nxt = next(it, None)
        if nxt is not None:
            last[:] = [nxt]
        return last[0]

    return respond


OK_SESSION = session_info()


# -- templates and the decorator ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("Text: {{input:text}}", "at least one {{output:name}}"),
        ("Q: {{input:q}} A: {{output:a}} trailing text", "never reach the model"),
        ("A {{ oops }} {{output:a}}", "stray"),
        ("{{prompt:x}} {{output:a}}", "unknown placeholder kind"),
        ("{{input:x}} {{input:x}} {{output:a}}", "used twice"),
        ("{{input:1x}} {{output:a}}", "not an identifier"),
    ],
)
def test_bad_templates_fail_before_any_request(template, fragment):
    with pytest.raises(InvalidRequestError, match="template") as info:
        SemanticFunction(template)
    assert fragment in str(info.value)


def test_decorator_takes_docstring_sampling_and_criteria():
    @semantic_function(max_tokens=64, temperature=0.0, criteria="throughput")
    def summarize(text):
        """Summarize the text in one sentence.
        Text: {{input:text}}
        Summary: {{output:summary}}"""

    assert summarize.template.source == (
        "Summarize the text in one sentence.\nText: {{input:text}}\nSummary: {{output:summary}}"
    )
    assert summarize.template.inputs == ("text",)
    assert summarize.sampling["summary"].max_tokens == 64
    assert summarize.sampling["summary"].temperature == 0.0
    assert summarize.criteria is Criteria.THROUGHPUT
    assert summarize.__name__ == "summarize" and summarize.__wrapped__ is not None


def test_decorator_per_output_sampling_overrides_only_what_it_sets():
    @semantic_function(
        max_tokens=32,
        temperature=0.5,
        sampling={"b": SamplingOptions(temperature=0.0), "a": {"stop": ["\n"]}},
    )
    def two(x):
        """{{input:x}} A: {{output:a}} B: {{output:b}}"""

    assert two.sampling["a"] == SamplingOptions(max_tokens=32, temperature=0.5, stop=["\n"])
    assert two.sampling["b"] == SamplingOptions(max_tokens=32, temperature=0.0)


def test_bare_decorator():
    @semantic_function
    def echo(x):
        """Say {{input:x}}: {{output:y}}"""

    assert isinstance(echo, SemanticFunction)
    assert echo.sampling["y"] == SamplingOptions()


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: semantic_function(lambda text: None), "no docstring"),
        (lambda: semantic_function(max_new_tokens=3)(_doc_fn), "max_new_tokens"),
        (lambda: semantic_function(temperature=5.0)(_doc_fn), "temperature"),
        (lambda: semantic_function(sampling={"nope": {}})(_doc_fn), "not outputs"),
        (lambda: semantic_function(sampling={"out": {"top_p": 0}})(_doc_fn), "output 'out'"),
        (lambda: semantic_function(criteria="fast")(_doc_fn), "criteria"),
    ],
)
def test_decorator_rejects_bad_options(make, fragment):
    with pytest.raises(InvalidRequestError) as info:
        make()
    assert fragment in str(info.value)


def _doc_fn(text):
    """T: {{input:text}} O: {{output:out}}"""


def test_decorator_parameters_must_be_the_template_inputs():
    def missing(text):
        """{{input:text}} {{input:style}} {{output:o}}"""

    def extra(text, style, tone):
        """{{input:text}} {{input:style}} {{output:o}}"""

    def variadic(text, *rest):
        """{{input:text}} {{output:o}}"""

    for fn, fragment in [
        (missing, "no parameter for input 'style'"),
        (extra, "parameter 'tone' is not an input"),
        (variadic, "*rest"),
    ]:
        with pytest.raises(InvalidRequestError) as info:
            semantic_function(fn)
        assert fragment in str(info.value)


def test_calling_needs_a_target_and_the_right_arguments(stub, client):
    fn = SemanticFunction("{{input:a}} {{output:b}}", name="fn")
    with pytest.raises(InvalidRequestError, match="target is a Session"):
        fn("text")
    s = client.session()
    with pytest.raises(InvalidRequestError, match="missing a required argument"):
        fn(s)
    with pytest.raises(InvalidRequestError, match="must be a str or a SemanticVariable"):
        fn(s, a=3)
    assert stub.seen("POST", "/programs") == [] and stub.seen("POST", "/calls") == []


# -- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:1", "http://h:1"),
        ("http://h:1/", "http://h:1"),
        ("http://h:1/v1", "http://h:1"),
        ("http://h:1/v1/", "http://h:1"),
        ("http://h:1/api/v1", "http://h:1"),
        ("https://example.com/parrot/v1", "https://example.com/parrot"),
    ],
)
def test_base_url_is_the_server_root(given, expected):
    assert normalize_base_url(given) == expected


def test_base_url_from_env_then_default(monkeypatch):
    monkeypatch.setenv("PARROT_BASE_URL", "http://10.0.0.2:9000/v1")
    assert normalize_base_url(None) == "http://10.0.0.2:9000"
    assert ParrotClient().base_url == "http://10.0.0.2:9000"
    monkeypatch.delenv("PARROT_BASE_URL")
    assert normalize_base_url(None) == "http://127.0.0.1:8000"
    with pytest.raises(InvalidRequestError, match="not an http"):
        normalize_base_url("localhost:8000")


def test_api_key_is_sent_as_bearer(stub, monkeypatch):
    stub.respond = lambda _: OK_SESSION
    monkeypatch.setenv("PARROT_API_KEY", "from-env")
    with ParrotClient(stub.url) as c:
        c.create_session()
    with ParrotClient(stub.url, api_key="explicit") as c:
        c.create_session()
    monkeypatch.delenv("PARROT_API_KEY")
    with ParrotClient(stub.url) as c:
        c.create_session()
    auth = [r.headers.get("authorization") for r in stub.requests]
    assert auth == ["Bearer from-env", "Bearer explicit", None]


def test_default_headers_query_and_callers_http_client(stub):
    """Headers win over the SDK's own (case-insensitively, Authorization included), the query
    joins every request's, and a caller's httpx client sends them and is left open."""
    ready = Reply(200, {"id": "v", "status": "ready", "value": "x"})
    stub.respond = sequence(OK_SESSION, ready)
    with httpx.Client() as http:
        client = ParrotClient(
            stub.url,
            api_key="ours",
            default_headers={"Authorization": "Bearer theirs", "X-App": "a"},
            default_query={"trace": "1"},
            http_client=http,
        )
        client.create_session()
        client.get_variable("S1", "v", wait=2)
        client.close()
        assert not http.is_closed
    first, second = stub.requests
    assert first.headers["authorization"] == "Bearer theirs" and first.headers["x-app"] == "a"
    assert first.query == {"trace": "1"}
    assert second.query == {"trace": "1", "timeout": "2"}
    with pytest.raises(InvalidRequestError, match="httpx.AsyncClient"):
        AsyncParrotClient(stub.url, http_client=http)


# -- error mapping ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "kind", "cls"),
    [
        (400, "invalid_request_error", InvalidRequestError),
        (401, "authentication_error", AuthenticationError),
        (404, "not_found_error", NotFoundError),
        (409, "conflict_error", ConflictError),
        (429, "rate_limit_error", OverloadedError),
        (503, "overloaded_error", OverloadedError),
        (500, "server_error", ServerError),
    ],
)
def test_error_responses_map_to_typed_exceptions(stub, status, kind, cls):
    stub.respond = lambda _: err(status, kind, "the server's reason", param="ttl_seconds")
    with ParrotClient(stub.url, max_retries=0) as c, pytest.raises(cls) as info:
        c.create_session(10)
    e = info.value
    assert isinstance(e, ParrotError)
    assert (e.message, e.status_code, e.error_type, e.param) == (
        "the server's reason",
        status,
        kind,
        "ttl_seconds",
    )
    assert "the server's reason" in str(e)


def test_a_non_json_error_keeps_its_text(stub, client):
    stub.respond = lambda _: Reply(502, text="Bad Gateway from the proxy")
    with pytest.raises(ServerError, match="Bad Gateway from the proxy") as info:
        client.get_session("S1")
    assert info.value.status_code == 502 and info.value.error_type is None


def test_client_side_validation_sends_nothing(stub, client):
    with pytest.raises(InvalidRequestError, match="ttl_seconds"):
        client.create_session(ttl_seconds=-1)
    with pytest.raises(InvalidRequestError, match="id"):
        client.create_variable("S1", "bad id with spaces")
    with pytest.raises(InvalidRequestError, match="criteria"):
        client.get_variable("S1", "v", criteria="fastest")
    assert stub.requests == []


# -- retries ------------------------------------------------------------------------------------
def test_503_is_retried_with_backoff_then_succeeds(stub):
    stub.respond = sequence(err(503, "overloaded_error", "busy"), err(503, "o", "busy"), OK_SESSION)
    with ParrotClient(stub.url, max_retries=2, backoff_base=0.01) as c:
        assert c.create_session().session_id == "S1"
    assert len(stub.requests) == 3


def test_retries_are_bounded(stub):
    stub.respond = lambda _: err(429, "rate_limit_error", "too many sessions")
    c = ParrotClient(stub.url, max_retries=2, backoff_base=0.01)
    with c, pytest.raises(OverloadedError, match="too many sessions"):
        c.create_session()
    assert len(stub.requests) == 3


def test_client_errors_are_not_retried(stub):
    stub.respond = lambda _: err(400, "invalid_request_error", "bad")
    c = ParrotClient(stub.url, max_retries=5, backoff_base=0.01)
    with c, pytest.raises(InvalidRequestError):
        c.create_session()
    assert len(stub.requests) == 1


def test_retry_after_is_honoured(stub):
    # A 30 s backoff would time the test out: only Retry-After: 0 keeps it fast.
    stub.respond = sequence(Reply(503, headers={"Retry-After": "0"}, text="later"), OK_SESSION)
    start = time.monotonic()
    with ParrotClient(stub.url, backoff_base=30.0) as c:
        c.create_session()
    assert time.monotonic() - start < 2.0
    assert len(stub.requests) == 2


def test_connection_refused_is_retried_then_raised():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    c = ParrotClient(url, max_retries=2, backoff_base=0.1)
    with c, pytest.raises(APIConnectionError):
        c.create_session()
    # Two backoffs of at least base/2 and base: the refusals were retried.
    assert time.monotonic() - start >= 0.15


def test_read_timeout_is_not_retried(stub):
    stub.respond = lambda _: dataclasses.replace(session_info(), delay=0.6)
    c = ParrotClient(stub.url, timeout=0.2, max_retries=3, backoff_base=0.01)
    with c, pytest.raises(APITimeoutError) as info:
        c.create_session()
    assert isinstance(info.value, TimeoutError)
    assert len(stub.requests) == 1


def test_backoff_grows_with_jitter_and_is_capped():
    policy = RetryPolicy(max_retries=10, backoff_base=1.0, backoff_max=5.0)
    for attempt, full in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (8, 5.0)]:
        delays = [policy.backoff(attempt) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1


def test_retry_after_parsing():
    def resp(value: str) -> httpx.Response:
        return httpx.Response(503, headers={"retry-after": value})

    assert retry_after(resp("2")) == 2.0
    assert retry_after(resp("0.5")) == 0.5
    assert retry_after(resp("3600")) is None  # longer than we wait: back off as usual
    assert retry_after(resp("not a date")) is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))
    assert 3.0 <= retry_after(resp(date)) <= 5.0


async def test_async_client_retries_the_same_way(stub):
    stub.respond = sequence(err(503, "overloaded_error", "busy"), OK_SESSION)
    async with AsyncParrotClient(stub.url, backoff_base=0.01) as c:
        info = await c.create_session()
    assert info.session_id == "S1" and len(stub.requests) == 2
    stub.respond = lambda _: err(404, "not_found_error", "no session S9")
    async with AsyncParrotClient(stub.url) as c:
        with pytest.raises(NotFoundError, match="no session S9"):
            await c.get_session("S9")


# -- what semantic calls send -------------------------------------------------------------------
@semantic_function(max_tokens=16, temperature=0.0)
def summarize(text):
    """Summarize: {{input:text}}
    Summary: {{output:summary}}"""


@semantic_function(max_tokens=8, criteria=Criteria.LATENCY)
def title(summary, style="plain"):
    """Style: {{input:style}}
    Summary: {{input:summary}}
    Title: {{output:title}}"""


def test_a_call_with_string_inputs_is_one_request(stub, client):
    with client.session() as s:
        out = summarize(s, "a long text")
        assert isinstance(out, SemanticVariable) and out.session is s
    programs = stub.seen("POST", "/programs")
    assert len(programs) == 1 and programs[0].path == f"{P}/S1/programs"
    body = programs[0].body
    [var] = body["variables"]
    [call] = body["calls"]
    assert var["value"] == "a long text" and var["id"].startswith("text-")
    assert call["template"] == summarize.template.source
    assert call["inputs"] == {"text": var["id"]}
    assert call["outputs"]["summary"]["var"] == out.id
    assert call["outputs"]["summary"]["sampling"]["max_tokens"] == 16
    assert out.producer == call["id"]
    assert stub.seen("DELETE")[0].path == f"{P}/S1"  # the with block closed the session


def test_a_call_on_variables_only_uses_the_calls_endpoint(stub, client):
    s = client.session()
    doc = s.variable("the document", name="doc")
    assert doc.is_ready and doc.id.startswith("doc-")
    out = summarize(s, text=doc)
    [sent] = stub.seen("POST", "/calls")
    assert sent.body["inputs"] == {"text": doc.id}
    assert sent.body["outputs"]["summary"]["var"] == out.id


def test_a_program_is_sent_once_on_exit(stub, client):
    s = client.session()
    with s.program() as p:
        doc = p.variable("shared document")
        parts = [summarize(p, text=f"part {i}") for i in range(3)]
        joined = summarize(p, text=doc)
        t = title(p, joined, style="short")
        assert stub.seen("POST", "/programs") == []  # nothing sent inside the block
        with pytest.raises(InvalidRequestError, match="not been submitted"):
            t.get()
    [sent] = stub.seen("POST", "/programs")
    body = sent.body
    assert len(body["calls"]) == 5
    assert len(body["variables"]) == 5  # doc, three parts, style
    last = body["calls"][-1]
    assert last["inputs"]["summary"] == joined.id  # the chain is linked by variable ids
    assert last["outputs"]["title"]["criteria"] == "latency"
    assert body["calls"][3]["inputs"]["text"] == doc.id
    assert p.accepted is not None and len(p.accepted.calls) == 5
    assert [v.producer for v in parts] == [c["id"] for c in body["calls"][:3]]


def test_a_failing_program_block_sends_nothing(stub, client):
    s = client.session()
    with pytest.raises(RuntimeError), s.program() as p:
        summarize(p, text="x")
        raise RuntimeError("app bug")
    assert stub.seen("POST", "/programs") == []
    with pytest.raises(InvalidRequestError, match="not submitted yet"):
        summarize(s, text=summarize(p, text="y"))


def test_variables_of_another_session_are_rejected(stub, client):
    a = client.session()
    stub.respond = lambda r: session_info("S2") if r.path == P else native(r)
    b = client.session()
    x = a.variable("x")
    posted = len(stub.requests)
    with pytest.raises(InvalidRequestError, match="another session"):
        summarize(b, text=x)
    assert len(stub.requests) == posted


def test_several_outputs_come_back_in_template_order(stub, client):
    fn = SemanticFunction("{{input:q}} Answer: {{output:answer}} Why: {{output:why}}")
    answer, why = fn(client.session(), q="?")
    [sent] = stub.seen("POST", "/programs")
    outs = sent.body["calls"][0]["outputs"]
    assert (answer.id, why.id) == (outs["answer"]["var"], outs["why"]["var"])


def test_closing_an_expired_session_is_fine(stub, client):
    s = client.session()
    stub.respond = lambda _: err(404, "not_found_error", "session S1 expired")
    s.close()
    s.close()  # once only
    assert len(stub.seen("DELETE")) == 1


# -- get, criteria, stream ----------------------------------------------------------------------
def variable_state(status: str, value: str | None = None, error: str | None = None) -> Reply:
    state = VariableState(id="v1", status=status, value=value, error=error)
    return Reply(real_status("GET", f"{P}/S1/variables/v1"), state.model_dump(mode="json"))


def waiting_server(then: Reply | None = None) -> Callable[[Seen], Reply]:
    """Behaves like the server's wait: holds the GET for its `timeout`, then answers
    pending (or `then`, from the second request on)."""
    calls = []

    def respond(req: Seen) -> Reply:
        if req.method != "GET":
            return native(req)
        calls.append(req)
        if then is not None and len(calls) > 1:
            return then
        return dataclasses.replace(variable_state("pending"), delay=float(req.query["timeout"]))

    return respond


def test_get_waits_on_the_server_and_caches(stub, client):
    s = client.session()
    v = SemanticVariable(s, "v1")
    stub.respond = sequence(variable_state("pending"), variable_state("ready", "Paris"))
    assert v.get(criteria="throughput", timeout=5) == "Paris"
    assert v.get() == "Paris"  # cached: values never change
    gets = stub.seen("GET")
    assert len(gets) == 2
    assert all(g.query["criteria"] == "throughput" for g in gets)
    assert 0 < float(gets[0].query["timeout"]) <= 5


def test_a_long_get_is_split_into_bounded_server_waits(stub, client):
    v = SemanticVariable(client.session(), "v1")
    stub.respond = sequence(variable_state("pending"), variable_state("ready", "x"))
    assert v.get(timeout=1000) == "x"
    first = stub.seen("GET")[0]
    assert float(first.query["timeout"]) == 60 and first.query["criteria"] == "latency"


def test_get_timeout(stub, client):
    v = SemanticVariable(client.session(), "v1")
    stub.respond = waiting_server()
    start = time.monotonic()
    with pytest.raises(GetTimeoutError, match="still pending after 0.3 s") as info:
        v.get(timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 2
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, APITimeoutError)
    assert info.value.variable_id == "v1"


def test_a_server_wait_outlasts_the_client_read_timeout(stub):
    with ParrotClient(stub.url, timeout=0.2) as c:
        v = SemanticVariable(c.session(), "v1")
        stub.respond = waiting_server(then=variable_state("ready", "late"))
        # The first GET is held 0.5 s by the server, longer than the 0.2 s client timeout.
        with pytest.raises(GetTimeoutError):
            v.get(timeout=0.5)
        assert v.get(timeout=0.5) == "late"
    assert len(stub.seen("GET")) == 2


def test_get_of_a_failed_variable(stub, client):
    v = SemanticVariable(client.session(), "v1")
    stub.respond = lambda _: variable_state("failed", error="producer c1 failed: prompt too long")
    with pytest.raises(VariableFailedError, match="prompt too long") as info:
        v.get()
    assert info.value.variable_id == "v1"


def sse(*chunks: dict[str, Any], done_marker: bool = True) -> Reply:
    data = [VariableChunk(id="v1", **c).model_dump_json() for c in chunks]
    status = real_status("GET", f"{P}/S1/variables/v1/stream")
    return Reply(status, sse=data + (["[DONE]"] if done_marker else []))


def test_stream_yields_deltas_then_caches_the_value(stub, client):
    v = SemanticVariable(client.session(), "v1")
    stub.respond = lambda _: sse({"delta": "Hel"}, {"delta": "lo"}, {"delta": "", "done": True})
    assert list(v.stream(criteria=Criteria.THROUGHPUT)) == ["Hel", "lo"]
    [req] = stub.seen("GET", "/v1/stream")
    assert req.query == {"criteria": "throughput"}
    assert v.get() == "Hello" and len(stub.seen("GET")) == 1


def test_stream_of_a_failing_producer(stub, client):
    v = SemanticVariable(client.session(), "v1")
    stub.respond = lambda _: sse({"delta": "Hel"}, {"done": True, "error": "cancelled"})
    got = []
    with pytest.raises(VariableFailedError, match="cancelled"):
        for delta in v.stream():
            got.append(delta)
    assert got == ["Hel"]


def test_a_stream_cut_short_is_an_error(stub, client):
    v = SemanticVariable(client.session(), "v1")
    stub.respond = lambda _: sse({"delta": "Hel"}, done_marker=False)
    with pytest.raises(APIConnectionError, match="ended before"):
        list(v.stream())


# -- async --------------------------------------------------------------------------------------
async def test_async_session_call_get_stream_and_close(stub):
    async with AsyncParrotClient(stub.url, backoff_base=0.01) as c, c.session(ttl_seconds=30) as s:
        assert stub.seen("POST", P)[0].body == {"ttl_seconds": 30}
        out = await summarize(s, text="async text")
        with pytest.raises(InvalidRequestError, match="aget"):
            out.get()
        stub.respond = sequence(variable_state("pending"), variable_state("ready", "done"))
        assert await out.aget(timeout=5) == "done"
        other = SemanticVariable(s, "v1")
        stub.respond = lambda r: (
            sse({"delta": "a"}, {"delta": "b", "done": True}) if r.method == "GET" else native(r)
        )
        assert [d async for d in other.astream()] == ["a", "b"]
        async with s.program() as p:
            title(p, summarize(p, text="x"))
        assert len(p.accepted.calls) == 2
    assert stub.seen("DELETE")[0].path == f"{P}/S1"
    assert len(stub.seen("POST", "/programs")) == 2


async def test_async_session_must_be_opened(stub):
    async with AsyncParrotClient(stub.url) as c:
        s = c.session()
        with pytest.raises(InvalidRequestError, match="not open yet"):
            summarize(s, text="x")
        s = await c.session()
        assert s.id == "S1"
        await s.aclose()

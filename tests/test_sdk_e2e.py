"""The client SDK against a real `parrot serve` (the `server_url` fixture: real CLI, uvicorn,
model) on 127.0.0.1: sessions, programs, get/stream/set, typed errors, the async client."""

from __future__ import annotations

import pytest

from parrot_integrations import (
    AsyncParrotClient,
    ConflictError,
    Criteria,
    GetTimeoutError,
    InvalidRequestError,
    NotFoundError,
    ParrotClient,
    SamplingOptions,
    SemanticFunction,
    VariableFailedError,
    semantic_function,
)
from parrot_integrations.protocol.native import CallSpec, OutputBinding

pytestmark = pytest.mark.slow


@semantic_function(max_tokens=12, temperature=0.0)
def capital(country):
    """Q: What is the capital of {{input:country}}?
    A: {{output:answer}}"""


@semantic_function(max_tokens=12, temperature=0.0)
def shout(text):
    """Repeat in capital letters: {{input:text}}
    Result: {{output:loud}}"""


# Keeps the engine busy long enough to be caught pending.
long_story = SemanticFunction(
    "Tell a very long story about {{input:topic}}. Story: {{output:story}}",
    max_tokens=400,
    temperature=0.0,
    ignore_eos=True,
)


@pytest.fixture
def client(server_url):
    with ParrotClient(server_url + "/v1") as c:  # a trailing /v1 is accepted
        yield c


def test_a_chain_in_one_program(client):
    with client.session() as s:
        with s.program() as p:
            a = capital(p, country="France")
            b = shout(p, text=a)
        assert p.accepted is not None and len(p.accepted.calls) == 2
        first = a.get(criteria=Criteria.THROUGHPUT, timeout=120)
        second = b.get(timeout=120)
        assert isinstance(first, str) and first.strip()
        assert isinstance(second, str) and second.strip()
        assert client.get_call(s.id, b.producer).status.value == "done"


def test_a_single_call_streams_and_matches_get(client):
    with client.session() as s:
        out = capital(s, country="Italy")
        streamed = "".join(out.stream())
        assert streamed.strip()
        assert out.get() == streamed
        assert out.usage is not None and 0 < out.usage.completion_tokens <= 12  # from the stream
        assert out.usage.finish_reason in ("stop", "length")


def test_usage_after_get_and_unset_max_tokens(client):
    """`.usage` once read (None for a client's value); `max_tokens=None`: the model may write
    to the end of the context window, and here stops by itself."""
    sky = SemanticFunction(
        "Answer with one word: what colour is the sky?{{output:a}}",
        chat=True,
        max_tokens=None,
        temperature=0.0,
    )
    with client.session() as s:
        country = s.variable("France")
        answer = capital(s, country=country)
        assert answer.usage is None  # not read yet
        answer.get(timeout=120)
        assert answer.usage.prompt_tokens > 0 and answer.usage.model
        country_state = client.get_variable(s.id, country.id)
        assert country_state.usage is None
        word = sky(s)
        assert word.get(timeout=120).strip()
        assert word.usage.finish_reason == "stop"


def test_an_input_set_later_releases_its_consumer(client):
    with client.session() as s:
        country = s.variable(name="country")
        answer = capital(s, country=country)
        with pytest.raises(GetTimeoutError):
            answer.get(timeout=0.2)  # waits on an input nobody has set
        country.set("Japan")
        assert answer.get(timeout=120).strip()
        with pytest.raises(ConflictError):
            country.set("again")


def test_server_errors_are_typed(client):
    with pytest.raises(NotFoundError):
        client.get_session("no-such-session")
    with client.session() as s:
        bad_input = CallSpec(
            template="{{input:x}} {{output:y}}",
            inputs={"x": "never-created"},
            outputs={"y": OutputBinding(var="y1")},
        )
        with pytest.raises((InvalidRequestError, NotFoundError)) as info:
            client.submit_call(s.id, bad_input)
        assert "never-created" in str(info.value)
        huge = SemanticFunction("{{input:t}} {{output:o}}", max_tokens=8)
        with pytest.raises(InvalidRequestError, match="context window"):
            huge(s, t="word " * 5000)
        with pytest.raises(NotFoundError):
            client.get_variable(s.id, "missing")


def test_cancel_fails_the_variable_and_close_frees_the_session(client):
    s = client.session()
    story = long_story(s, topic="parrots")
    with pytest.raises(GetTimeoutError):
        story.get(timeout=0)
    s.cancel(story.producer)
    with pytest.raises(VariableFailedError, match="cancel"):
        story.get(timeout=60)
    s.close()
    with pytest.raises(NotFoundError):
        client.get_session(s.id)


def test_per_output_sampling_reaches_the_server(client):
    two = SemanticFunction(
        "Name a color: {{output:color}}\nName an animal: {{output:animal}}",
        temperature=0.0,
        sampling={"color": SamplingOptions(max_tokens=3), "animal": {"max_tokens": 4}},
    )
    with client.session() as s:
        color, animal = two(s)
        assert color.get(timeout=120) is not None and animal.get(timeout=120) is not None


async def test_async_client_end_to_end(server_url):
    async with AsyncParrotClient(server_url) as c:
        async with c.session() as s:
            async with s.program() as p:
                a = capital(p, country="Spain")
                b = shout(p, text=a)
            assert (await a.aget(timeout=120)).strip()
            assert "".join([d async for d in b.astream()]).strip()
            country = await s.variable("Germany")
            assert (await capital(s, country=country)).id
            info = await s.info()
            assert info.calls == 3
        with pytest.raises(NotFoundError):  # deleted when the block exited
            await c.get_session(s.id)

"""Constrained decoding on the real model: JSON schemas, regexes and EBNF grammars in the engine
(batching beside free rows, prefix cache, preemption, seeds, resumption after output so far) and
through `parrot serve`'s `/v1` `response_format` and `/generate` `sampling_params`."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import jsonschema
import openai
import pytest
from model_helpers import chat_ids
from pydantic import BaseModel, Field
from structured_schemas import PERSON, SCHEMAS

from parrot_integrations import InvalidRequestError as SDKInvalid
from parrot_integrations import ParrotClient, SemanticFunction
from parrot_server.engine.engine import Engine
from parrot_server.engine.errors import InvalidRequestError
from parrot_server.engine.grammar_text import check_constraint
from parrot_server.engine.request import FinishKind
from parrot_server.engine.sampling_params import SamplingParams

ASK = "Describe a person named Ann, aged 31, who has a cat, as JSON."


def person(**kw) -> SamplingParams:
    kw.setdefault("max_new_tokens", 60)
    kw.setdefault("temperature", 0)
    return SamplingParams(json_schema=json.dumps(PERSON), **kw)


@pytest.fixture(scope="module")
def engine(make_engine) -> Engine:
    return make_engine()


def valid_person(text: str) -> dict:
    value = json.loads(text)
    jsonschema.validate(value, PERSON)
    return value


# -- engine -----------------------------------------------------------------------------------


def test_json_schema_output_parses_and_validates(engine):
    [out] = engine.generate([chat_ids(engine.tokenizer, ASK)], person())
    assert out.finish_reason.kind is FinishKind.STOP
    assert valid_person(out.new_text)["age"] == 31


def test_regex_and_ebnf_constrain_sampled_output(engine):
    prompt = chat_ids(engine.tokenizer, "Is the sky blue? Answer and say why.")
    pattern = r"(yes|no), because [a-z ]{3,30}\."
    for seed in range(3):
        sp = SamplingParams(max_new_tokens=24, temperature=1.0, sampling_seed=seed, regex=pattern)
        [out] = engine.generate([prompt], sp)
        assert re.fullmatch(pattern, out.new_text), out.new_text
    grammar = 'root ::= "The answer is " ("yes" | "no") "."'
    [out] = engine.generate(
        [prompt], SamplingParams(max_new_tokens=10, temperature=0, ebnf=grammar)
    )
    assert out.new_text in ("The answer is yes.", "The answer is no.")


def test_constrained_rows_leave_the_rest_of_the_batch_alone(make_engine):
    eng = make_engine()
    free = chat_ids(eng.tokenizer, "What is the capital of France?")
    greedy = SamplingParams(max_new_tokens=12, temperature=0)
    [alone] = eng.generate([free], greedy)
    eng.flush_cache()
    outs: dict[str, str] = {}

    def collect(o) -> None:
        outs[o.rid] = outs.get(o.rid, "") + o.new_text

    eng.submit(chat_ids(eng.tokenizer, ASK), person(), rid="json", on_output=collect)
    eng.submit(free, greedy, rid="free", on_output=collect)
    eng.run_until_idle()
    assert outs["free"] == alone.new_text
    valid_person(outs["json"])


def test_cached_prefix_seed_and_preemption_keep_constrained_output(make_engine):
    eng = make_engine()
    prompts = [chat_ids(eng.tokenizer, f"{ASK} Variant {i}.") for i in range(3)]
    sampling = person(temperature=0.8, sampling_seed=7, max_new_tokens=40)
    first = [o.new_text for o in eng.generate(prompts, sampling)]
    again = eng.generate(prompts, sampling)  # prompts now served from the prefix cache
    assert [o.new_text for o in again] == first
    assert all(o.cached_tokens > 0 for o in again)
    # A pool too small for all three at once: some are preempted and recomputed.
    tight = make_engine(kv_pool_tokens=150)
    assert [o.new_text for o in tight.generate(prompts, sampling)] == first
    assert tight.stats().preemptions_total >= 1


def test_resumed_request_continues_its_grammar(engine):
    """A request resumed elsewhere sends its output so far as part of the prompt: the grammar
    starts after it (`constrained_prompt_tail`), so the rest is what the first run made."""
    prompt = chat_ids(engine.tokenizer, ASK)
    [full] = engine.generate([prompt], person())
    done = full.new_token_ids[:7]
    rest = person(max_new_tokens=60 - len(done), constrained_prompt_tail=len(done))
    [resumed] = engine.generate([prompt + done], rest)
    assert done + resumed.new_token_ids == full.new_token_ids
    # Output so far that the grammar rejects is bad input, not a broken stream.
    bad = person(constrained_prompt_tail=3)
    with pytest.raises(InvalidRequestError, match="does not follow the json_schema"):
        engine.submit(prompt + engine.encode("hello"), bad)


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(json_schema="{not json"), "invalid json_schema: Failed to parse JSON"),
        (dict(json_schema=json.dumps({"type": "frob"})), 'Unsupported type "frob"'),
        (dict(regex="a(b"), "invalid regex: .*parenthesis is not closed"),
        (dict(ebnf="root ::= rule_that_is_missing"), "invalid ebnf: .*not defined"),
        # xgrammar's message cuts this input inside a character: the message is not UTF-8.
        (dict(ebnf='root ::= "a" \U0001f600\U0001f600'), "invalid ebnf: it does not parse"),
        (dict(regex="a", ebnf='root ::= "a"'), "at most one of json_schema, regex and ebnf"),
        (dict(constrained_prompt_tail=2), "0 without a constraint"),
    ],
)
def test_bad_constraints_are_typed_errors(engine, kw, needle):
    with pytest.raises(InvalidRequestError, match=needle):
        engine.submit([1, 2, 3], SamplingParams(**kw))
    assert not engine.has_work()
    if "ebnf" in kw and "regex" not in kw:  # the check a front server makes says the same
        with pytest.raises(InvalidRequestError, match=needle):
            check_constraint(SamplingParams(**kw))


# -- server: /v1 and /generate ------------------------------------------------------------------


@pytest.mark.slow
def test_thirty_schemas_through_v1_all_parse_and_validate(server_url):
    """Every schema's output, requested together at temperature 0, is JSON that validates."""
    client = openai.AsyncOpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0)

    async def ask(what: str, schema: dict) -> tuple[str, str]:
        r = await client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": f"Reply in JSON: {what}."}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            },
            max_tokens=160,
            temperature=0,
        )
        return r.choices[0].message.content, r.choices[0].finish_reason

    async def main() -> list[tuple[str, str]]:
        try:
            return await asyncio.gather(*(ask(w, s) for w, s in SCHEMAS))
        finally:
            await client.close()

    assert len(SCHEMAS) >= 30
    for (what, schema), (text, finish) in zip(SCHEMAS, asyncio.run(main()), strict=True):
        assert finish == "stop", (what, text)
        jsonschema.validate(json.loads(text), schema)


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=150)


@pytest.mark.slow
def test_openai_parse_returns_the_parsed_object(server_url):
    client = openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0)
    r = client.chat.completions.parse(
        model="default",
        messages=[{"role": "user", "content": "Ann is 31. Give her name and age."}],
        response_format=Person,
        max_tokens=40,
        temperature=0,
    )
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Person) and parsed.age == 31
    # json_object: any JSON object; completions take response_format too (as vLLM's do).
    c = client.completions.create(
        model="default",
        prompt="A JSON object describing a cat:",
        extra_body={"response_format": {"type": "json_object"}},
        max_tokens=40,
        temperature=0,
    )
    if c.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(c.choices[0].text), dict)
    else:  # cut by max_tokens: still an object so far
        assert c.choices[0].text.lstrip().startswith("{")


@pytest.mark.slow
def test_generate_takes_sglang_constraint_fields(server_url):
    body = {
        "text": "Is the sky blue? Answer:",
        "sampling_params": {"max_new_tokens": 8, "temperature": 0, "regex": "(yes|no)"},
    }
    r = httpx.post(f"{server_url}/generate", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["text"] in ("yes", "no")
    body["sampling_params"] = {"max_new_tokens": 60, "temperature": 0, "json_schema": PERSON}
    body["text"] = ASK
    r = httpx.post(f"{server_url}/generate", json=body, timeout=60)
    assert r.status_code == 200, r.text
    valid_person(r.json()["text"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "path, body, needle",
    [
        ("/generate", {"text": "x", "sampling_params": {"regex": "a(b"}}, "invalid regex"),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "frob"}},
                },
            },
            'Unsupported type \\"frob\\"',
        ),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_schema"},
            },
            "json_schema must be given",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}},
            "response_format",
        ),
    ],
)
def test_bad_constraints_over_http_are_400s(server_url, server_log, path, body, needle):
    r = httpx.post(f"{server_url}{path}", json={"max_tokens": 2, **body}, timeout=60)
    assert r.status_code == 400 and needle in r.text, r.text
    assert "Traceback" not in server_log.read_text()


# -- native API: constrained outputs in programs -----------------------------------------------


class Ann(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=150)


@pytest.mark.slow
def test_a_structured_step_feeds_valid_json_to_the_call_that_reads_it(server_url):
    extract = SemanticFunction(
        "Describe a person named Ann, aged 31, as JSON: {{input:text}}{{output:person}}",
        chat=True,
        json_schema=Ann,  # a pydantic class: its JSON schema
        max_tokens=40,
        temperature=0,
    )
    judge = SemanticFunction(
        "Is this person an adult? {{input:person}} Answer: {{output:verdict}}",
        chat=True,
        choices=["yes", "no"],
        temperature=0,
    )
    code = SemanticFunction(
        "Give Ann a ticket code. Code: {{output:code}}", regex=r"[A-Z]{3}-[0-9]{4}", max_tokens=12
    )
    with ParrotClient(server_url) as client, client.session() as s:
        with s.program() as p:
            person = extract(p, text="Ann is 31.")
            verdict = judge(p, person=person)
            ticket = code(p)
        assert Ann.model_validate_json(person.get(timeout=120)).age == 31
        assert verdict.get(timeout=120) in ("yes", "no")
        assert re.fullmatch(r"[A-Z]{3}-[0-9]{4}", ticket.get(timeout=120))


@pytest.mark.slow
def test_bad_native_constraints_are_refused_at_submit(server_url):
    with ParrotClient(server_url) as client, client.session() as s:
        for options, needle in (
            ({"regex": "(unclosed"}, "invalid regex"),
            ({"json_schema": {"type": "nope"}}, "invalid json_schema"),
            ({"regex": "a", "choices": ["a"]}, "at most one of"),
            ({"choices": []}, "choices"),
        ):
            with pytest.raises(SDKInvalid, match=re.escape(needle)):
                SemanticFunction("Q: {{output:a}}", **options)(s)
        assert client.get_session(s.id).calls == 0  # nothing was accepted

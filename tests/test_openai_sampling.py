"""`/v1` sampling breadth against the real `parrot serve` (`server_url`) through the official
`openai` client: logprobs (plain and streamed), `n` choices sharing one prompt computation,
penalties, `logit_bias`, `min_tokens`, `echo`, and 400s naming the field."""

from __future__ import annotations

import math
import uuid

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def client(server_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0, timeout=120)


def _stats(server_url: str) -> dict:
    return httpx.get(f"{server_url}/server_info", timeout=10).json()["internal_states"][0]


def _token_id(server_url: str, text: str) -> int:
    (token,) = httpx.post(f"{server_url}/tokenize", json={"prompt": text}, timeout=10).json()[
        "tokens"
    ]
    return token


# -- logprobs ---------------------------------------------------------------------------------


def test_chat_logprobs_at_temperature_zero_are_the_top_ones(client):
    r = client.chat.completions.create(
        model="default", messages=CHAT, max_tokens=6, temperature=0, logprobs=True, top_logprobs=5
    )
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens == 6
    for e in entries:
        assert len(e.top_logprobs) == 5
        assert e.logprob == pytest.approx(max(t.logprob for t in e.top_logprobs), abs=1e-6)
        assert e.top_logprobs[0].token == e.token  # the sampled token is the best one
        assert sum(math.exp(t.logprob) for t in e.top_logprobs) <= 1 + 1e-6
        assert bytes(e.bytes).decode("utf-8", errors="replace") == e.token
    text = b"".join(bytes(e.bytes) for e in entries).decode()
    assert text == r.choices[0].message.content


def test_streamed_chat_logprobs_equal_the_whole_ones(client):
    kwargs = dict(
        model="default", messages=CHAT, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2
    )
    whole = client.chat.completions.create(**kwargs).choices[0].logprobs.content
    streamed = [
        e
        for chunk in client.chat.completions.create(stream=True, **kwargs)
        for c in chunk.choices
        if c.logprobs and c.logprobs.content
        for e in c.logprobs.content
    ]
    assert [e.token for e in streamed] == [e.token for e in whole]
    for s, w in zip(streamed, whole, strict=True):
        assert s.logprob == pytest.approx(w.logprob, abs=1e-4)


def test_completion_logprobs_legacy_shape(client):
    prompt = "The capital of France is"
    r = client.completions.create(
        model="default", prompt=prompt, max_tokens=4, temperature=0, logprobs=3
    )
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[0] == 0
    for logprob, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 1 <= len(top) <= 3 and logprob == pytest.approx(max(top.values()), abs=1e-6)
    streamed = client.completions.create(
        model="default", prompt=prompt, max_tokens=4, temperature=0, logprobs=3, stream=True
    )
    tokens = [t for c in streamed for ch in c.choices if ch.logprobs for t in ch.logprobs.tokens]
    assert tokens == lp.tokens


# -- n choices --------------------------------------------------------------------------------


def test_n_choices_share_one_prompt_computation_and_replay_with_a_seed(client, server_url):
    # A fresh prompt (nothing of it cached) long enough that computing it n times would show.
    words = " ".join(uuid.uuid4().hex for _ in range(12))
    prompt = f"Here are some codes: {words}. Write a short poem about the sea:"
    before = _stats(server_url)
    kwargs = dict(model="default", prompt=prompt, max_tokens=8, temperature=0.8, seed=7, n=4)
    r = client.completions.create(**kwargs)
    after = _stats(server_url)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    assert len({c.text for c in r.choices}) > 1  # derived seeds: the choices differ
    p = r.usage.prompt_tokens
    assert 4 <= r.usage.completion_tokens <= 32  # summed over the choices
    computed = (after["prompt_tokens_total"] - before["prompt_tokens_total"]) - (
        after["cached_prompt_tokens_total"] - before["cached_prompt_tokens_total"]
    )
    assert p > 50 and computed < p + 3 * 16  # once, plus at most a block per other choice
    again = client.completions.create(**kwargs)
    assert [c.text for c in again.choices] == [c.text for c in r.choices]


def test_streamed_n_choices_carry_their_index(client):
    stream = client.chat.completions.create(
        model="default", messages=CHAT, max_tokens=4, n=3, temperature=0.9, seed=3, stream=True
    )
    text: dict[int, str] = {}
    finished = set()
    for chunk in stream:
        for c in chunk.choices:
            text[c.index] = text.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finished.add(c.index)
    assert finished == {0, 1, 2} and set(text) == {0, 1, 2}


# -- penalties, bias, min_tokens, echo --------------------------------------------------------

REPEAT = "The word is apple. apple apple apple apple apple apple apple apple apple"


def test_penalties_stop_the_repeated_token_as_defined(client, server_url):
    apple = _token_id(server_url, " apple")
    kwargs = dict(model="default", prompt=REPEAT, max_tokens=6, temperature=0, logprobs=0)

    def apples(**more) -> int:
        r = client.completions.create(**kwargs, **more)
        return r.choices[0].logprobs.tokens.count(" apple")

    assert apples() == 6  # greedy, the model repeats it
    assert apples(presence_penalty=2.0) == 1  # once out, it loses the lead for good
    # Frequency grows with each repeat: a few more, then it loses the lead too.
    assert 2 <= apples(frequency_penalty=0.5) < 6
    assert apples(presence_penalty=-2.0) == 6
    assert apples(logit_bias={str(apple): -100}) == 0


def test_logit_bias_changes_and_forces_tokens(client, server_url):
    kwargs = dict(model="default", prompt="The capital of France is", max_tokens=3, temperature=0)
    first = client.completions.create(logprobs=0, **kwargs).choices[0].logprobs.tokens[0]
    first_id = _token_id(server_url, first)
    other = client.completions.create(logit_bias={str(first_id): -100}, logprobs=0, **kwargs)
    assert other.choices[0].logprobs.tokens[0] != first
    forced_id = _token_id(server_url, " banana")
    forced = client.completions.create(logit_bias={str(forced_id): 100}, **kwargs)
    assert forced.choices[0].text == " banana" * 3


def test_min_tokens_holds_off_the_end(client):
    kwargs = dict(model="default", messages=[{"role": "user", "content": "Say OK."}], temperature=0)
    short = client.chat.completions.create(max_tokens=40, **kwargs)
    assert short.choices[0].finish_reason == "stop"
    k = short.usage.completion_tokens
    held = client.chat.completions.create(
        max_tokens=k + 4, extra_body={"min_tokens": k + 4}, **kwargs
    )
    assert held.usage.completion_tokens == k + 4 and held.choices[0].finish_reason == "length"


def test_echo_returns_the_prompt_first(client):
    prompt = "Once upon a time"
    r = client.completions.create(model="default", prompt=prompt, max_tokens=3, echo=True)
    assert r.choices[0].text.startswith(prompt) and len(r.choices[0].text) > len(prompt)
    chunks = client.completions.create(
        model="default", prompt=prompt, max_tokens=3, echo=True, stream=True
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices).startswith(prompt)


def test_extras_and_chat_template_kwargs_are_accepted(client):
    r = client.chat.completions.create(
        model="default",
        messages=CHAT,
        max_tokens=3,
        extra_body={
            "top_k": 5,
            "min_p": 0.1,
            "repetition_penalty": 1.3,
            "stop_token_ids": [2],
            "skip_special_tokens": True,
            "chat_template_kwargs": {"custom_flag": True},
        },
    )
    assert r.usage.completion_tokens <= 3


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"logit_bias": {"x": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {"99999999": 1}}, "logit_bias"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"n": 17}, "n"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"extra_body": {"min_p": 2}}, "min_p"),
        ({"extra_body": {"repetition_penalty": 0}}, "repetition_penalty"),
        ({"extra_body": {"min_tokens": 9}, "max_tokens": 2}, "min_tokens"),
        ({"extra_body": {"chat_template_kwargs": {"tools": []}}}, "chat_template_kwargs"),
    ],
)
def test_bad_chat_values_are_400s_naming_the_field(client, fields, named):
    with pytest.raises(openai.BadRequestError, match=named):
        client.chat.completions.create(
            model="default", messages=CHAT, **{"max_tokens": 2, **fields}
        )


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"best_of": 2}, "best_of"),
        ({"echo": True, "logprobs": 1}, "echo"),
        ({"logprobs": 6}, "logprobs"),
        ({"suffix": "end"}, "suffix"),
    ],
)
def test_bad_completion_values_are_400s_naming_the_field(client, fields, named):
    with pytest.raises(openai.BadRequestError, match=named):
        client.completions.create(model="default", prompt="Hi", max_tokens=2, **fields)


def test_sglang_generate_returns_logprobs_and_honours_penalties(server_url):
    body = {
        "text": REPEAT,
        "sampling_params": {"max_new_tokens": 4, "temperature": 0},
        "return_logprob": True,
        "top_logprobs_num": 2,
    }
    r = httpx.post(f"{server_url}/generate", json=body, timeout=60).json()
    meta = r["meta_info"]
    assert [e[1] for e in meta["output_token_logprobs"]] == r["output_ids"]
    entries = zip(meta["output_token_logprobs"], meta["output_top_logprobs"], strict=True)
    for (lp, _, _), top in entries:
        assert lp == pytest.approx(top[0][0], abs=1e-6) and len(top) == 2
    body["sampling_params"] |= {"presence_penalty": 2.0, "frequency_penalty": 2.0}
    penalized = httpx.post(f"{server_url}/generate", json=body, timeout=60).json()
    assert penalized["output_ids"] != r["output_ids"]

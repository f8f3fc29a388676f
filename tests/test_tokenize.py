"""`/tokenize` and `/detokenize` against a real `parrot serve` (`server_url`): counts equal the
`usage.prompt_tokens` of `/v1` for the same prompt or messages, round trips, the 400s; the SDK's
methods, the LangChain models' token counts (also with the hub unreachable) and LlamaIndex's
tokenizer; the remote engine client's tokenizer and chat-template refusals as 400s.

Every generation is bounded by `max_tokens`: the default model runs on CPU.
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import LLMResult
from llama_index.core.utilities.token_counting import TokenCounter
from pydantic import BaseModel

from parrot_integrations import AsyncParrotClient, InvalidRequestError, NotFoundError, ParrotClient
from parrot_integrations.langchain import ChatParrot, ParrotLLM
from parrot_integrations.llamaindex import Parrot
from parrot_integrations.protocol.openai import ChatCompletionRequest, CompletionRequest
from parrot_server.core.engine_client import EngineInfo, render_chat
from parrot_server.core.remote_engine import RemoteEngineClient, load_tokenizer
from parrot_server.engine.errors import InvalidRequestError as ServerInvalidRequestError
from parrot_server.engine.model.loader import default_model_path

pytestmark = pytest.mark.slow

TEXT = "Parrot counts 12345 tokens, naïvely: ünïcödé & a parrot 🦜 (twice: 🦜)."
MESSAGES = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "Which colour is the sky on a clear day?"},
]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
MAX_CHARS = 1_000_000  # the server's default --max-value-chars
CONTEXT = 2048  # the test server's --max-context-len


@pytest.fixture
def client(server_url):
    with ParrotClient(server_url) as c:
        yield c


@pytest.fixture
def http(server_url):
    with httpx.Client(base_url=server_url, timeout=60) as c:
        yield c


# -- the routes ---------------------------------------------------------------------------------
def test_a_prompt_counts_what_completions_count(client, http):
    out = client.completion(CompletionRequest(prompt=TEXT, max_tokens=1, temperature=0))
    body = http.post("/tokenize", json={"prompt": TEXT}).json()
    assert set(body) == {"count", "max_model_len", "tokens"}  # token_strs only when asked
    assert body["count"] == len(body["tokens"]) == out.usage.prompt_tokens > 0
    assert body["max_model_len"] == CONTEXT
    # The default model's tokenizer adds no special tokens to a text, like the server.
    assert client.tokenize(TEXT, add_special_tokens=False).tokens == body["tokens"]


def test_messages_count_what_chat_completions_count(client):
    out = client.chat_completion(
        ChatCompletionRequest(messages=MESSAGES, max_tokens=1, temperature=0)
    )
    counted = client.tokenize(messages=MESSAGES)
    assert counted.count == out.usage.prompt_tokens
    # The template's turns are counted too, not only the texts.
    assert counted.count > sum(client.tokenize(m["content"]).count for m in MESSAGES)


def test_messages_with_tools_count_what_chat_completions_count(client):
    out = client.chat_completion(
        ChatCompletionRequest(messages=MESSAGES, tools=[TOOL], max_tokens=1, temperature=0)
    )
    counted = client.tokenize(messages=MESSAGES, tools=[TOOL])
    assert counted.count == out.usage.prompt_tokens
    assert counted.count > client.tokenize(messages=MESSAGES).count


def test_detokenize_gives_back_the_text(client):
    assert client.detokenize(client.tokenize(TEXT).tokens) == TEXT
    assert client.detokenize([]) == ""
    # A chat's ids give back its rendered text, special tokens included.
    chat = client.detokenize(client.tokenize(messages=MESSAGES).tokens)
    assert MESSAGES[1]["content"] in chat and "<|im_start|>" in chat


def test_generation_prompt_and_continue_final_message(client):
    with_turn = client.tokenize(messages=MESSAGES).tokens
    without = client.tokenize(messages=MESSAGES, add_generation_prompt=False).tokens
    assert len(without) < len(with_turn) and with_turn[: len(without)] == without
    started = [*MESSAGES, {"role": "assistant", "content": "The sky is"}]
    ids = client.tokenize(messages=started, continue_final_message=True).tokens
    assert client.detokenize(ids).endswith("The sky is")


def test_token_strs(client):
    out = client.tokenize("Hello world", return_token_strs=True)
    assert out.token_strs is not None and len(out.token_strs) == out.count
    # Byte-level BPE pieces: a leading space is spelt "Ġ".
    assert "".join(out.token_strs).replace("Ġ", " ") == "Hello world"


def test_model_is_checked_as_on_v1(client):
    served = client.list_models().data[0].id
    for name in (served, "default"):
        assert client.tokenize(TEXT, model=name).count == client.tokenize(TEXT).count
    with pytest.raises(NotFoundError):
        client.tokenize(TEXT, model="no-such-model")
    with pytest.raises(NotFoundError):
        client.detokenize([1], model="no-such-model")


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/tokenize", {"prompt": "a", "messages": MESSAGES}, "exactly one of prompt"),
        ("/tokenize", {}, "exactly one of prompt"),
        ("/tokenize", {"messages": []}, "messages"),
        ("/tokenize", {"prompt": "a", "add_generation_prompt": True}, "only apply to messages"),
        ("/tokenize", {"prompt": "a", "tools": [TOOL]}, "only apply to messages"),
        (
            "/tokenize",
            {"messages": MESSAGES, "continue_final_message": True, "add_generation_prompt": True},
            "cannot both be true",
        ),
        ("/tokenize", {"messages": MESSAGES, "tools": [TOOL, TOOL]}, "unique"),
        ("/tokenize", {"prompt": "a", "truncate": 3}, "truncate"),
        ("/tokenize", {"prompt": "a" * (MAX_CHARS + 1)}, f"at most {MAX_CHARS}"),
        (
            "/tokenize",
            {"messages": [{"role": "user", "content": "a" * MAX_CHARS}]},
            f"at most {MAX_CHARS}",
        ),
        ("/detokenize", {"tokens": [-1]}, "unknown token ids [-1]"),
        ("/detokenize", {"tokens": [5, 49152]}, "unknown token ids [49152]"),
        ("/detokenize", {"tokens": [10**30]}, "unknown token ids"),
        ("/detokenize", {"tokens": ["x"]}, "tokens"),
        ("/detokenize", {"tokens": [0] * (MAX_CHARS + 1)}, f"at most {MAX_CHARS}"),
    ],
)
def test_bad_input_is_a_400(http, path, body, says):
    response = http.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == 400
    assert says in error["message"]


def test_the_sdk_checks_before_sending(client):
    with pytest.raises(InvalidRequestError, match="exactly one of prompt"):
        client.tokenize()
    with pytest.raises(InvalidRequestError, match="no_such_option"):
        client.tokenize(TEXT, no_such_option=True)


def test_async_twins_and_concurrent_requests_beside_a_generation(server_url, client):
    expected = client.tokenize(TEXT).tokens

    async def main() -> None:
        async with AsyncParrotClient(server_url) as c:
            # Tokenizing concurrently with each other and with a running generation.
            generation = c.completion(CompletionRequest(prompt=TEXT, max_tokens=8, temperature=0))
            answers = await asyncio.gather(generation, *(c.tokenize(TEXT) for _ in range(16)))
            assert all(a.tokens == expected for a in answers[1:])
            assert await c.detokenize(expected) == TEXT
            counted = await c.tokenize(messages=MESSAGES, return_token_strs=True)
            assert counted.token_strs is not None and len(counted.token_strs) == counted.count

    asyncio.run(main())


# -- LangChain ----------------------------------------------------------------------------------
LC_MESSAGES = [SystemMessage(MESSAGES[0]["content"]), HumanMessage(MESSAGES[1]["content"])]


class Weather(BaseModel):
    """The weather in a city."""

    city: str


def test_chat_parrot_counts_what_the_server_counts(server_url, client):
    llm = ChatParrot(base_url=server_url, max_tokens=1, temperature=0)
    assert (
        llm.get_num_tokens_from_messages(LC_MESSAGES)
        == (llm.invoke(LC_MESSAGES).usage_metadata["input_tokens"])
    )
    with_tools = llm.get_num_tokens_from_messages(LC_MESSAGES, tools=[Weather])
    answer = llm.bind_tools([Weather]).invoke(LC_MESSAGES)
    assert with_tools == answer.usage_metadata["input_tokens"]
    assert with_tools > llm.get_num_tokens_from_messages(LC_MESSAGES)
    assert llm.get_num_tokens_from_messages([]) == 0
    assert llm.get_token_ids(TEXT) == client.tokenize(TEXT).tokens
    assert llm.get_num_tokens(TEXT) == client.tokenize(TEXT).count


def test_custom_get_token_ids_still_wins(server_url):
    llm = ChatParrot(base_url=server_url, custom_get_token_ids=lambda text: [7] * len(text))
    assert llm.get_num_tokens("abc") == 3


class _Results(BaseCallbackHandler):
    def __init__(self) -> None:
        self.results: list[LLMResult] = []

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self.results.append(response)


def test_parrot_llm_counts_the_prompt_it_sends(server_url):
    llm = ParrotLLM(base_url=server_url, max_tokens=1, temperature=0)
    messages = [*LC_MESSAGES, AIMessage("Blue."), HumanMessage("And at night?")]
    seen = _Results()
    llm.invoke(messages, config={"callbacks": [seen]})
    (result,) = seen.results
    assert (
        llm.get_num_tokens_from_messages(messages)
        == (result.llm_output["token_usage"]["prompt_tokens"])
    )
    with pytest.raises(ValueError, match="no tools"):
        llm.get_num_tokens_from_messages(messages, tools=[Weather])


def test_counting_never_reaches_a_hub(server_url, client):
    """LangChain's own counting downloads GPT-2's tokenizer; offline it fails or hangs. The
    adapters ask the Parrot server only: with the hub unreachable the counts still come, and
    are the server's."""
    code = (
        "import sys\n"
        "from langchain_core.messages import HumanMessage\n"
        "from parrot_integrations.langchain import ChatParrot\n"
        "llm = ChatParrot(base_url=sys.argv[1])\n"
        "print(llm.get_num_tokens(sys.argv[2]))\n"
        "print(llm.get_num_tokens_from_messages([HumanMessage(sys.argv[2])]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-c", code, server_url, TEXT],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    text_count, chat_count = map(int, done.stdout.split())
    assert text_count == client.tokenize(TEXT).count > 0
    assert chat_count == client.tokenize(messages=[{"role": "user", "content": TEXT}]).count


# -- LlamaIndex ---------------------------------------------------------------------------------
def test_llamaindex_tokenizer_counts_what_the_server_counts(server_url, client):
    llm = Parrot(api_base=server_url, is_chat_model=False, max_tokens=1, temperature=0)
    ids = llm.tokenizer(TEXT)
    assert ids == llm.tokenizer.encode(TEXT) == client.tokenize(TEXT).tokens
    # /v1/completions counts the same prompt alike.
    assert len(ids) == llm.complete(TEXT).additional_kwargs["prompt_tokens"]
    # What `Settings.tokenizer = llm.tokenizer` gives LlamaIndex's counters.
    assert TokenCounter(tokenizer=llm.tokenizer).get_string_tokens(TEXT) == len(ids)


# -- the engine clients' tokenizer ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    """The default model's tokenizer, as a remote engine client loads it."""
    return load_tokenizer(default_model_path())


def test_remote_client_tokenizes_as_the_engine(tokenizer):
    """The remote client tokenizes locally: no engine is reached for these."""
    info = EngineInfo("SmolLM2-135M-Instruct", "unused", 2048, 4096, 8)
    tok = tokenizer

    async def main() -> None:
        remote = RemoteEngineClient("http://127.0.0.1:9", tok, info)
        try:
            ids = await remote.encode(TEXT)
            assert ids == tok.encode(TEXT, add_special_tokens=False)
            assert await remote.decode(ids) == TEXT
            assert await remote.token_strs(ids) == tok.convert_ids_to_tokens(ids)
            with pytest.raises(ServerInvalidRequestError, match="unknown token ids"):
                await remote.decode([len(tok)])
        finally:
            await remote.shutdown()

    asyncio.run(main())


def test_a_chat_the_template_refuses_is_an_invalid_request(tokenizer):
    tok = copy.deepcopy(tokenizer)  # the loaded one is shared
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(ServerInvalidRequestError, match="roles must alternate"):
        render_chat(tok, MESSAGES, None)

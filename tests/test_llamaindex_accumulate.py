"""`ParrotAccumulate` against a real `parrot serve`: independent answers as one program, the
result equal to LlamaIndex's `Accumulate` over the same chunks."""

from __future__ import annotations

import pytest
from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT
from llama_index.core.response_synthesizers import Accumulate

from parrot_integrations.llamaindex import Parrot, ParrotAccumulate

pytestmark = pytest.mark.slow

QUERY = "What is the main topic of the text?"
CHUNKS = [
    "Honeybees tell each other where flowers are with the waggle dance.",
    "Sourdough bread rises thanks to wild yeasts living in a starter.",
    "The tortoise beat the hare: slow and steady wins the race.",
]


@pytest.fixture
def llm(server_url):
    llm = Parrot(api_base=server_url, temperature=0.0, max_tokens=24)
    yield llm
    llm.close()


async def test_same_result_as_llamaindex_in_one_submit(llm):
    # Both with their defaults: LlamaIndex's chat QA prompt (a system message, then the user's).
    expected = Accumulate(llm=llm).get_response(QUERY, CHUNKS)
    assert expected.count("Response ") == 3

    seen: list[tuple[str, str]] = []
    llm.client._http.event_hooks["request"].append(lambda r: seen.append((r.method, r.url.path)))
    ours = ParrotAccumulate(llm=llm)
    assert ours.get_response(QUERY, CHUNKS) == expected
    assert ours.last_plan == 3
    assert sum(m == "POST" and p.endswith("/programs") for m, p in seen) == 1
    assert not any(p.startswith("/v1/") for _, p in seen)

    assert await ours.aget_response(QUERY, CHUNKS) == expected


def test_explicit_text_prompt_as_llamaindex(llm):
    # A text prompt passed explicitly is one user turn, as LlamaIndex sends it.
    text = DEFAULT_TEXT_QA_PROMPT
    expected = Accumulate(llm=llm, text_qa_template=text).get_response(QUERY, CHUNKS)
    assert ParrotAccumulate(llm=llm, text_qa_template=text).get_response(QUERY, CHUNKS) == expected


def test_streaming_is_refused_as_llamaindex_does(llm):
    with pytest.raises(ValueError, match="Unable to stream"):
        ParrotAccumulate(llm=llm, streaming=True).get_response(QUERY, CHUNKS)

"""What the shipped synthesizers share: LlamaIndex prompts as native semantic functions, and
one program per query (submitted once, then the answer read or streamed).

A prompt becomes a template by formatting it the way LlamaIndex's `LLM.predict` formats it for
a chat model (`_get_messages`: the same selector choice, so LlamaIndex's chat prompts by
default; `system_prompt`; output parser) with stand-in strings for the values that are
variables, then cutting the stand-ins out for placeholders. The messages run as a `chat=True`
call: a leading system message becomes the call's constant system turn (`system=`), the one
user message its template, so the server renders exactly what `/v1/chat/completions` renders
for the messages LlamaIndex sends. What a native call cannot express is refused rather than
sent differently: a system message that is not the first message (for instance
`llm.system_prompt` together with a prompt that has its own system message: two system
messages), a system message that uses a prompt variable, or more than one user message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from llama_index.core.base.llms.types import MessageRole
from llama_index.core.llms import LLM
from llama_index.core.prompts import BasePromptTemplate

from ..errors import InvalidRequestError
from ..protocol.native import Criteria, SamplingOptions
from ..semantic import SemanticFunction, SemanticVariable
from .llm import Parrot

_SAMPLING_EXTRAS = ("top_p", "top_k", "stop", "seed", "ignore_eos")


def parrot_llm(llm: LLM | None, who: str) -> Parrot:
    if not isinstance(llm, Parrot):
        raise InvalidRequestError(
            f"{who} needs a Parrot LLM (llm=Parrot(...)), got {type(llm).__name__}"
        )
    return llm


def _stand_in(name: str) -> str:
    return f"\x00parrot:{name}\x00"


def native_function(
    llm: Parrot, prompt: BasePromptTemplate, fills: dict[str, str], name: str
) -> SemanticFunction:
    """`prompt` as a chat semantic function ending in `{{output:answer}}`. `fills` maps each
    prompt variable to template text (usually placeholders such as `{{input:query}}`)."""
    messages = llm._get_messages(prompt, **{k: _stand_in(k) for k in fills})
    system: str | None = None
    if messages and messages[0].role == MessageRole.SYSTEM:
        system = messages[0].content or ""
        messages = messages[1:]
    if len(messages) != 1 or messages[0].role != MessageRole.USER:
        roles = ([MessageRole.SYSTEM.value] if system is not None else []) + [
            m.role.value for m in messages
        ]
        raise InvalidRequestError(
            f"{name}: the prompt renders messages {roles}; a native chat call is at most one "
            "system message (the first) and one user message (a prompt with its own system "
            "message cannot be combined with llm.system_prompt)"
        )
    if system is not None:
        used = [key for key in fills if _stand_in(key) in system]
        if used:
            raise InvalidRequestError(
                f"{name}: the prompt's system message uses {used}; a native system turn is "
                "constant text (put the variables in the user message)"
            )
    text = messages[0].content or ""
    for key, fragment in fills.items():
        if _stand_in(key) not in text:
            raise InvalidRequestError(f"{name}: the prompt does not use {{{key}}}")
        text = text.replace(_stand_in(key), fragment)
    return SemanticFunction(
        text + "{{output:answer}}",
        name=name,
        chat=True,
        system=system,
        sampling=SamplingOptions(**sampling(llm)),
    )


def sampling(llm: Parrot) -> dict[str, Any]:
    """The LLM's sampling for every output. max_tokens is what LlamaIndex reserves for an
    answer when packing prompts (metadata.num_output)."""
    extras = {k: v for k, v in llm.additional_kwargs.items() if k in _SAMPLING_EXTRAS}
    if isinstance(extras.get("stop"), str):
        extras["stop"] = [extras["stop"]]
    return {"max_tokens": llm.metadata.num_output, "temperature": llm.temperature, **extras}


Build = Callable[[Any], Any]  # program builder -> the answer's variable(s)


def _submit(llm: Parrot, build: Build) -> tuple[Any, Any]:
    """A new session with `build`'s calls submitted as one program: (session, what build gave).
    Nothing is left open when building or submitting fails."""
    session = llm.client.session()
    try:
        with session.program() as program:
            built = build(program)
    except BaseException:
        session.close()
        raise
    return session, built


async def _asubmit(llm: Parrot, build: Build) -> tuple[Any, Any]:
    session = await llm.aclient.session()
    try:
        async with session.program() as program:
            built = build(program)
    except BaseException:
        await session.aclose()
        raise
    return session, built


def run(llm: Parrot, build: Build, streaming: bool, criteria: Criteria) -> str | Iterator[str]:
    """Submits `build`'s calls as one program; the answer (or its stream). The session is
    closed once the answer has been read."""
    session, answer = _submit(llm, build)
    if streaming:
        return _stream(session, answer, criteria)
    with session:
        return answer.get(criteria=criteria)


def run_all(llm: Parrot, build: Build, criteria: Criteria) -> list[str]:
    """As `run` for a program with several answers (all computed server-side meanwhile)."""
    session, answers = _submit(llm, build)
    with session:
        return [a.get(criteria=criteria) for a in answers]


def _stream(session: Any, answer: SemanticVariable, criteria: Criteria) -> Iterator[str]:
    with session:
        yield from answer.stream(criteria=criteria)


async def arun(
    llm: Parrot, build: Build, streaming: bool, criteria: Criteria
) -> str | AsyncIterator[str]:
    session, answer = await _asubmit(llm, build)
    if streaming:
        return _astream(session, answer, criteria)
    async with session:
        return await answer.aget(criteria=criteria)


async def arun_all(llm: Parrot, build: Build, criteria: Criteria) -> list[str]:
    session, answers = await _asubmit(llm, build)
    async with session:
        return list(await asyncio.gather(*(a.aget(criteria=criteria) for a in answers)))


async def _astream(
    session: Any, answer: SemanticVariable, criteria: Criteria
) -> AsyncIterator[str]:
    async with session:
        async for delta in answer.astream(criteria=criteria):
            yield delta

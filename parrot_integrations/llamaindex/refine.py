"""`ParrotRefine` and `ParrotCompactAndRefine`: LlamaIndex's refine chain as one program.

Refine answers from the first chunk, then rewrites the answer with each next chunk: a chain
of dependent calls, which LlamaIndex drives from the client one request at a time. Here the
chain is built up front (the same chunk splitting, the same prompts) and submitted as one
native program: each answer is a Semantic Variable feeding the next step, so the server runs
the next step the moment the previous answer exists, with no client round trip in between.

Where a static chain must differ from LlamaIndex's dynamic loop:

- LlamaIndex re-splits a chunk when the refine prompt, with the actual previous answer in it,
  would overflow its context window. A program is fixed before any answer exists, so chunks
  are split only as LlamaIndex first splits them (against its biggest prompt); the server
  measures the real prompt, and one that cannot fit the model's window fails with its reason.
- When a step answers nothing (an empty string), LlamaIndex keeps the previous answer; the
  chain passes the empty answer on.
- `structured_answer_filtering`, `output_cls` and multimodal synthesis are not supported.

When neither case arises (the usual one) the chains are the same, and at temperature 0 the
answers are equal. Prompts: LlamaIndex's own defaults (`DEFAULT_TEXT_QA_PROMPT_SEL`,
`DEFAULT_REFINE_PROMPT_SEL`), which for a chat LLM pick the chat prompts: the QA prompt's system
message becomes the call's system turn (see `_native`); the refine prompt is one user message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.prompts.prompt_utils import get_biggest_prompt
from llama_index.core.response_synthesizers import CompactAndRefine, Refine
from llama_index.core.types import RESPONSE_TEXT_TYPE

from ..errors import InvalidRequestError
from ..protocol.native import Criteria
from ..semantic import SemanticVariable
from . import _native
from .llm import Parrot

EMPTY_RESPONSE = "Empty Response"  # what LlamaIndex's refine answers when nothing was said


class ParrotRefine(Refine):
    """Drop-in for `Refine` with a `Parrot` LLM: the whole chain in one program per query.
    `streaming=True` streams the final answer."""

    def __init__(
        self,
        llm: Parrot | None = None,
        text_qa_template: BasePromptTemplate | None = None,
        refine_template: BasePromptTemplate | None = None,
        streaming: bool = False,
        criteria: Criteria = Criteria.LATENCY,
        **kwargs: Any,
    ) -> None:
        unsupported = ("output_cls", "structured_answer_filtering", "program_factory", "multimodal")
        if any(kwargs.get(k) for k in unsupported):
            raise InvalidRequestError(f"{type(self).__name__} does not support {unsupported}")
        super().__init__(
            llm=llm,
            text_qa_template=text_qa_template,
            refine_template=refine_template,
            streaming=streaming,
            **kwargs,
        )
        _native.parrot_llm(self._llm, type(self).__name__)
        self._criteria = Criteria(criteria)
        self.last_plan: int = 0  # calls in the last query's chain

    @property
    def parrot(self) -> Parrot:
        return self._llm  # type: ignore[return-value]

    def plan(self, query_str: str, text_chunks: Sequence[str]) -> list[str]:
        """The chunks of the chain, one call each: every chunk split to fit the biggest of the
        two prompts, as LlamaIndex's refine loop splits them first."""
        biggest = get_biggest_prompt([self._text_qa_template, self._refine_template])
        return [
            piece
            for chunk in text_chunks
            for piece in self._prompt_helper.repack(
                biggest, [chunk], llm=self._llm, padding=self._response_padding_size
            )
        ]

    def _build(
        self, target: Any, query_str: str, chunks: Sequence[str], prev_response: str | None
    ) -> SemanticVariable | str | None:
        query = {"query_str": "{{input:query}}"}
        qa = _native.native_function(
            self.parrot,
            self._text_qa_template,
            query | {"context_str": "{{input:context}}"},
            name="refine_qa",
        )
        refine = _native.native_function(
            self.parrot,
            self._refine_template,
            query | {"context_msg": "{{input:context}}", "existing_answer": "{{input:existing}}"},
            name="refine_step",
        )
        q = target.variable(query_str, name="query")
        answer: SemanticVariable | str | None = prev_response
        for chunk in chunks:
            if answer is None:
                answer = qa(target, query=q, context=chunk)
            else:
                answer = refine(target, query=q, context=chunk, existing=answer)
        self.last_plan = len(chunks)
        return answer

    def get_response(
        self,
        query_str: str,
        text_chunks: Sequence[str],
        prev_response: RESPONSE_TEXT_TYPE | None = None,
        **response_kwargs: Any,
    ) -> RESPONSE_TEXT_TYPE:
        chunks = self.plan(query_str, text_chunks)
        if not chunks:
            return prev_response or EMPTY_RESPONSE
        answer = _native.run(
            self.parrot,
            lambda p: self._build(p, query_str, chunks, _text(prev_response)),
            self._streaming,
            self._criteria,
        )
        return answer or EMPTY_RESPONSE

    async def aget_response(
        self,
        query_str: str,
        text_chunks: Sequence[str],
        prev_response: RESPONSE_TEXT_TYPE | None = None,
        **response_kwargs: Any,
    ) -> RESPONSE_TEXT_TYPE:
        chunks = self.plan(query_str, text_chunks)
        if not chunks:
            return prev_response or EMPTY_RESPONSE
        answer = await _native.arun(
            self.parrot,
            lambda p: self._build(p, query_str, chunks, _text(prev_response)),
            self._streaming,
            self._criteria,
        )
        return answer or EMPTY_RESPONSE


class ParrotCompactAndRefine(ParrotRefine, CompactAndRefine):
    """Drop-in for `CompactAndRefine` (LlamaIndex's default synthesizer): the chunks are first
    packed together to fill the prompt (LlamaIndex's own packing), then refined as one
    program."""

    def get_response(
        self,
        query_str: str,
        text_chunks: Sequence[str],
        prev_response: RESPONSE_TEXT_TYPE | None = None,
        **response_kwargs: Any,
    ) -> RESPONSE_TEXT_TYPE:
        packed = self._make_compact_text_chunks(query_str, text_chunks)
        return super().get_response(query_str, packed, prev_response, **response_kwargs)

    async def aget_response(
        self,
        query_str: str,
        text_chunks: Sequence[str],
        prev_response: RESPONSE_TEXT_TYPE | None = None,
        **response_kwargs: Any,
    ) -> RESPONSE_TEXT_TYPE:
        packed = self._make_compact_text_chunks(query_str, text_chunks)
        return await super().aget_response(query_str, packed, prev_response, **response_kwargs)


def _text(response: RESPONSE_TEXT_TYPE | None) -> str | None:
    if response is None or isinstance(response, str):
        return response
    raise InvalidRequestError("prev_response must be a string (a finished answer)")

"""`ParrotAccumulate`: LlamaIndex's accumulate synthesizer as one program.

Accumulate answers the query from every chunk independently and lists the answers. The calls
do not depend on each other, so LlamaIndex sends them one by one (or concurrently with
`use_async`); here they are one program: one request, the server batches them as a task group
and shares the prompt's static prefix, and the client reads the answers. The chunks are split
as LlamaIndex splits them, the answers are formatted by LlamaIndex's own `_format_response`, so
at temperature 0 the result equals LlamaIndex's. The QA prompt defaults to LlamaIndex's own
selector, which for a chat LLM picks the chat prompt (its system message is the call's system
turn, see `_native`). As LlamaIndex's, accumulate cannot stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.response_synthesizers import Accumulate
from llama_index.core.types import RESPONSE_TEXT_TYPE

from ..errors import InvalidRequestError
from ..protocol.native import Criteria
from ..semantic import SemanticVariable
from . import _native
from .llm import Parrot

SEPARATOR = "\n---------------------\n"  # LlamaIndex's default between answers


class ParrotAccumulate(Accumulate):
    """Drop-in for `Accumulate` with a `Parrot` LLM: all answers in one program per query."""

    def __init__(
        self,
        llm: Parrot | None = None,
        text_qa_template: BasePromptTemplate | None = None,
        criteria: Criteria = Criteria.LATENCY,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("output_cls") is not None or kwargs.get("multimodal"):
            raise InvalidRequestError("ParrotAccumulate does not support output_cls/multimodal")
        super().__init__(llm=llm, text_qa_template=text_qa_template, **kwargs)
        _native.parrot_llm(self._llm, "ParrotAccumulate")
        self._criteria = Criteria(criteria)
        self.last_plan: int = 0  # calls of the last query

    @property
    def parrot(self) -> Parrot:
        return self._llm  # type: ignore[return-value]

    def plan(self, query_str: str, text_chunks: Sequence[str]) -> list[str]:
        """One call per piece: each chunk split to fit the QA prompt, as LlamaIndex does."""
        template = self._text_qa_template.partial_format(query_str=query_str)
        return [
            piece
            for chunk in text_chunks
            for piece in self._prompt_helper.repack(template, [chunk], llm=self._llm)
        ]

    def _build(self, target: Any, query_str: str, pieces: list[str]) -> list[SemanticVariable]:
        qa = _native.native_function(
            self.parrot,
            self._text_qa_template,
            {"query_str": "{{input:query}}", "context_str": "{{input:context}}"},
            name="accumulate_qa",
        )
        query = target.variable(query_str, name="query")
        self.last_plan = len(pieces)
        return [qa(target, query=query, context=piece) for piece in pieces]

    def get_response(
        self,
        query_str: str,
        text_chunks: Sequence[str],
        separator: str = SEPARATOR,
        **response_kwargs: Any,
    ) -> RESPONSE_TEXT_TYPE:
        if self._streaming:
            raise ValueError("Unable to stream in Accumulate response mode")
        pieces = self.plan(query_str, text_chunks)
        if not pieces:
            return self._format_response([], separator)
        answers = _native.run_all(
            self.parrot, lambda p: self._build(p, query_str, pieces), self._criteria
        )
        return self._format_response(answers, separator)

    async def aget_response(
        self,
        query_str: str,
        text_chunks: Sequence[str],
        separator: str = SEPARATOR,
        **response_kwargs: Any,
    ) -> RESPONSE_TEXT_TYPE:
        if self._streaming:
            raise ValueError("Unable to stream in Accumulate response mode")
        pieces = self.plan(query_str, text_chunks)
        if not pieces:
            return self._format_response([], separator)
        answers = await _native.arun_all(
            self.parrot, lambda p: self._build(p, query_str, pieces), self._criteria
        )
        return self._format_response(answers, separator)

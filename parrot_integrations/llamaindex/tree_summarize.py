"""`ParrotTreeSummarize`: LlamaIndex's tree_summarize shipped to Parrot as one program.

LlamaIndex's `TreeSummarize` makes one LLM request per summary and waits for each level before
building the next: its client drives the tree. Here the whole tree is built up front from the
same prompt and the same repacking of the retrieved chunks, and submitted as one native
`Program`: every summary is a Semantic Variable feeding the next level, so the server starts
each call the moment its inputs exist, runs the leaves as one task group, shares the prompt's
static prefix in its KV cache, and the client makes one request (plus the read of the answer).

Where a static DAG must differ from LlamaIndex's dynamic recursion: LlamaIndex repacks the
summaries of one level by their measured length before the next; a program is fixed before
any summary exists, so the fan-in of every upper level is the number of summaries that fit in
one prompt if each were `num_output` tokens long (the worst case; never more than LlamaIndex
would pack). When LlamaIndex's repack would put all summaries of a level in one prompt (the
usual case: a few retrieved chunks), both trees are the same; then at temperature 0 the answers
are equal, because each call renders the same messages through the model's chat template.
(LlamaIndex strips each summary before joining them with blank lines; the server joins them as
generated. Instruct models' answers carry no surrounding whitespace, so this
only matters for an answer that starts or ends with whitespace.)

Prompts: `summary_template` as in `TreeSummarize`, by default LlamaIndex's own selector
(`DEFAULT_TREE_SUMMARIZE_PROMPT_SEL`), which for a chat LLM such as `Parrot` picks the chat
prompt: its system message becomes each call's system turn and its user message the template
(see `_native`), so each call renders what LlamaIndex sends. A text prompt passed explicitly is
one user turn, as LlamaIndex sends it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.response_synthesizers import TreeSummarize
from llama_index.core.types import RESPONSE_TEXT_TYPE

from ..errors import InvalidRequestError
from ..protocol.native import Criteria
from ..semantic import SemanticFunction, SemanticVariable
from . import _native
from .llm import Parrot

_SEPARATOR = "\n\n"  # what LlamaIndex's repack joins summaries with


class ParrotTreeSummarize(TreeSummarize):
    """Drop-in for `TreeSummarize` with a `Parrot` LLM: one program per query.

    ```python
    engine = index.as_query_engine(
        llm=Parrot(temperature=0), response_synthesizer=ParrotTreeSummarize(llm=llm)
    )
    ```
    `streaming=True` streams the final answer as it is generated. `output_cls` and multimodal
    synthesis are not supported (they need LLM-side structured prediction).
    """

    def __init__(
        self,
        llm: Parrot | None = None,
        summary_template: BasePromptTemplate | None = None,
        streaming: bool = False,
        criteria: Criteria = Criteria.LATENCY,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("output_cls") is not None or kwargs.get("multimodal"):
            raise InvalidRequestError("ParrotTreeSummarize does not support output_cls/multimodal")
        super().__init__(
            llm=llm,
            summary_template=summary_template,
            streaming=streaming,
            **kwargs,
        )
        _native.parrot_llm(self._llm, "ParrotTreeSummarize")
        self._criteria = Criteria(criteria)
        self.last_plan: list[int] = []  # calls per level of the last query (leaves first)

    @property
    def parrot(self) -> Parrot:
        return self._llm  # type: ignore[return-value]

    # -- the program ------------------------------------------------------------------------------
    def _function(self, n_inputs: int) -> SemanticFunction:
        """The summary prompt with its context = `n_inputs` variables joined by blank lines (1
        for a leaf) and its query a variable (so braces in it are just text)."""
        context = _SEPARATOR.join(f"{{{{input:s{i}}}}}" for i in range(n_inputs))
        return _native.native_function(
            self.parrot,
            self._summary_template,
            {"query_str": "{{input:query}}", "context_str": context},
            name=f"tree_summarize_{n_inputs}",
        )

    def fan_in(self, query_str: str) -> int:
        """Summaries per upper-level call: as many as fit in the summary prompt if each were
        num_output tokens long (LlamaIndex's own token counter and padding)."""
        template = self._summary_template.partial_format(query_str=query_str)
        room = self._prompt_helper._get_available_chunk_size(template, llm=self._llm)
        separator = len(self._prompt_helper._token_counter.tokenizer(_SEPARATOR))
        return max(2, room // (self.parrot.metadata.num_output + separator))

    def plan(
        self, query_str: str, text_chunks: Sequence[str]
    ) -> tuple[list[str], list[list[list[int]]]]:
        """(leaf chunks, upper levels): leaves are LlamaIndex's repacked chunks (one call each);
        each upper level lists, per call, which outputs of the level below it joins."""
        template = self._summary_template.partial_format(query_str=query_str)
        leaves = self._prompt_helper.repack(template, text_chunks=text_chunks, llm=self._llm)
        k = self.fan_in(query_str)
        levels: list[list[list[int]]] = []
        width = len(leaves)
        while width > 1:
            groups = math.ceil(width / k)
            size = math.ceil(width / groups)  # balanced: no level ends with a lone straggler
            levels.append([list(range(i, min(i + size, width))) for i in range(0, width, size)])
            width = len(levels[-1])
        return leaves, levels

    def _build(self, target: Any, query_str: str, text_chunks: Sequence[str]) -> SemanticVariable:
        """Adds the whole tree to a program builder; returns the answer's variable."""
        leaves, levels = self.plan(query_str, text_chunks)
        query = target.variable(query_str, name="query")
        leaf = self._function(1)
        outputs = [leaf(target, query=query, s0=chunk) for chunk in leaves]
        self.last_plan = [len(outputs)] + [len(level) for level in levels]
        functions: dict[int, SemanticFunction] = {}
        for level in levels:
            nxt = []
            for group in level:
                if len(group) not in functions:
                    functions[len(group)] = self._function(len(group))
                fn = functions[len(group)]
                inputs = {f"s{i}": outputs[j] for i, j in enumerate(group)}
                nxt.append(fn(target, query=query, **inputs))
            outputs = nxt
        return outputs[0]

    # -- LlamaIndex's entry points ---------------------------------------------------------------
    def get_response(
        self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any
    ) -> RESPONSE_TEXT_TYPE:
        def build(program: Any) -> SemanticVariable:
            return self._build(program, query_str, text_chunks)

        return _native.run(self.parrot, build, self._streaming, self._criteria)

    async def aget_response(
        self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any
    ) -> RESPONSE_TEXT_TYPE:
        def build(program: Any) -> SemanticVariable:
            return self._build(program, query_str, text_chunks)

        return await _native.arun(self.parrot, build, self._streaming, self._criteria)

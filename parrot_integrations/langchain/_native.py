"""One LangChain model call as one native semantic call that the server runs exactly as `/v1`
would run the same call.

The request is first built by the model itself (`_request`: the same fields, defaults and
validation as a `/v1` request), then translated:

- chat: the messages as the server reads them (`ChatMessage.to_template`); at most one
  leading system message (a non-empty constant: the call's `system` turn) and then exactly one
  user message, whose text becomes the template. The server renders a `chat=True` call with
  the same chat template, so the prompt is the one `/v1/chat/completions` renders. Any other
  conversation (several human/ai turns, a history) is refused: a native call's assistant turns
  are its own outputs, so earlier, fixed answers cannot be expressed.
- completion: the prompt text is the template of a plain (`chat=False`) call.
- sampling: the fields `/v1` maps to the engine, mapped the same way (`top_p=0` is greedy;
  `max_tokens` unset is the native `max_tokens=None`: to the end of the context window, the
  limit the server computes for both APIs alike; `response_format`'s schema is the output's
  `json_schema`, so a structured step ships with its constraint). Tools cannot be offered to
  a native call: a call with tools goes through `/v1`.

Values produced by earlier calls of the same program appear in the text as stand-ins (see
`StandIns`) and become `{{input:...}}` placeholders. Constant text containing `{{` or `}}`
(reserved by the template grammar) travels as an input variable instead, so nothing is lost.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
    LLMResult,
)
from pydantic import ValidationError

from ..errors import ParrotError
from ..protocol.native import (
    CallSpec,
    Criteria,
    OutputBinding,
    OutputUsage,
    SamplingOptions,
    VariableCreate,
)
from ..protocol.openai import ChatCompletionRequest, CompletionRequest, SamplingRequest
from ..protocol.penalties import Penalties
from ..semantic import SemanticVariable
from ..template import TemplateError, parse_template
from ..variable import new_id
from . import _convert
from ._convert import PROVIDER

OUTPUT = "out"
_MODEL_ALIASES = (None, "", "default")  # names /v1 takes for the served model without a check
# Request fields a native call expresses (`sampling`, the messages or prompt), or that change
# nothing in the output; a request setting any other field (n, logprobs, echo, ...) goes
# through /v1.
_MAPPED = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "stop",
        "stream",
        "response_format",
        "criteria",
        "session_id",
        "ignore_eos",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
    }
    | set(Penalties.model_fields)  # native outputs take the penalties, min_p and logit_bias
)


class NotNative(Exception):
    """The call cannot be one native call that behaves as the `/v1` request would. With
    `needs_values`, it can once the stand-ins are replaced by their values."""

    def __init__(self, reason: str, needs_values: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.needs_values = needs_values


class StandIns:
    """Unique marker strings standing for values not computed yet, so LangChain's own prompt
    formatting can run before they exist. The marker holds a NUL and a per-run token: it
    cannot come from user text, and a marker that a formatter altered is noticed."""

    def __init__(self) -> None:
        self._token = uuid.uuid4().hex[:8]
        self._pattern = re.compile(f"\x00parrot-{self._token}-[0-9]+\x00")
        self.variables: dict[str, SemanticVariable] = {}
        self._by_id: dict[str, str] = {}

    def of(self, var: SemanticVariable) -> str:
        marker = self._by_id.get(var.id)
        if marker is None:
            marker = f"\x00parrot-{self._token}-{len(self.variables)}\x00"
            self._by_id[var.id] = marker
            self.variables[marker] = var
        return marker

    def split(self, text: str) -> Iterator[tuple[str, SemanticVariable | None]]:
        """(literal text, the variable after it or None at the end)."""
        pos = 0
        for m in self._pattern.finditer(text):
            yield text[pos : m.start()], self.variables[m.group(0)]
            pos = m.end()
        yield text[pos:], None

    def fill(self, text: str, value: Callable[[SemanticVariable], str]) -> str:
        return self._pattern.sub(lambda m: value(self.variables[m.group(0)]), text)

    def used_in(self, text: str) -> bool:
        """Whether `text` holds a (possibly altered: escaped, upper-cased) marker."""
        return bool(self.variables) and ("\x00" in text or self._token in text)


@dataclass(frozen=True)
class NativeCall:
    """A call ready to join a program: `inputs` maps placeholders to variables, or to text
    sent as a new variable with the program."""

    template: str
    inputs: dict[str, SemanticVariable | str]
    sampling: SamplingOptions
    criteria: Criteria | None
    chat: bool
    system: str | None = None

    def spec(self, call_id: str, inputs: dict[str, str], task_group: str | None) -> CallSpec:
        out = OutputBinding(var=new_id(OUTPUT), sampling=self.sampling, criteria=self.criteria)
        return CallSpec(
            id=call_id,
            template=self.template,
            inputs=inputs,
            outputs={OUTPUT: out},
            chat=self.chat,
            system=self.system,
            task_group=task_group,
        )

    def add_to(self, program: Any, task_group: str | None = None) -> SemanticVariable:
        """Collect the call into an open program builder; returns its output variable."""
        variables: list[VariableCreate] = []
        inputs: dict[str, str] = {}
        for name, source in self.inputs.items():
            if isinstance(source, str):
                variables.append(VariableCreate(id=new_id(name), value=source))
                inputs[name] = variables[-1].id
            else:
                inputs[name] = source.id
        call_id = new_id("lc")
        spec = self.spec(call_id, inputs, task_group)
        program._submit_call(variables, spec)
        return SemanticVariable(
            program.session, spec.outputs[OUTPUT].var, producer=call_id, program=program
        )

    def checked(self) -> NativeCall:
        """Validated as the server will (template grammar, field limits), before any request."""
        try:
            parse_template(self.template)
            self.spec("check", {k: "v" for k in self.inputs}, None)
        except (TemplateError, ValidationError) as exc:
            raise NotNative(f"not a valid native call: {exc}") from None
        return self


# -- translation --------------------------------------------------------------------------------
def sampling(req: SamplingRequest) -> SamplingOptions:
    """The request's sampling as `/v1` maps it to the engine (server/openai_service.py)."""
    top_p = 1.0 if req.top_p is None else req.top_p
    top_k = -1 if req.top_k is None else req.top_k
    if top_p == 0:  # OpenAI's top_p=0 keeps only the most likely token
        top_p, top_k = 1.0, 1
    return SamplingOptions(
        max_tokens=req.max_new_tokens,  # None: to the end of the context window, as /v1
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=top_p,
        top_k=top_k,
        stop=req.stop_list,
        seed=req.seed,
        ignore_eos=req.ignore_eos,
        # response_format's schema: the output follows it as under /v1
        json_schema=req.response_format.schema_text if req.response_format else None,
        **req.model_dump(include=set(Penalties.model_fields)),
    )


def _request(model: Any, first: Any, stop: list[str] | None, kwargs: dict) -> Any:
    try:
        req = model._request(first, stop, False, **kwargs)
    except ParrotError as err:  # run through /v1, which raises it as usual
        raise NotNative(f"invalid request: {err.message}") from None
    if req.model not in _MODEL_ALIASES:
        raise NotNative(
            f"model={req.model!r}: /v1 checks the name, a native call has none; leave the "
            "model unset (the server's one model) to ship this call"
        )
    if req.session_id is not None:
        raise NotNative("session_id: the call belongs to that session, not to a program's")
    unmapped = sorted(req.model_dump(exclude_defaults=True).keys() - _MAPPED)
    if unmapped:
        raise NotNative(f"{', '.join(unmapped)}: a native call has no such field")
    return req


def _template(text: str, stand_ins: StandIns | None, inputs: dict[str, Any]) -> str:
    def literal(piece: str) -> str:
        if stand_ins is not None and stand_ins.used_in(piece):
            raise NotNative(
                "a computed value was altered by formatting (a filter or format spec)",
                needs_values=True,
            )
        if "{{" not in piece and "}}" not in piece:
            return piece
        return placeholder(piece)

    def placeholder(source: SemanticVariable | str) -> str:
        name = f"v{len(inputs)}"
        inputs[name] = source
        return f"{{{{input:{name}}}}}"

    if stand_ins is None:
        return literal(text)
    parts = []
    for piece, var in stand_ins.split(text):
        parts.append(literal(piece))
        if var is not None:
            parts.append(placeholder(var))
    return "".join(parts)


def chat_call(
    model: Any,
    messages: list[BaseMessage],
    stop: list[str] | None,
    kwargs: dict,
    stand_ins: StandIns | None = None,
) -> NativeCall:
    req: ChatCompletionRequest = _request(model, messages, stop, kwargs)
    if req.tool_use.tools:
        raise NotNative("tools: a native call does not offer tools")
    turns = [m.to_template() for m in req.messages]
    system = turns.pop(0)["content"] if turns and turns[0]["role"] == "system" else None
    roles = [t["role"] for t in turns]
    if roles != ["user"]:
        shown = (["system"] if system is not None else []) + roles
        raise NotNative(
            f"messages {shown}: a native chat call is one optional system message then one "
            "user message (its assistant turns are its own outputs, so a fixed history or "
            "several turns cannot be expressed)"
        )
    if system == "":
        raise NotNative("an empty system message (a native system turn needs text)")
    if system is not None and stand_ins is not None and stand_ins.used_in(system):
        raise NotNative("the system message uses a computed value", needs_values=True)
    inputs: dict[str, Any] = {}
    template = _template(turns[0]["content"], stand_ins, inputs) + f"{{{{output:{OUTPUT}}}}}"
    return NativeCall(template, inputs, sampling(req), req.criteria, True, system).checked()


def completion_call(
    model: Any, prompt: str, stop: list[str] | None, kwargs: dict, stand_ins: StandIns | None = None
) -> NativeCall:
    req: CompletionRequest = _request(model, prompt, stop, kwargs)
    if not isinstance(req.prompt, str):
        raise NotNative("a prompt of token ids")
    inputs: dict[str, Any] = {}
    template = _template(req.prompt, stand_ins, inputs) + f"{{{{output:{OUTPUT}}}}}"
    return NativeCall(template, inputs, sampling(req), req.criteria, False).checked()


# -- answers ------------------------------------------------------------------------------------
# A produced variable carries its usage (`SemanticVariable.usage` once read): the answers get
# the metadata `/v1` gives, less the response id (LangChain gives a message its run id).
def chat_result(text: str, usage: OutputUsage | None) -> ChatResult:
    if usage is None:  # not produced by a call (cannot happen for a call's output)
        message = AIMessage(content=text, response_metadata={"model_provider": PROVIDER})
        return ChatResult(generations=[ChatGeneration(message=message)])
    wire = _convert.native_usage(usage)
    message = _convert.answer_message(text, usage.model, usage.finish_reason, wire, None)
    return _convert.chat_result([_convert.generation(message)], wire)


def chat_message(text: str, usage: OutputUsage | None) -> AIMessage:
    """The answer as the model's `invoke` returns it, for a message that skips LangChain's
    generate (a shipped answer read directly): `llm_output` and `generation_info` merged into
    its response metadata, as LangChain merges them."""
    result = chat_result(text, usage)
    generation = result.generations[0]
    message = generation.message
    metadata = {
        **(result.llm_output or {}),
        **(generation.generation_info or {}),
        **message.response_metadata,
    }
    return message.model_copy(update={"response_metadata": metadata})


def chat_chunks(result: ChatResult) -> Iterator[ChatGenerationChunk]:
    """A whole answer as a stream: its text, then the closing chunk with the usage and
    metadata (once, as a `/v1` stream's last chunk)."""
    message = result.generations[0].message
    if message.text:
        yield ChatGenerationChunk(message=AIMessageChunk(content=message.text))
    last = AIMessageChunk(
        content="",
        usage_metadata=getattr(message, "usage_metadata", None),
        response_metadata=message.response_metadata,
        chunk_position="last",
    )
    yield ChatGenerationChunk(message=last, generation_info=result.generations[0].generation_info)


def llm_result(answers: list[tuple[str, OutputUsage | None]]) -> LLMResult:
    """(text, usage) per prompt, reported as `/v1/completions` answers are."""
    model = next((u.model for _, u in answers if u is not None), None)
    return _convert.llm_result(
        [
            (
                [_convert.Completed(text, u.finish_reason if u else None)],
                _convert.native_usage(u) if u else None,
            )
            for text, u in answers
        ],
        model,
    )

"""Semantic Variables and semantic functions: the SDK's programming model.

A `SemanticFunction` is a prompt template (grammar in `parrot_integrations.template`) turned
into a callable. Calling it does not wait for the model: it names fresh variables for the
outputs, submits the call (or adds it to a program) and returns those variables as futures,
so later calls can consume them before they have values and the server runs the whole
chain without the client in the loop. `SemanticVariable.get()` is where the client waits.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from . import _http
from .errors import (
    InvalidRequestError,
)
from .protocol.native import (
    CallSpec,
    Criteria,
    OutputBinding,
    SamplingOptions,
    VariableCreate,
)
from .template import Template, TemplateError, parse_template
from .variable import CallTarget, PendingProgram, SemanticVariable, new_id

if TYPE_CHECKING:
    from .session import AsyncSession, Session

__all__ = [
    "CallTarget",
    "Criteria",
    "SamplingOptions",
    "SemanticFunction",
    "SemanticVariable",
    "new_id",
    "semantic_function",
]


# -- functions ----------------------------------------------------------------------------------
def _options(fields: Mapping[str, Any], output: str | None) -> SamplingOptions:
    fields = dict(fields)
    schema = fields.get("json_schema")
    if isinstance(schema, type) and issubclass(schema, BaseModel):  # a pydantic class
        fields["json_schema"] = schema.model_json_schema()
    try:
        return SamplingOptions.model_validate(fields)
    except ValidationError as exc:
        where = f" of output {output!r}" if output else ""
        raise InvalidRequestError(
            f"bad sampling options{where}: {_http.validation_message(exc)}"
        ) from None


def _fields(value: Any, output: str) -> dict[str, Any]:
    if isinstance(value, SamplingOptions):
        return value.model_dump(exclude_unset=True)
    if isinstance(value, Mapping):
        return dict(value)
    raise InvalidRequestError(
        f"sampling for output {output!r} must be SamplingOptions or a dict, got "
        f"{type(value).__name__}"
    )


def _resolve_sampling(
    outputs: tuple[str, ...],
    sampling: SamplingOptions | Mapping[str, SamplingOptions | Mapping[str, Any]] | None,
    options: Mapping[str, Any],
) -> dict[str, SamplingOptions]:
    """Each output's options: `options` (and a SamplingOptions `sampling`) apply to every
    output; a mapping `sampling` overrides the fields it sets, per output."""
    per_output: Mapping[str, Any] = {}
    common = dict(options)
    if isinstance(sampling, SamplingOptions):
        common = {**sampling.model_dump(exclude_unset=True), **common}
    elif isinstance(sampling, Mapping):
        per_output = sampling
    elif sampling is not None:
        raise InvalidRequestError(
            f"sampling must be SamplingOptions or a dict per output, got {type(sampling).__name__}"
        )
    unknown = sorted(set(per_output) - set(outputs))
    if unknown:
        raise InvalidRequestError(
            f"sampling given for {unknown}, which are not outputs of the template "
            f"(outputs: {list(outputs)})"
        )
    base = _options(common, None)
    return {
        out: _options({**common, **_fields(per_output[out], out)}, out)
        if out in per_output
        else base
        for out in outputs
    }


class SemanticFunction:
    """A prompt template as a callable: `fn(target, **inputs)` where target is a `Session`
    (submits now), an `AsyncSession` (returns an awaitable that submits) or a program builder
    (collects the call). Inputs are strings or `SemanticVariable`s of the same session. Returns
    the output variable, or a tuple of them in template order when there are several.

    `**options` are `SamplingOptions` fields applied to every output; `sampling` is a
    SamplingOptions for every output, or a dict output -> SamplingOptions (or dict) overriding
    fields per output; `criteria` is sent with every output (`OutputBinding.criteria`);
    `chat=True` renders the call through the model's chat template (the text before each
    output is a user turn, each output an assistant turn): what instruct models expect;
    `system=` adds a system turn first (chat only)."""

    def __init__(
        self,
        template: str,
        *,
        sampling: SamplingOptions | Mapping[str, SamplingOptions | Mapping[str, Any]] | None = None,
        criteria: Criteria | str | None = None,
        name: str | None = None,
        chat: bool = False,
        system: str | None = None,
        **options: Any,
    ) -> None:
        self.name = name or "semantic_function"
        if system is not None and not chat:
            raise InvalidRequestError(f"{self.name}: a system turn needs chat=True")
        self.chat = chat
        self.system = system
        try:
            self.template: Template = parse_template(template)
        except TemplateError as exc:
            raise InvalidRequestError(f"template of {self.name}: {exc}") from None
        self.criteria = _http.as_criteria(criteria)
        self.sampling = _resolve_sampling(self.template.outputs, sampling, options)
        self.signature = inspect.Signature(
            [
                inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                for n in self.template.inputs
            ]
        )

    @classmethod
    def from_function(cls, fn: Callable[..., Any], **kwargs: Any) -> SemanticFunction:
        """The function's docstring (`inspect.cleandoc`-ed) is the template; its parameters
        must be exactly the template's inputs (defaults become default input values)."""
        label = getattr(fn, "__qualname__", repr(fn))
        if not (fn.__doc__ or "").strip():
            raise InvalidRequestError(
                f"{label} has no docstring: a semantic function's docstring is its template"
            )
        sf = cls(inspect.cleandoc(fn.__doc__ or ""), name=getattr(fn, "__name__", None), **kwargs)
        signature = inspect.signature(fn)
        params = signature.parameters.values()
        variadic = [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        names = [p.name for p in params if p.name not in variadic]
        missing = [n for n in sf.template.inputs if n not in names]
        extra = [n for n in names if n not in sf.template.inputs]
        if variadic or missing or extra:
            problems = [f"*{n} / **{n} is not allowed" for n in variadic]
            problems += [f"no parameter for input {n!r}" for n in missing]
            problems += [f"parameter {n!r} is not an input of the template" for n in extra]
            raise InvalidRequestError(
                f"{label}{signature}: its parameters must be the template's inputs "
                f"{list(sf.template.inputs)}; {'; '.join(problems)}"
            )
        sf.signature = signature
        functools.update_wrapper(sf, fn)
        return sf

    def __repr__(self) -> str:
        return f"SemanticFunction({self.name}{self.signature} -> {list(self.template.outputs)})"

    def __call__(self, target: CallTarget, /, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(target, CallTarget):
            raise InvalidRequestError(
                f"{self.name}(target, ...): target is a Session, AsyncSession or program builder, "
                f"got {type(target).__name__}"
            )
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidRequestError(f"{self.name}{self.signature}: {exc}") from None
        bound.apply_defaults()
        session = target._call_session()
        program = target._pending_program()

        variables: list[VariableCreate] = []
        inputs: dict[str, str] = {}
        for name in self.template.inputs:
            inputs[name] = self._input(name, bound.arguments[name], session, program, variables)

        call_id = new_id(self.name)
        outputs = {
            out: OutputBinding(var=new_id(out), sampling=self.sampling[out], criteria=self.criteria)
            for out in self.template.outputs
        }
        try:
            spec = CallSpec(
                id=call_id,
                template=self.template.source,
                inputs=inputs,
                outputs=outputs,
                chat=self.chat,
                system=self.system,
            )
        except ValidationError as exc:
            raise InvalidRequestError(f"{self.name}: {_http.validation_message(exc)}") from None
        results = tuple(
            SemanticVariable(session, b.var, producer=call_id, program=program)
            for b in outputs.values()
        )
        result = results[0] if len(results) == 1 else results
        pending = target._submit_call(variables, spec)
        if pending is None:
            return result

        async def submitted() -> Any:
            await pending
            return result

        return submitted()

    def _input(
        self,
        name: str,
        value: Any,
        session: Session | AsyncSession,
        program: PendingProgram | None,
        variables: list[VariableCreate],
    ) -> str:
        """The variable id bound to input `name`; a string becomes a new variable."""
        if isinstance(value, str):
            var = VariableCreate(id=new_id(name), value=value)
            variables.append(var)
            return var.id
        if not isinstance(value, SemanticVariable):
            raise InvalidRequestError(
                f"{self.name}: input {name!r} must be a str or a SemanticVariable, got "
                f"{type(value).__name__}"
            )
        if value.session is not session and value.session.id != session.id:
            raise InvalidRequestError(
                f"{self.name}: input {name!r} is variable {value.id} of another session; "
                "variables link calls only within one session"
            )
        other = value._program
        if other is not None and other is not program and not other.submitted:
            raise InvalidRequestError(
                f"{self.name}: input {name!r} is variable {value.id} of a program not "
                "submitted yet; use it inside that program's block"
            )
        return value.id


def semantic_function(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    sampling: SamplingOptions | Mapping[str, SamplingOptions | Mapping[str, Any]] | None = None,
    criteria: Criteria | str | None = None,
    **options: Any,
) -> Any:
    """Decorator: the function's docstring is the template, its parameters the inputs.

        @semantic_function(max_tokens=64, temperature=0.0)
        def summarize(text):
            '''Summarize the text in one sentence.
            Text: {{input:text}}
            Summary: {{output:summary}}'''

    Usable bare (`@semantic_function`) too. Arguments as `SemanticFunction`."""

    def wrap(f: Callable[..., Any]) -> SemanticFunction:
        return SemanticFunction.from_function(f, sampling=sampling, criteria=criteria, **options)

    return wrap(fn) if fn is not None else wrap

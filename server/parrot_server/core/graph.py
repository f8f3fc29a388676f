"""The Semantic-Variable graph of one session: calls and variables form a DAG.

`Graph.add` validates a whole program against what the session already holds and commits it
only if all of it is sound (a rejected program leaves no trace): templates parse, placeholders
match the bindings, every input variable exists (or is created by the program), no variable
has two producers or is produced after it was set, ids are unique, and no cycle forms.
Pure Python; no I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from parrot_integrations.protocol.native import (
    CallInfo,
    CallSpec,
    CallStatus,
    Criteria,
    OutputBinding,
    Program,
)
from parrot_integrations.template import Template, TemplateError, parse_template

from ..engine.errors import InvalidRequestError
from .errors import ConflictError, LimitExceededError
from .variable import Variable


@dataclass(eq=False)
class Call:
    id: str
    template: Template
    inputs: dict[str, str]  # input placeholder -> variable id
    outputs: dict[str, OutputBinding]  # output placeholder -> binding
    status: CallStatus = CallStatus.WAITING
    error: str | None = None
    objective: Criteria | None = None
    task_group: str | None = None
    chat: bool = False  # rendered through the model's chat template (see CallSpec.chat)
    system: str | None = None  # chat calls: the system turn
    submitted_at: float = 0.0
    # The executor's bookkeeping: in its ready queue now; the first output's prompt ids when
    # they were measured at submit; the longest producer chain above this call (memoised); why
    # a cancel was asked for (the running task reads it when it stops).
    queued: bool = False
    prompt_ids: list[int] | None = None  # the first output's prompt, if measured at submit
    depth: int | None = None
    cancel_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in (CallStatus.DONE, CallStatus.FAILED, CallStatus.CANCELLED)

    def info(self) -> CallInfo:
        return CallInfo(
            id=self.id,
            status=self.status,
            outputs={name: b.var for name, b in self.outputs.items()},
            error=self.error,
            objective=self.objective,
            task_group=self.task_group,
        )


@dataclass(frozen=True)
class Plan:
    """A validated program, not yet applied to its graph."""

    graph: Graph
    new_vars: dict[str, Variable]
    created: set[str]  # output variables the program creates implicitly
    calls: list[Call]

    def value_of(self, var_id: str) -> str | None:
        var = self.new_vars.get(var_id) or self.graph.variables.get(var_id)
        return var.value if var is not None else None


@dataclass(frozen=True)
class GraphLimits:
    max_variables: int
    max_calls: int
    max_calls_per_program: int
    max_value_chars: int


class Graph:
    def __init__(self, limits: GraphLimits) -> None:
        self.limits = limits
        self.variables: dict[str, Variable] = {}
        self.calls: dict[str, Call] = {}
        # Counts the changes a prepared plan depends on (commits, values set by clients): a
        # plan is committed as is only while this has not moved since `prepare`.
        self.version = 0

    # -- queries --------------------------------------------------------------------------------
    def producer_of(self, var_id: str) -> Call | None:
        producer = self.variables[var_id].producer
        return self.calls[producer] if producer is not None else None

    def input_vars(self, call: Call) -> list[Variable]:
        return [self.variables[v] for v in call.inputs.values()]

    def output_vars(self, call: Call) -> list[Variable]:
        return [self.variables[b.var] for b in call.outputs.values()]

    def consumers_of(self, call: Call) -> list[Call]:
        seen: dict[str, Call] = {}
        for var in self.output_vars(call):
            for cid in var.consumers:
                seen.setdefault(cid, self.calls[cid])
        return list(seen.values())

    def producers_of(self, call: Call) -> list[Call]:
        seen: dict[str, Call] = {}
        for var in self.input_vars(call):
            if var.producer is not None:
                seen.setdefault(var.producer, self.calls[var.producer])
        return list(seen.values())

    # -- changes --------------------------------------------------------------------------------
    def check_value(self, value: str) -> None:
        if len(value) > self.limits.max_value_chars:
            raise InvalidRequestError(
                f"a variable value is {len(value)} characters; the limit is "
                f"{self.limits.max_value_chars}"
            )

    def set_value(self, var: Variable, value: str) -> None:
        """A client sets a variable that no call produces."""
        self.check_value(value)
        var.set(value)
        self.version += 1

    def add(self, program: Program) -> list[Call]:
        """Validate and commit `program`; returns its calls in submission order."""
        return self.commit(self.prepare(program))

    def prepare(self, program: Program) -> Plan:
        """Validate `program` against the graph; nothing changes until `commit`."""
        lim = self.limits
        if len(program.calls) > lim.max_calls_per_program:
            raise InvalidRequestError(
                f"a program holds at most {lim.max_calls_per_program} calls, got "
                f"{len(program.calls)}"
            )
        new_vars: dict[str, Variable] = {}
        for spec in program.variables:
            if spec.id in self.variables or spec.id in new_vars:
                raise ConflictError(f"variable {spec.id!r} already exists")
            if spec.value is not None:
                self.check_value(spec.value)
            new_vars[spec.id] = Variable(spec.id, spec.value)
        calls = [self._parse_call(spec) for spec in program.calls]
        ids = [c.id for c in calls]
        dup = next((i for i in ids if ids.count(i) > 1 or i in self.calls), None)
        if dup is not None:
            raise ConflictError(f"call id {dup!r} is used twice")

        producers: dict[str, str] = {}  # var id -> new producing call
        for call in calls:
            for binding in call.outputs.values():
                var = binding.var
                existing = new_vars.get(var) or self.variables.get(var)
                if var in producers or (existing is not None and existing.producer is not None):
                    raise InvalidRequestError(f"variable {var!r} has two producers")
                if existing is not None and not existing.pending:
                    raise InvalidRequestError(
                        f"variable {var!r} already has a value; a call cannot produce it"
                    )
                producers[var] = call.id
        for call in calls:
            for name, var in call.inputs.items():
                if var not in self.variables and var not in new_vars and var not in producers:
                    raise InvalidRequestError(
                        f"call {call.id!r}: input {name!r} is bound to unknown variable {var!r}"
                    )
        created = {v for v in producers if v not in self.variables and v not in new_vars}
        if len(self.variables) + len(new_vars) + len(created) > lim.max_variables:
            raise LimitExceededError(f"a session holds at most {lim.max_variables} variables")
        if len(self.calls) + len(calls) > lim.max_calls:
            raise LimitExceededError(f"a session holds at most {lim.max_calls} calls")
        self._check_acyclic(calls, producers)
        return Plan(self, new_vars, created, calls)

    def commit(self, plan: Plan) -> list[Call]:
        """Apply a prepared program (prepared against the graph as it still is: nothing here
        raises)."""
        calls = plan.calls
        self.version += 1
        self.variables.update(plan.new_vars)
        for var in plan.created:
            self.variables[var] = Variable(var)
        for call in calls:
            self.calls[call.id] = call
            for binding in call.outputs.values():
                self.variables[binding.var].producer = call.id
            for var in call.inputs.values():
                self.variables[var].consumers.append(call.id)
        return calls

    def _parse_call(self, spec: CallSpec) -> Call:
        cid = spec.id or uuid.uuid4().hex
        try:
            template = parse_template(spec.template)
        except TemplateError as exc:
            raise InvalidRequestError(f"call {cid!r}: bad template: {exc}") from None
        for kind, want, got in (
            ("input", set(template.inputs), set(spec.inputs)),
            ("output", set(template.outputs), set(spec.outputs)),
        ):
            if want != got:
                missing, extra = sorted(want - got), sorted(got - want)
                raise InvalidRequestError(
                    f"call {cid!r}: {kind} bindings do not match the template's {kind} "
                    f"placeholders (unbound: {missing}, not in the template: {extra})"
                )
        outs = [b.var for b in spec.outputs.values()]
        if len(set(outs)) != len(outs):
            raise InvalidRequestError(f"call {cid!r} writes one variable twice")
        loop = set(outs) & set(spec.inputs.values())
        if loop:
            raise InvalidRequestError(f"call {cid!r} reads its own output {sorted(loop)[0]!r}")
        outputs = {name: spec.outputs[name] for name in template.outputs}  # generation order
        if spec.system is not None and not spec.chat:
            raise InvalidRequestError(f"call {cid!r}: a system turn needs chat=true")
        return Call(
            cid,
            template,
            dict(spec.inputs),
            outputs,
            task_group=spec.task_group,
            chat=spec.chat,
            system=spec.system,
        )

    def _check_acyclic(self, calls: list[Call], producers: dict[str, str]) -> None:
        """Depth-first search over the calls not yet finished, old and new, through
        input -> producer edges."""
        pending = {c.id: c for c in self.calls.values() if not c.finished}
        pending.update({c.id: c for c in calls})

        def producer(var: str) -> str | None:
            if var in producers:
                return producers[var]
            v = self.variables.get(var)
            return v.producer if v is not None else None

        state: dict[str, int] = {}  # 1 = on the stack, 2 = done
        for root in calls:
            if state.get(root.id) == 2:
                continue
            stack = [(root.id, iter(root.inputs.values()))]
            state[root.id] = 1
            while stack:
                cid, it = stack[-1]
                for var in it:
                    p = producer(var)
                    if p is None or p not in pending or state.get(p) == 2:
                        continue
                    if state.get(p) == 1:
                        raise InvalidRequestError(
                            f"the calls form a cycle through variable {var!r} (call {p!r})"
                        )
                    state[p] = 1
                    stack.append((p, iter(pending[p].inputs.values())))
                    break
                else:
                    state[cid] = 2
                    stack.pop()

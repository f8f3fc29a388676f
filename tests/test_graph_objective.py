"""The Semantic-Variable graph and objective deduction on hand-built DAGs (pure Python)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from parrot_integrations.protocol.native import (
    CallSpec,
    Criteria,
    OutputBinding,
    Program,
    VariableCreate,
)
from parrot_integrations.template import TemplateError, parse_template
from parrot_server.core.call_prompt import render, render_turns
from parrot_server.core.errors import ConflictError, LimitExceededError
from parrot_server.core.graph import Graph, GraphLimits
from parrot_server.core.objective import deduce, mark, priority_of
from parrot_server.engine.errors import InvalidRequestError

LIMITS = GraphLimits(
    max_variables=100, max_calls=50, max_calls_per_program=20, max_value_chars=1000
)


def call(cid: str, inputs: list[str], output: str, criteria: Criteria | None = None) -> CallSpec:
    template = "".join(f"{{{{input:i{k}}}}} " for k in range(len(inputs))) + "{{output:o}}"
    return CallSpec(
        id=cid,
        template=template,
        inputs={f"i{k}": v for k, v in enumerate(inputs)},
        outputs={"o": OutputBinding(var=output, criteria=criteria)},
    )


def build(*calls: CallSpec, values: dict[str, str] | None = None) -> Graph:
    g = Graph(LIMITS)
    variables = [VariableCreate(id=k, value=v) for k, v in (values or {}).items()]
    added = g.add(Program(variables=variables, calls=list(calls)))
    deduce(g, added)
    return g


# -- templates ----------------------------------------------------------------------------------
def test_template_segments_and_static_prefix():
    t = parse_template("You are terse.\nQ: {{input:q}}\nA: {{output:a}}\nWhy: {{ output : why }}\n")
    assert t.inputs == ("q",) and t.outputs == ("a", "why")
    assert t.static_prefix == "You are terse.\nQ: "


@pytest.mark.parametrize(
    "source, needle",
    [
        ("no outputs {{input:x}}", "at least one"),
        ("{{input:x}} {{outptu:y}}", "unknown placeholder kind"),
        ("{{output:1x}}", "not an identifier"),
        ("{{input:x}} {{output:x}}", "used twice"),
        ("{{output:y}} and more", "after the last output"),
        ("a {{ stray {{output:y}}", "stray"),
        ("{{output:y}} }}", "stray"),
    ],
)
def test_bad_templates_say_why(source, needle):
    with pytest.raises(TemplateError, match=needle):
        parse_template(source)


def test_render_fills_inputs_and_earlier_outputs():
    g = Graph(LIMITS)
    spec = CallSpec(
        id="c",
        template="Q: {{input:q}}\nA: {{output:a}}\nB: {{output:b}}",
        inputs={"q": "q"},
        outputs={"b": OutputBinding(var="vb"), "a": OutputBinding(var="va")},  # any order
    )
    (c,) = g.add(Program(variables=[VariableCreate(id="q", value="why?")], calls=[spec]))
    assert list(c.outputs) == ["a", "b"]  # generation order is the template's
    value = {"q": "why?", "va": "because", "vb": None}.get
    assert render(value, c, 0) == "Q: why?\nA: "
    assert render(value, c, 1) == "Q: why?\nA: because\nB: "
    # chat=True: the text before each output is a user turn, each output an assistant turn
    assert render_turns(value, c, 1) == [
        {"role": "user", "content": "Q: why?\nA: "},
        {"role": "assistant", "content": "because"},
        {"role": "user", "content": "\nB: "},
    ]
    chat = CallSpec(
        id="s",
        template="Hi {{input:q}}{{output:a}}",
        inputs={"q": "q"},
        outputs={"a": OutputBinding(var="sa")},
        chat=True,
        system="Be terse.",
    )
    (s,) = g.add(Program(calls=[chat]))
    assert render_turns(value, s, 0) == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi why?"},
    ]
    with pytest.raises(InvalidRequestError, match="needs chat"):
        g.add(Program(calls=[chat.model_copy(update={"id": "t", "chat": False})]))


# -- validation ---------------------------------------------------------------------------------
def test_rejects_unknown_variable_two_producers_and_cycles():
    with pytest.raises(InvalidRequestError, match="unknown variable 'nope'"):
        build(call("a", ["nope"], "x"))
    with pytest.raises(InvalidRequestError, match="two producers"):
        build(call("a", [], "x"), call("b", [], "x"))
    with pytest.raises(InvalidRequestError, match="cycle"):
        g = Graph(LIMITS)
        g.add(Program(variables=[VariableCreate(id="p")]))  # set later by the client
        g.add(Program(calls=[call("a", ["p"], "q"), call("b", ["q"], "r"), call("c", ["r"], "p")]))
    with pytest.raises(InvalidRequestError, match="reads its own output"):
        build(call("a", ["x"], "x"))


def test_cycle_through_an_existing_waiting_call_is_found():
    g = Graph(LIMITS)
    g.add(Program(variables=[VariableCreate(id="p")], calls=[call("old", ["p"], "q")]))
    with pytest.raises(InvalidRequestError, match="cycle"):
        g.add(Program(calls=[call("new", ["q"], "p")]))


def test_rejected_program_leaves_no_trace():
    g = build(call("a", [], "x"))
    before = (set(g.variables), set(g.calls), list(g.variables["x"].consumers))
    with pytest.raises(InvalidRequestError):
        g.add(Program(calls=[call("b", ["x"], "y"), call("c", ["missing"], "z")]))
    assert (set(g.variables), set(g.calls), list(g.variables["x"].consumers)) == before


def test_conflicts_and_limits():
    g = build(call("a", [], "x"), values={"v": "1"})
    with pytest.raises(ConflictError):
        g.add(Program(variables=[VariableCreate(id="v", value="2")]))
    with pytest.raises(ConflictError):
        g.add(Program(calls=[call("a", [], "y")]))
    with pytest.raises(InvalidRequestError, match="already has a value"):
        g.add(Program(calls=[call("b", [], "v")]))
    with pytest.raises(InvalidRequestError, match="at most 20 calls"):
        g.add(Program(calls=[call(f"c{k}", [], f"o{k}") for k in range(21)]))
    with pytest.raises(LimitExceededError, match="50 calls"):
        for k in range(3):
            g.add(Program(calls=[call(f"d{k}.{j}", [], f"p{k}.{j}") for j in range(20)]))
    with pytest.raises(InvalidRequestError, match="binding"):
        g.add(Program(calls=[CallSpec(template="{{output:o}}", outputs={})]))


# -- objective deduction ------------------------------------------------------------------------
def test_chain_latency_marks_the_whole_producer_chain():
    g = build(
        call("a", ["in"], "x"), call("b", ["x"], "y"), call("c", ["y"], "z"), values={"in": "t"}
    )
    changed = mark(g, "z", Criteria.LATENCY)
    assert {c.id for c in changed} == {"a", "b", "c"}
    assert all(g.calls[c].objective is Criteria.LATENCY for c in "abc")
    assert priority_of(Criteria.LATENCY) > priority_of(None) > priority_of(Criteria.THROUGHPUT)


def test_map_reduce_forms_a_task_group_and_latency_reaches_the_maps():
    maps = [call(f"m{k}", [f"chunk{k}"], f"s{k}") for k in range(8)]
    g = build(
        *maps,
        call("reduce", [f"s{k}" for k in range(8)], "final"),
        values={f"chunk{k}": str(k) for k in range(8)},
    )
    groups = {g.calls[f"m{k}"].task_group for k in range(8)}
    assert groups == {"group-reduce"}
    assert g.calls["reduce"].task_group is None
    mark(g, "final", Criteria.LATENCY)
    assert all(c.objective is Criteria.LATENCY for c in g.calls.values())


def test_declared_task_group_is_kept():
    """A client-declared group (the inputs of one batch, say) is the call's group, even for
    producers that also feed one consumer (which would otherwise be grouped after it)."""
    declared = [
        call(f"b{k}", [f"in{k}"], f"o{k}").model_copy(update={"task_group": "batch-1"})
        for k in range(3)
    ]
    g = build(
        *declared,
        call("reduce", ["o0", "o1", "o2"], "final"),
        call("single", ["in0"], "x"),
        values={f"in{k}": str(k) for k in range(3)},
    )
    assert [g.calls[f"b{k}"].task_group for k in range(3)] == ["batch-1"] * 3
    assert g.calls["b0"].info().task_group == "batch-1"
    assert g.calls["single"].task_group is None and g.calls["reduce"].task_group is None
    with pytest.raises(ValueError):
        CallSpec(template="{{output:o}}", outputs={"o": OutputBinding(var="o")}, task_group="a b")


def test_diamond():
    g = build(
        call("a", ["in"], "x"),
        call("b", ["x"], "y1"),
        call("c", ["x"], "y2"),
        call("d", ["y1", "y2"], "out"),
        values={"in": "t"},
    )
    assert g.calls["b"].task_group == g.calls["c"].task_group == "group-d"
    assert g.calls["a"].task_group is None
    mark(g, "y2", Criteria.THROUGHPUT)  # one branch read for throughput
    assert g.calls["c"].objective is Criteria.THROUGHPUT
    assert g.calls["a"].objective is Criteria.THROUGHPUT
    assert g.calls["b"].objective is None
    mark(g, "out", Criteria.LATENCY)  # latency wins over throughput
    assert all(c.objective is Criteria.LATENCY for c in g.calls.values())
    mark(g, "out", Criteria.THROUGHPUT)
    assert all(c.objective is Criteria.LATENCY for c in g.calls.values())


def test_two_apps_interleaved_keep_their_own_objectives():
    g = build(
        call("a1", ["q1"], "a1x"),
        call("b1", ["q2"], "b1x"),
        call("a2", ["a1x"], "a_out", criteria=Criteria.LATENCY),  # declared at submit
        call("b2", ["b1x"], "b_out", criteria=Criteria.THROUGHPUT),
        values={"q1": "x", "q2": "y"},
    )
    assert g.calls["a1"].objective is g.calls["a2"].objective is Criteria.LATENCY
    assert g.calls["b1"].objective is g.calls["b2"].objective is Criteria.THROUGHPUT


def test_finished_calls_are_not_remarked():
    from parrot_integrations.protocol.native import CallStatus

    g = build(call("a", ["in"], "x"), call("b", ["x"], "y"), values={"in": "t"})
    g.calls["a"].status = CallStatus.DONE
    changed = mark(g, "y", Criteria.LATENCY)
    assert [c.id for c in changed] == ["b"] and g.calls["a"].objective is None


def test_scheduling_code_does_not_import_torch():
    code = (
        "import sys, parrot_server.native_service, parrot_server.core.serve_core;"
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

"""Objective deduction: from how a variable will be read (`Criteria`) to how each call that
produces it should run. Pure Python over `Graph`; no I/O.

- A LATENCY get marks every unfinished call on the variable's producer chain latency-sensitive.
- A THROUGHPUT get marks them batchable, unless they are already on some latency path (latency
  wins: one impatient reader is enough).
- The producers feeding one consumer (the maps of a reduce) form a task group: the executor
  dispatches its members together so they share engine steps and finish together (the reduce
  waits for the slowest). A client may declare a call's group itself (`CallSpec.task_group`,
  e.g. the inputs of one batch); a declared group is kept.

The engine sees the result as a priority (higher runs first) and as simultaneous submission.
"""

from __future__ import annotations

from parrot_integrations.protocol.native import Criteria

from .graph import Call, Graph

# Engine priority per objective: latency work first; unknown objective in between.
PRIORITY: dict[Criteria | None, int] = {Criteria.LATENCY: 2, None: 1, Criteria.THROUGHPUT: 0}


def priority_of(objective: Criteria | None) -> int:
    return PRIORITY[objective]


def mark(graph: Graph, var_id: str, criteria: Criteria) -> list[Call]:
    """Apply a read of `var_id` with `criteria` to its unfinished producer chain; returns the
    calls whose objective changed."""
    criteria = Criteria(criteria)  # also accepts the plain string
    changed: list[Call] = []
    start = graph.producer_of(var_id)
    todo = [start] if start is not None else []
    seen: set[str] = set()
    while todo:
        call = todo.pop()
        if call.id in seen or call.finished:
            continue
        seen.add(call.id)
        if criteria is Criteria.LATENCY and call.objective is not Criteria.LATENCY:
            call.objective = Criteria.LATENCY
            changed.append(call)
        elif criteria is Criteria.THROUGHPUT and call.objective is None:
            call.objective = Criteria.THROUGHPUT
            changed.append(call)
        todo.extend(graph.producers_of(call))
    return changed


def assign_task_groups(graph: Graph, calls: list[Call]) -> None:
    """Producers feeding one consumer form a task group (named after the consumer). A producer
    already in a group keeps it: a call belongs to one group, the one its client declared
    (`CallSpec.task_group`), else the first consumer's."""
    for consumer in calls:
        producers = [p for p in graph.producers_of(consumer) if not p.finished]
        if len(producers) < 2:
            continue
        group = f"group-{consumer.id}"
        for p in producers:
            if p.task_group is None:
                p.task_group = group


def deduce(graph: Graph, calls: list[Call]) -> None:
    """Objectives and task groups for newly added `calls`: outputs declared with a criteria at
    submit time count as reads."""
    assign_task_groups(graph, calls)
    for call in calls:
        for binding in call.outputs.values():
            if binding.criteria is not None:
                mark(graph, binding.var, binding.criteria)

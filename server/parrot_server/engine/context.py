"""Contexts: named token sequences whose KV the engine keeps (Parrot's Fill/Generate).

A context pins its tokens in the prefix cache through a lock on the radix node that ends them,
so an app's shared prefix survives between its calls. Forking a context is just starting from
its tokens: the radix match finds the parent's KV, so the child computes only what it adds.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from .errors import ContextBusyError, ContextNotFoundError, InvalidRequestError


@dataclass(eq=False)
class Context:
    context_id: str
    namespace: Hashable
    tokens: list[int] = field(default_factory=list)
    node: Any = None  # locked prefix-cache node covering the computed part of `tokens`
    busy: str | None = None  # rid of the request running in this context


def resolve_context(
    contexts: dict[str, Context], context_id: str | None, parent_id: str | None, namespace: Hashable
) -> tuple[list[int], Context | None]:
    """What a request continues: the tokens its prompt is appended to, and the context it runs
    in (an existing one, a new one started from `parent_id`'s tokens, or None). Raises a typed
    error for a missing or busy context, or one asked for a parent or namespace it lacks."""
    parent = None
    if parent_id is not None:
        parent = contexts.get(parent_id)
        if parent is None:
            raise ContextNotFoundError(f"parent context {parent_id!r} does not exist")
        if parent.busy:
            raise ContextBusyError(
                f"parent context {parent_id!r} is still being computed ({parent.busy})"
            )
    if context_id is None:
        return (list(parent.tokens) if parent else []), None
    ctx = contexts.get(context_id)
    if ctx is not None:
        if parent is not None:
            raise InvalidRequestError(
                f"context {context_id!r} exists already: it cannot get a parent"
            )
        if ctx.busy:
            raise ContextBusyError(f"context {context_id!r} is busy with request {ctx.busy}")
        if namespace is not None and namespace != ctx.namespace:
            raise InvalidRequestError(f"context {context_id!r} belongs to another cache namespace")
        return list(ctx.tokens), ctx
    ns = parent.namespace if parent else namespace
    return (list(parent.tokens) if parent else []), Context(context_id, ns)

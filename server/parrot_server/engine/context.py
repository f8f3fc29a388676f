"""Contexts: named token sequences whose KV the engine keeps (Parrot's Fill/Generate).

A context pins its tokens in the prefix cache through a lock on the radix node that ends them,
so an app's shared prefix survives between its calls. Forking a context is just starting from
its tokens: the radix match finds the parent's KV, so the child computes only what it adds.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Context:
    context_id: str
    namespace: Hashable
    tokens: list[int] = field(default_factory=list)
    node: Any = None  # locked prefix-cache node covering the computed part of `tokens`
    busy: str | None = None  # rid of the request running in this context

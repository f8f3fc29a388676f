"""Request bodies must hold valid Unicode text. JSON lets a string carry an unpaired surrogate
(the escape `\\ud800` alone, or such bytes decoded leniently); Python keeps it, and it fails
later wherever the text is encoded: the tokenizer, a JSON response, a stored variable that no
GET can then return. Such a body is a 400 naming the field, before any route sees it.

One check on the parsed body covers every route and every field, nested objects and the
free-form ones (`json_schema`, tool parameters, SGLang's extra fields) included."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError

# A surrogate code point left in a decoded str is a lone one: a valid pair decodes to one
# code point above U+FFFF.
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate_at(value: Any) -> tuple[str | int, ...] | None:
    """Where a string (a key or a value) holding a lone surrogate sits in parsed JSON, as a
    path of keys and indexes (a bad key shown escaped); None when all the text is valid."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if not key.isascii() and _SURROGATE.search(key):
                    return (*path, key.encode("utf-8", "backslashreplace").decode())
                stack.append(((*path, key), child))
        elif isinstance(item, list):
            stack.extend(((*path, i), child) for i, child in enumerate(item))
    return None


async def reject_lone_surrogates(request: Request) -> None:
    """Router dependency: runs after FastAPI parsed the body (the parse is cached on the
    request, so this reads it again for free) and before the route's body model is used."""
    if not await request.body():
        return
    try:
        body = await request.json()
    except ValueError:  # not JSON: the route's own parsing answers with its 400
        return
    where = lone_surrogate_at(body)
    if where is not None:
        raise RequestValidationError(
            [
                {
                    "type": "string_unicode",
                    "loc": ("body", *where),
                    "msg": "the text holds an unpaired UTF-16 surrogate (e.g. the JSON escape "
                    "\\ud800 alone): not valid Unicode",
                    "input": None,
                }
            ]
        )

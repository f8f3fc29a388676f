"""Semantic-function templates: text with `{{input:name}}` and `{{output:name}}` placeholders.

The one template grammar of Parrot, parsed the same way by the SDK (to fail early, on the
client) and by the server (which never trusts the client):

- `{{input:name}}` is replaced by the value of the input variable bound to `name`;
- `{{output:name}}` is where the model writes the output variable bound to `name`: everything
  before it (inputs filled in, earlier outputs included) is the prompt of that generation;
- names are Python identifiers, each used once per template; at least one output;
- only whitespace may follow the last output (text there would never reach the model);
- `{{` and `}}` are reserved: any other use of them is an error (so a typo is never sent as
  literal prompt text).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_PLACEHOLDER = re.compile(r"\{\{\s*(?P<kind>[A-Za-z_]+)\s*:\s*(?P<name>[^{}\s]*)\s*\}\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class TemplateError(ValueError):
    """The template does not parse; the message says where and why."""


class SegmentKind(enum.Enum):
    TEXT = "text"
    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    value: str  # the literal text, or the placeholder's name


@dataclass(frozen=True)
class Template:
    source: str
    segments: tuple[Segment, ...]

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(s.value for s in self.segments if s.kind is SegmentKind.INPUT)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(s.value for s in self.segments if s.kind is SegmentKind.OUTPUT)

    @property
    def static_prefix(self) -> str:
        """Constant text before the first placeholder: the same for every call of this
        template, so its KV is shared across calls and sessions."""
        first = self.segments[0] if self.segments else None
        return first.value if first is not None and first.kind is SegmentKind.TEXT else ""


def _check_literal(text: str, offset: int, source: str) -> None:
    for brace in ("{{", "}}"):
        at = text.find(brace)
        if at >= 0:
            pos = offset + at
            raise TemplateError(
                f"stray {brace!r} at character {pos} ({_excerpt(source, pos)!r}); placeholders "
                "are {{input:name}} or {{output:name}}"
            )


def _excerpt(source: str, pos: int) -> str:
    return source[max(0, pos - 10) : pos + 20]


def parse_template(source: str) -> Template:
    """Parse `source` into text / input / output segments, or raise `TemplateError`."""
    if not isinstance(source, str):
        raise TemplateError(f"a template is a string, got {type(source).__name__}")
    segments: list[Segment] = []
    seen: set[str] = set()
    pos = 0
    for m in _PLACEHOLDER.finditer(source):
        _check_literal(source[pos : m.start()], pos, source)
        if m.start() > pos:
            segments.append(Segment(SegmentKind.TEXT, source[pos : m.start()]))
        kind_name, name = m.group("kind").lower(), m.group("name")
        if kind_name not in ("input", "output"):
            raise TemplateError(
                f"unknown placeholder kind {m.group('kind')!r} in {m.group(0)!r}; "
                "use {{input:name}} or {{output:name}}"
            )
        if not _NAME.match(name):
            raise TemplateError(f"placeholder name {name!r} in {m.group(0)!r} is not an identifier")
        if name in seen:
            raise TemplateError(f"placeholder name {name!r} is used twice")
        seen.add(name)
        segments.append(Segment(SegmentKind(kind_name), name))
        pos = m.end()
    tail = source[pos:]
    _check_literal(tail, pos, source)
    if not any(s.kind is SegmentKind.OUTPUT for s in segments):
        raise TemplateError("a template needs at least one {{output:name}} placeholder")
    if tail.strip():
        raise TemplateError(
            f"text after the last output ({tail.strip()[:30]!r}...) would never reach the model; "
            "end the template with an {{output:...}} placeholder"
        )
    return Template(source, tuple(segments))

"""A call's prompt for one of its outputs: the template up to that output with its inputs
filled in and the earlier outputs included, as plain text or as chat turns through the
model's chat template."""

from __future__ import annotations

from collections.abc import Callable

from parrot_integrations.template import SegmentKind

from .engine_client import EngineClient
from .graph import Call


def render_turns(
    value_of: Callable[[str], str | None], call: Call, upto_output: int
) -> list[dict[str, str]]:
    """The call up to its `upto_output`-th output as alternating turns: the text before each
    output (inputs filled in by `value_of(variable id)`) is a user turn, each earlier output an
    assistant turn, after the call's system turn if it has one. The last turn is the user's."""
    turns = [{"role": "system", "content": call.system}] if call.system else []
    text: list[str] = []
    seen = 0
    for seg in call.template.segments:
        if seg.kind is SegmentKind.TEXT:
            text.append(seg.value)
        elif seg.kind is SegmentKind.INPUT:
            text.append(value_of(call.inputs[seg.value]) or "")
        else:
            turns.append({"role": "user", "content": "".join(text)})
            text = []
            if seen == upto_output:
                break
            turns.append(
                {"role": "assistant", "content": value_of(call.outputs[seg.value].var) or ""}
            )
            seen += 1
    return turns


def render(value_of: Callable[[str], str | None], call: Call, upto_output: int) -> str:
    """The plain-text prompt of the call's `upto_output`-th output: the template up to that
    placeholder, inputs filled in and earlier outputs included."""
    turns = render_turns(value_of, call, upto_output)
    return "".join(t["content"] for t in turns if t["role"] != "system")


def render_prompt(
    engine: EngineClient, value_of: Callable[[str], str | None], call: Call, upto_output: int
) -> str:
    """What the engine receives: plain text, or the turns through the chat template."""
    if call.chat:
        return engine.render_chat(render_turns(value_of, call, upto_output))
    return render(value_of, call, upto_output)

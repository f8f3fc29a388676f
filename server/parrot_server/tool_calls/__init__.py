"""Tool calling on `/v1/chat/completions`: how tools and tool turns reach the prompt, what the
output is constrained to, and how the output becomes OpenAI tool calls."""

from .format import ToolFormat
from .generic import GenericJsonTools
from .template import TemplateTools, syntax_of


def tool_format(chat_template: str | None) -> ToolFormat:
    """The model's own tool format when its template has a known one, else the generic one."""
    syntax = syntax_of(chat_template)
    return GenericJsonTools() if syntax is None else TemplateTools(syntax)

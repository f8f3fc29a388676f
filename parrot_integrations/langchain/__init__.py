"""LangChain adapter: drop-in `ChatParrot` / `ParrotLLM` chat and completion models.

    from parrot_integrations.langchain import ChatParrot   # instead of ChatOpenAI

Guide: docs/langchain.md. Needs `langchain-core`.
"""

from .chat_models import ChatParrot
from .llms import ParrotLLM

__all__ = ["ChatParrot", "ParrotLLM"]

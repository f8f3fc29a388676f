"""LangChain adapter: drop-in `ChatParrot` / `ParrotLLM` chat and completion models.

    from parrot_integrations.langchain import ChatParrot   # instead of ChatOpenAI
    ship(prompt | llm | parser)          # the whole chain as native programs

Guide: docs/langchain.md. Needs `langchain-core`.
"""

from .chat_models import ChatParrot
from .llms import ParrotLLM
from .ship import ShippedRunnable, ship

__all__ = ["ChatParrot", "ParrotLLM", "ShippedRunnable", "ship"]

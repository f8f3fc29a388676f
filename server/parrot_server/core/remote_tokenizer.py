"""A remote engine's tokenizer, loaded on this machine: from the path the engine reports, the
model given here, or the local HF cache. Never downloads; nothing here imports torch (only a
GGUF file given as the tokenizer needs it, to convert it)."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any

from ..engine.tokenizer import TokenizerNotFoundError, load_hf_tokenizer


def load_tokenizer(path: str | os.PathLike) -> Any:
    """A tokenizer from an HF-format directory (our engines report their converted GGUF cache
    directory as `tokenizer_path`), a GGUF file (converted into that cache by the model loader,
    which imports torch) or an HF hub id already in the local HF cache. Never downloads."""
    local = Path(path).expanduser()
    return _load_tokenizer(str(local) if local.exists() else str(path))


@functools.lru_cache(maxsize=8)  # the engines of one model share one tokenizer object
def _load_tokenizer(path: str) -> Any:
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        from ..engine.model.loader import gguf_cache_dir

        path = str(gguf_cache_dir(p))
    return load_hf_tokenizer(path)


def find_tokenizer(url: str, given: Any, model_info: dict[str, Any], model: Any) -> Any:
    if given is not None:
        return load_tokenizer(given)
    reported = model_info.get("tokenizer_path") or model_info.get("model_path")
    for candidate in (reported, model):
        if candidate and Path(candidate).expanduser().exists():
            return load_tokenizer(candidate)
    if reported:  # maybe an HF hub id whose files are in the local HF cache
        with contextlib.suppress(TokenizerNotFoundError):
            return load_tokenizer(reported)
    raise TokenizerNotFoundError(
        f"engine {url}: its tokenizer {reported!r} is not on this machine (nor is --model "
        f"{model!r}); give one (HF dir or GGUF file) with --tokenizer"
    )

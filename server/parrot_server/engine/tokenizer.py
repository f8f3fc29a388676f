"""Load an HF-format tokenizer from local files; shared by the model loader and the ServeCore's
remote engine client. Never downloads, and imports no torch for the generic fast class (what
our GGUF conversion writes): `transformers.AutoTokenizer` would import it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import EngineError

GENERIC_TOKENIZERS = ("PreTrainedTokenizerFast", "TokenizersBackend")  # the latter: transformers 5


class TokenizerNotFoundError(EngineError):
    """No tokenizer can be loaded from the given path (for a remote engine: give one with
    `--tokenizer`). The cause is transformers' own exception."""


def read_chat_template(value: str) -> str:
    """`--chat-template`: a Jinja file's text, or the template itself when it is one."""
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text()
    if "{%" in value or "{{" in value:
        return value
    raise EngineError(f"--chat-template {value!r}: no such file, and not a Jinja template")


def load_hf_tokenizer(path: str | os.PathLike) -> Any:
    """The tokenizer of an HF-format directory, or of an HF hub id already in the local HF
    cache. The generic fast class is loaded directly (no torch, and no resolution through
    config.json and model-specific modules, slow the first time); any other class through
    `AutoTokenizer`."""
    from transformers import PreTrainedTokenizerFast  # (importing AutoTokenizer imports torch)

    p = Path(path)
    config = p / "tokenizer_config.json"
    generic = (
        (p / "tokenizer.json").is_file()
        and config.is_file()
        and json.loads(config.read_text()).get("tokenizer_class") in GENERIC_TOKENIZERS
    )
    if generic:
        cls = PreTrainedTokenizerFast
    else:  # finds the model's class through its config files
        from transformers import AutoTokenizer as cls
    try:
        return cls.from_pretrained(str(p), local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, ... for a bad dir / id
        raise TokenizerNotFoundError(f"cannot load a tokenizer from {str(path)!r}: {exc}") from exc

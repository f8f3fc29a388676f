"""What an embedding model folder is, read from its JSON files without loading it (torch-free):
its served name, vector size, token window and vocabulary size.

A folder is a sentence-transformers model of a BERT-like encoder: `config.json` and safetensors
weights `transformers.AutoModel` loads, a tokenizer, and optionally `sentence_bert_config.json`
(`max_seq_length`, the window) and `1_Pooling/config.json` (only mean pooling is supported; the
vectors are always L2-normalised)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WINDOW = 512  # tokens, when neither sentence-transformers nor config.json says


class EmbeddingModelNotFoundError(FileNotFoundError):
    """The model package is not installed, or the given folder is not an embedding model."""


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EmbeddingModelNotFoundError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise EmbeddingModelNotFoundError(f"{path} is not a JSON object")
    return data


@dataclass(frozen=True)
class EmbeddingModelInfo:
    name: str  # what clients call it (`model` of /v1/embeddings)
    path: Path
    dimensions: int  # vector size
    max_tokens: int  # longer inputs are cut to this many tokens (special tokens included)
    vocab_size: int  # token ids of an input must be below this

    @classmethod
    def read(cls, path: Path, name: str | None = None) -> EmbeddingModelInfo:
        """The model in folder `path`, served as `name` (default: the folder's name)."""
        config_file = path / "config.json"
        if not config_file.is_file():
            raise EmbeddingModelNotFoundError(f"no model config.json in {path}")
        config = _json(config_file)
        pooling_file = path / "1_Pooling" / "config.json"
        if pooling_file.is_file() and not _json(pooling_file).get("pooling_mode_mean_tokens"):
            raise EmbeddingModelNotFoundError(
                f"{path}: only mean pooling is supported ({pooling_file} asks for another)"
            )
        positions = int(config.get("max_position_embeddings") or DEFAULT_WINDOW)
        st_file = path / "sentence_bert_config.json"
        window = _json(st_file).get("max_seq_length") if st_file.is_file() else None
        try:
            return cls(
                name=name or path.name,
                path=path,
                dimensions=int(config["hidden_size"]),
                max_tokens=min(int(window or positions), positions),
                vocab_size=int(config["vocab_size"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbeddingModelNotFoundError(f"{config_file}: no usable {exc}") from exc

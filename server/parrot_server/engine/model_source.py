"""Whether a model path the user gave exists, and if not, what to pass instead. Torch-free, so
the CLI refuses a bad `--model` before importing the engine. Parrot never downloads models."""

from __future__ import annotations

import re
from pathlib import Path

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # "Org/Name", as the Hugging Face Hub names


def missing_reason(given: str | Path) -> str | None:
    """None when `given` exists; else why it cannot load, naming its absolute path (and, for a
    Hugging Face Hub id, how to get the files)."""
    src = Path(given).expanduser()
    if src.exists():
        return None
    text = str(given)
    if _HUB_ID.fullmatch(text) and not text.endswith(".gguf"):
        return (
            f"no such file or directory ({src.absolute()}); it looks like a Hugging Face Hub id, "
            "and Parrot never downloads models. Pass a GGUF file or a local HF safetensors "
            f"folder (e.g. `huggingface-cli download {text} --local-dir DIR`, then "
            "`--model DIR`), or no --model for the bundled SmolLM2-135M-Instruct"
        )
    return f"no such file or directory ({src.absolute()})"

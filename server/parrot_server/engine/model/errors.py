"""Why a model could not be loaded. Every message names the path the user gave."""

from __future__ import annotations

from pathlib import Path


class ModelLoadError(Exception):
    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot load model {str(path)!r}: {reason}")


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    pass


class UnsupportedModelError(ModelLoadError):
    def __init__(self, path: str | Path, architecture: str, reason: str | None = None) -> None:
        self.architecture = architecture
        reason = reason or "only llama, mistral and qwen2 models are supported"
        super().__init__(path, f"unsupported architecture {architecture!r} ({reason})")

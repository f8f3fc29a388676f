"""The model: config, GGUF / safetensors loading with a converted cache, our Llama forward."""

from .config import ModelConfig, RopeScaling, RopeScalingKind
from .llama import AttentionFn, DenseCausalAttention, LlamaModel
from .loader import (
    LoadedModel,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedModelError,
    default_model_path,
    load_model,
)

__all__ = [
    "AttentionFn",
    "DenseCausalAttention",
    "LlamaModel",
    "LoadedModel",
    "ModelConfig",
    "ModelLoadError",
    "ModelNotFoundError",
    "RopeScaling",
    "RopeScalingKind",
    "UnsupportedModelError",
    "default_model_path",
    "load_model",
]

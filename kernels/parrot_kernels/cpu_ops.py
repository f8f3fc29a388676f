"""The `parrot_cpu_ops` extension: block-quantised matmul (`quant_matmul`), a decoder layer's
elementwise work (`layer_ops`), decode attention over a paged KV pool (`paged_attention`), a
prompt chunk's causal attention (`prefill_attention`) and decoder layers for decoding requests
(`decode_layers`), compiled from `csrc/` on first `load()`."""

from __future__ import annotations

from types import ModuleType

from .extension import CppExtension

__all__ = ["EXTENSION", "load", "loaded", "module", "unavailable_reason"]

EXTENSION = CppExtension(
    "parrot_cpu_ops",
    [
        "quant_matmul.cpp",
        "quant_matmul_avx512.cpp",
        "layer_ops.cpp",
        "paged_attention.cpp",
        "prefill_attention.cpp",
        "decode_layer.cpp",
        "cpu_ops.cpp",
    ],
    "CPU operators",
    extra_cflags=["-fopenmp"],
    extra_ldflags=["-fopenmp"],
)


def load() -> bool:
    """Build (first time, about a minute on 2 cores) or load the extension now; True if the
    CPU paths use it."""
    return EXTENSION.load() is not None


def loaded() -> bool:
    return EXTENSION.module is not None


def module() -> ModuleType | None:
    """The compiled module once loaded, else None (callers take their torch path)."""
    return EXTENSION.module


def unavailable_reason() -> str | None:
    return EXTENSION.error

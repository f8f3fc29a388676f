"""Shared-prefix attention on CPU with decode as one compiled call (same API as `shared_prefix`).

Decode runs `csrc/cpu_shared_prefix.cpp`: the same two fused-attention calls and merge as the
torch path, with the glue between them in C++ rather than a dozen Python-level op calls, which
cost tens of microseconds each once an engine step (or a benchmark loop) has evicted the
caches. Results are the same as the torch path's (to fp32 rounding).

The extension is compiled by torch.utils.cpp_extension, which needs a C++ compiler and ninja; it
is built once per machine and torch version and cached under
TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions). Nothing is built implicitly: `load()`
builds or loads it now, `start_loading()` in a background thread (the engine does that at
start). Until it is loaded, where it cannot be built, or for inputs it does not cover (not all
fp32 on CPU, an empty prefix or suffix, lists), the torch path runs. PARROT_CPU_EXTENSION=0 turns it off.
Prefill is the torch path.
"""

from __future__ import annotations

import torch

from .extension import CppExtension
from .inputs import Lengths, Ragged
from .shared_prefix import shared_prefix_decode as torch_decode
from .shared_prefix import shared_prefix_prefill

__all__ = ["load", "loaded", "shared_prefix_decode", "shared_prefix_prefill", "start_loading"]

_EXTENSION = CppExtension(
    "parrot_cpu_shared_prefix", ["cpu_shared_prefix.cpp"], "CPU shared-prefix"
)


def load() -> bool:
    """Build (first time) or load the extension now; True if decode will use it. Blocks, also
    while a background load is under way."""
    return _EXTENSION.load() is not None


def start_loading() -> None:
    """Build or load the extension in a background thread; decode uses it once it is ready."""
    _EXTENSION.start()


def loaded() -> bool:
    """Whether decode uses the extension now."""
    return _EXTENSION.module is not None


def unavailable_reason() -> str | None:
    """Why the extension could not be loaded (None if it is loaded or was never tried)."""
    return _EXTENSION.error


def shared_prefix_decode(
    q: torch.Tensor,
    prefix_k: torch.Tensor,
    prefix_v: torch.Tensor,
    suffix_k: Ragged,
    suffix_v: Ragged,
    suffix_lens: Lengths = None,
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """`parrot_kernels.shared_prefix_decode`, through the compiled extension once loaded.

    The extension checks the shapes itself (ValueError) and hands back None for inputs it does
    not cover; lists of suffixes or lengths go straight to the torch path.
    """
    module = _EXTENSION.module
    if (
        module is not None
        and isinstance(suffix_k, torch.Tensor)
        and isinstance(suffix_v, torch.Tensor)
        and (suffix_lens is None or isinstance(suffix_lens, torch.Tensor))
    ):
        out = module.decode(q, prefix_k, prefix_v, suffix_k, suffix_v, suffix_lens, scale)
        if out is not None:
            return out
    return torch_decode(q, prefix_k, prefix_v, suffix_k, suffix_v, suffix_lens, scale=scale)

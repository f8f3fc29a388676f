"""Shared-prefix attention on CPU with decode as one compiled call (same API as `shared_prefix`).

Decode runs `csrc/cpu_shared_prefix.cpp`: the same two fused-attention calls and merge as the
torch path, with the glue between them in C++ rather than a dozen Python-level op calls, which
cost tens of microseconds each once an engine step (or a benchmark loop) has evicted the
caches. Results are the same as the torch path's (to fp32 rounding).

The extension is compiled by torch.utils.cpp_extension, which needs a C++ compiler and ninja; it
is built once per machine and torch version (about 35 s on 2 cores) and cached under
TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions). Nothing is built implicitly: `load()`
builds or loads it now, `start_loading()` in a background thread (the engine does that at
start). Until it is loaded, where it cannot be built, or for inputs it does not cover (not all
fp32 on CPU, an empty prefix or suffix, lists), the torch path runs. PARROT_CPU_EXTENSION=0 turns it off.
Prefill is the torch path.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch

from .inputs import Lengths, Ragged
from .shared_prefix import shared_prefix_decode as torch_decode
from .shared_prefix import shared_prefix_prefill

__all__ = ["load", "loaded", "shared_prefix_decode", "shared_prefix_prefill", "start_loading"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "cpu_shared_prefix.cpp"
NAME = "parrot_cpu_shared_prefix"
DISABLE_ENV = "PARROT_CPU_EXTENSION"  # "0": never build or load it


def _build_dir() -> Path:
    """One build per torch and Python version, where torch keeps its extensions."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    tag = f"torch{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}"
    path = Path(root) / f"{NAME}-{tag}".replace("+", "_")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _build() -> ModuleType:
    from torch.utils import cpp_extension

    build_dir = _build_dir()
    # torch guards a build with a plain lock file, which a process killed mid-build leaves
    # behind, and then every later load waits on it forever. An flock is released with its
    # process: whoever holds it is the only builder, so a torch lock file found then is stale.
    with open(build_dir / "parrot.flock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        (build_dir / "lock").unlink(missing_ok=True)
        return cpp_extension.load(
            NAME, [str(SOURCE)], extra_cflags=["-O3"], build_directory=str(build_dir)
        )


class _Extension:
    """The compiled module, built at most once per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.module: ModuleType | None = None
        self.error: str | None = None  # why it is not available, once a load has failed

    def load(self) -> ModuleType | None:
        with self._lock:
            if self.module is None and self.error is None:
                if os.environ.get(DISABLE_ENV) == "0":
                    self.error = f"turned off by {DISABLE_ENV}=0"
                    return None
                try:
                    self.module = _build()
                except Exception as exc:  # no compiler, no ninja, a failed build: torch path
                    self.error = f"{type(exc).__name__}: {exc}".strip()
                    first = self.error.splitlines()[0][:300]  # a failed build's log is long
                    log.warning("CPU shared-prefix extension unavailable (%s)", first)
                else:
                    log.info("CPU shared-prefix extension loaded")
            return self.module

    def start(self) -> None:
        with self._lock:
            if self._thread is None and self.module is None and self.error is None:
                self._thread = threading.Thread(
                    target=self.load, name="parrot-cpu-extension", daemon=True
                )
                self._thread.start()


_EXTENSION = _Extension()


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

"""A torch C++ extension of ours, compiled on first use and then loaded from its cache.

torch.utils.cpp_extension compiles it (a C++ compiler and ninja are needed) once per machine,
torch and Python version and checkout, under TORCH_EXTENSIONS_DIR (default
~/.cache/torch_extensions).
Nothing builds implicitly: `load()` builds or loads it now, `start()` in a background thread.
Where it cannot be built, or with PARROT_CPU_EXTENSION=0, `load()` returns None and says why in
`error`; callers then take their torch path.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["DISABLE_ENV", "CppExtension"]

log = logging.getLogger(__name__)

DISABLE_ENV = "PARROT_CPU_EXTENSION"  # "0": never build or load any of them
CSRC = Path(__file__).parent / "csrc"


class CppExtension:
    """One compiled module (`name`, from `sources` under csrc/), built at most once per process."""

    def __init__(
        self,
        name: str,
        sources: Sequence[str],
        what: str,
        extra_cflags: Sequence[str] = (),
        extra_ldflags: Sequence[str] = (),
    ) -> None:
        self.name, self.what = name, what
        self.sources = [CSRC / s for s in sources]
        self.extra_cflags = ["-O3", *extra_cflags]
        self.extra_ldflags = list(extra_ldflags)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.module: ModuleType | None = None
        self.error: str | None = None  # why it is not available, once a load has failed

    def _build_dir(self) -> Path:
        root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
        tag = f"torch{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}"
        # The build names its sources by absolute path: two checkouts sharing one build folder
        # would rebuild it each time the other one loads.
        where = hashlib.sha256(str(CSRC.resolve()).encode()).hexdigest()[:8]
        path = Path(root) / f"{self.name}-{tag}-{where}".replace("+", "_")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _build(self) -> ModuleType:
        from torch.utils import cpp_extension

        build_dir = self._build_dir()
        # torch guards a build with a plain lock file, which a process killed mid-build leaves
        # behind, and then every later load waits on it forever. An flock is released with its
        # process: whoever holds it is the only builder, so a torch lock file found then is stale.
        with open(build_dir / "parrot.flock", "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            (build_dir / "lock").unlink(missing_ok=True)
            return cpp_extension.load(
                self.name,
                [str(s) for s in self.sources],
                extra_cflags=self.extra_cflags,
                extra_ldflags=self.extra_ldflags,
                build_directory=str(build_dir),
            )

    def load(self) -> ModuleType | None:
        """Build (first time) or load it now; blocks, also while a background load runs."""
        with self._lock:
            if self.module is None and self.error is None:
                if os.environ.get(DISABLE_ENV) == "0":
                    self.error = f"turned off by {DISABLE_ENV}=0"
                    return None
                try:
                    self.module = self._build()
                except Exception as exc:  # no compiler, no ninja, a failed build: torch path
                    self.error = f"{type(exc).__name__}: {exc}".strip()
                    first = self.error.splitlines()[0][:300]  # a failed build's log is long
                    log.warning("%s extension unavailable (%s)", self.what, first)
                else:
                    log.info("%s extension loaded", self.what)
            return self.module

    def start(self) -> None:
        """Build or load it in a background thread."""
        with self._lock:
            if self._thread is None and self.module is None and self.error is None:
                self._thread = threading.Thread(
                    target=self.load, name=f"parrot-{self.name}", daemon=True
                )
                self._thread.start()

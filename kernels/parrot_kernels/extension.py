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
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["DISABLE_ENV", "CppExtension"]

log = logging.getLogger(__name__)

DISABLE_ENV = "PARROT_CPU_EXTENSION"  # "0": never build or load any of them
CSRC = Path(__file__).parent / "csrc"
HEARTBEAT_SECONDS = 30.0  # between "still building" lines


class _Heartbeat:
    """While its block runs, logs `what` and the time so far every `HEARTBEAT_SECONDS`."""

    def __init__(self, what: str, enabled: bool = True) -> None:
        self.what, self.enabled = what, enabled
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="parrot-heartbeat", daemon=True)

    def _beat(self) -> None:
        start = time.monotonic()
        while not self._done.wait(HEARTBEAT_SECONDS):
            log.info("%s (%.0f s so far)", self.what, time.monotonic() - start)

    def __enter__(self) -> _Heartbeat:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()


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

    def _build(self) -> tuple[ModuleType, bool]:
        """The module, and whether it came from the cache (no compiler ran)."""
        build_dir = self._build_dir()
        # A first build takes minutes (or a rebuild after the sources changed): say so, and
        # keep saying it, so a slow start is not mistaken for a hang.
        built = build_dir / f"{self.name}.so"
        sources = [*self.sources, *CSRC.glob("*.h")]
        fresh = built.is_file() and built.stat().st_mtime >= max(p.stat().st_mtime for p in sources)
        if not fresh:
            log.info("building the %s extension (first run only, a few minutes)", self.what)
        with _Heartbeat(f"still building the {self.what} extension", enabled=not fresh):
            module = self._build_locked(build_dir)
        return module, fresh

    def _build_locked(self, build_dir: Path) -> ModuleType:
        from torch.utils import cpp_extension

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
                start = time.monotonic()
                try:
                    self.module, cached = self._build()
                except Exception as exc:  # no compiler, no ninja, a failed build: torch path
                    self.error = f"{type(exc).__name__}: {exc}".strip()
                    first = self.error.splitlines()[0][:300]  # a failed build's log is long
                    log.warning("%s extension unavailable (%s)", self.what, first)
                else:
                    took = time.monotonic() - start
                    if cached:
                        log.debug("%s extension loaded from the cache (%.1f s)", self.what, took)
                    else:
                        log.info("%s extension built in %.0f s", self.what, took)
            return self.module

    def start(self) -> None:
        """Build or load it in a background thread."""
        with self._lock:
            if self._thread is None and self.module is None and self.error is None:
                self._thread = threading.Thread(
                    target=self.load, name=f"parrot-{self.name}", daemon=True
                )
                self._thread.start()

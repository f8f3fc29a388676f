"""Progress of a long start-up step: a tqdm bar when stderr is a terminal, else (a service's log,
a file) a log line every `LOG_EVERY_SECONDS` and one at the end."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
LOG_EVERY_SECONDS = 10.0


def progress(items: Sequence[T], desc: str, unit: str, log: logging.Logger) -> Iterator[T]:
    """Yields `items`, showing how far it got; `desc` names the step ("dequantising X.gguf")."""
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, unit=unit)
        return
    start = last = time.monotonic()
    for done, item in enumerate(items):
        now = time.monotonic()
        if now - last >= LOG_EVERY_SECONDS:
            log.info("%s: %d/%d %ss (%.0f s so far)", desc, done, len(items), unit, now - start)
            last = now
        yield item
    log.info("%s: %d %ss in %.1f s", desc, len(items), unit, time.monotonic() - start)

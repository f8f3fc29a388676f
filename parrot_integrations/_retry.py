"""When the SDK retries a request, and how long it waits first."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx

from .errors import InvalidRequestError

DEFAULT_MAX_RETRIES = 2
# A Retry-After longer than this is not honoured (we back off as usual instead).
MAX_RETRY_AFTER = 60.0
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter on 429/503 and on connection errors that mean the
    request never left (so a retry cannot run anything twice)."""

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = 0.5  # seconds before the first retry (before jitter)
    backoff_max: float = 8.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_base < 0 or self.backoff_max < 0:
            raise InvalidRequestError(
                f"max_retries, backoff_base and backoff_max must be >= 0, got {self}"
            )

    def backoff(self, attempt: int) -> float:
        """Delay before retry number `attempt` (0-based): base * 2^attempt, capped, with the
        upper half jittered so clients that failed together do not retry together."""
        delay = min(self.backoff_max, self.backoff_base * 2**attempt)
        return delay / 2 + random.uniform(0, delay / 2)

    def delay_after_response(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying this response, or None when it is final."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        after = retry_after(response)
        return after if after is not None else self.backoff(attempt)

    def delay_after_error(self, error: httpx.TransportError, attempt: int) -> float | None:
        """Seconds to wait before retrying after a transport error, or None when it is final.
        Only errors before the request was sent are retried (a read timeout is not)."""
        unsent = isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout))
        if not unsent or attempt >= self.max_retries:
            return None
        return self.backoff(attempt)


def retry_after(response: httpx.Response) -> float | None:
    """The response's Retry-After in seconds (a number or an HTTP date), if usable."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if seconds <= MAX_RETRY_AFTER else None

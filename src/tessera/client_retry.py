"""When the client tries a request again, and how long it waits first.

Pure. A request is retried after a connection error or timeout and after the statuses that
say "not now" (RFC 9110 §15.5.9 408, RFC 6585 §4 429, RFC 9110 §15.6 500/502/503/504), at
most ``attempts`` times in all. The wait doubles from ``base_delay`` up to ``max_delay`` with
jitter (so that many clients do not come back in step), unless the server said how long in
``Retry-After`` (RFC 9110 §10.2.3), which is honoured up to ``max_retry_after``.

Retrying STOW-RS is safe: storing the same instance twice is not an error for a conformant
archive (Tessera answers success for the same bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(status: int) -> bool:
    return status in TRANSIENT_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    """Tries in all, the first included; 1 means never retry."""
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a request needs at least one attempt")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays cannot be negative")

    def should_retry(self, attempt: int) -> bool:
        """Whether the failed ``attempt`` (1 for the first) may be followed by another."""
        return attempt < self.attempts

    def delay(self, attempt: int, retry_after: float | None = None, jitter: float = 1.0) -> float:
        """Seconds to wait after the failed ``attempt``; ``jitter`` in [0, 1] picks a point in
        the upper half of the backoff window ("equal jitter"), 1 being its end."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        window = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return window * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3);
    None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())

"""Backoff policy: exponential growth with full jitter, capped; and Retry-After parsing.

The delay before attempt ``n + 1`` (after ``n`` failed attempts, ``n >= 1``) is::

    ceiling = min(cap, base * multiplier ** (n - 1))
    delay   = uniform(0, ceiling)        # "full jitter"
    delay   = max(delay, retry_after)    # a vendor's Retry-After always wins

Full jitter spreads retries of many tasks that failed together, so they do not return together
(see "Exponential Backoff And Jitter", AWS Architecture Blog, 2015). A ``Random`` is injected so
tests are deterministic; ``RetryPolicy.testing()`` retries with no delay at all.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from .units import parse_duration_range

__all__ = ["RetryPolicy", "parse_retry_after"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try a task (``attempts`` in all, the first included) and how long to wait."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 60.0
    multiplier: float = 2.0
    jitter: bool = True
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.base < 0 or self.cap < self.base:
            raise ValueError(f"backoff needs 0 <= first <= largest, got {self.base}..{self.cap}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")

    @classmethod
    def parse(cls, attempts: int, backoff: str, **kwargs: object) -> RetryPolicy:
        """Build from the plan-file spelling: ``attempts = 5, backoff = "0.5s..60s"``."""
        base, cap = parse_duration_range(backoff)
        return cls(attempts=attempts, base=base, cap=cap, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def testing(cls, attempts: int = 5) -> RetryPolicy:
        """A policy with zero backoff, for tests that want retries without waiting."""
        return cls(attempts=attempts, base=0.0, cap=0.0, jitter=False)

    def should_retry(self, failed_attempts: int) -> bool:
        """True while fewer than ``attempts`` tries have failed."""
        return failed_attempts < self.attempts

    def ceiling(self, failed_attempts: int) -> float:
        """The largest delay after ``failed_attempts`` failures (before jitter)."""
        exponent = max(failed_attempts - 1, 0)
        # Guard the power against overflow on absurd attempt counts.
        if exponent > 1000:
            return self.cap
        return min(self.cap, self.base * self.multiplier**exponent)

    def delay(self, failed_attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the next attempt; never less than a vendor's ``retry_after``."""
        ceiling = self.ceiling(failed_attempts)
        wait = self.rng.uniform(0.0, ceiling) if self.jitter else ceiling
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


def parse_retry_after(value: str, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP date (RFC 9110 §10.2.3).

    A date needs ``now`` (epoch seconds); a value that is neither gives None, so a garbled header
    falls back to the configured cooldown instead of failing the task.
    """
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if seconds == seconds else None  # NaN is garbage
    if now is None:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - now, 0.0)

"""Durations as people write them in plan files: ``"500ms"``, ``"30s"``, ``"1m"``, ``"1d"``.

One parser for every duration in synctask, so ``"1m"`` means a minute everywhere (never a month).
"""

from __future__ import annotations

import math
import re

__all__ = ["UNITS", "parse_duration", "parse_duration_range", "format_duration"]

UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
}

LONGEST = 100 * 365 * 86400.0  # longer than any window, timeout or schedule a plan means

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d|w)\s*$")


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``: a number (seconds) or a string such as ``"1.5s"`` or ``"2h"``.

    Raises ``ValueError`` with the accepted forms when ``value`` is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '30s' or '1m', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if not match:
            raise ValueError(
                f"expected a duration such as '500ms', '30s', '1m', '2h' or '1d', got {value!r}"
            )
        seconds = float(match.group(1)) * UNITS[match.group(2)]
    if not math.isfinite(seconds) or abs(seconds) > LONGEST:
        raise ValueError(f"a duration must be finite and at most 100 years, got {value!r}")
    return seconds


def parse_duration_range(value: str) -> tuple[float, float]:
    """``"0.5s..60s"`` → ``(0.5, 60.0)``: the first and the largest backoff delay."""
    low, sep, high = value.partition("..")
    if not sep:
        raise ValueError(f"expected a range such as '0.5s..60s', got {value!r}")
    return parse_duration(low), parse_duration(high)


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` in the largest whole unit (``86400`` → ``"1d"``)."""
    if seconds <= 0:
        return f"{seconds:g}s"
    for unit in ("w", "d", "h", "m", "s"):
        size = UNITS[unit]
        count = seconds / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"

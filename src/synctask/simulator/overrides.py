"""``synctask simulate --limit NAME=RATE/PER``: a profile's limits raised (or lowered) by hand, so
anyone can measure synctask against a vendor that is never the bottleneck, or a strict one."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["LIMIT_NAMES", "limit_overrides"]

# Each name: the config field it sets and the window (vendor seconds) that field counts over
# (None: any window, the hidden profile's own limits).
LIMIT_NAMES: dict[str, tuple[str, float | None]] = {
    "tushare": ("tushare_per_minute", 60.0),
    "tushare-daily": ("tushare_per_day", 86_400.0),
    "binance": ("binance_weight_per_minute", 60.0),
    "rest": ("rest_per_minute", 60.0),
    "hidden": ("hidden_limits", None),
}


def limit_overrides(texts: Iterable[str]) -> dict[str, Any]:
    """``["rest=1000000/1s", "hidden=100/10s"]`` as ``SimulatorConfig`` fields. A profile that
    counts per minute (or day) takes the same pace over its own window (1000/1s: 60,000 a
    minute); the hidden profile takes each rate as written (several: all hold)."""
    from ..learning import parse_rate

    fields: dict[str, Any] = {}
    hidden: list[tuple[int, float, bool]] = []
    for text in texts:
        name, sep, rate = text.partition("=")
        name = name.strip()
        if not sep or name not in LIMIT_NAMES:
            raise ValueError(f"--limit takes NAME=RATE/PER with NAME one of {', '.join(LIMIT_NAMES)}, "
                             f"like rest=1000000/1s (got {text!r})")
        try:
            quota = parse_rate(rate.strip())
        except ValueError:
            raise ValueError(f"--limit {text!r}: write the rate as RATE/PER, like {name}=1000/1s") from None
        field, window = LIMIT_NAMES[name]
        if window is None:
            hidden.append((quota.rate, quota.per, False))
        else:
            fields[field] = max(1, math.floor(quota.rate * window / quota.per))
    if hidden:
        fields["hidden_limits"] = tuple(hidden)
    return fields

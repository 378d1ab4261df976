"""The demo vendor: Python tasks that behave like a market-data API, for ``synctask demo``.

Deterministic: the same parameters always give the same rows and the same failures, so two
runs of the demo tell the same story (and a re-run after Ctrl-C completes the same data).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import Any

from .errors import InvalidRequest, RateLimited, TransientError

_LATENCY = 0.05


def _unit(*parts: Any) -> float:
    """A stable pseudo-random number in [0, 1) from the parameters."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


async def quote(symbol: str, day: Any) -> list[dict[str, Any]]:
    """One day's closing quote; about 4% of first attempts fail transiently and are retried."""
    await asyncio.sleep(_LATENCY * (0.5 + _unit(symbol, day, "lat")))
    key = (symbol, str(day))
    if _unit(*key, "flaky") < 0.04 and key not in _retried:
        _retried.add(key)
        raise TransientError("503 Service Unavailable")
    price = 100 + 50 * _unit(symbol, "base") + 5 * _unit(*key)
    return [{"symbol": symbol, "day": str(day), "close": round(price, 2)}]


_retried: set[tuple[str, str]] = set()


async def daily_bar(ts_code: str, trade_date: str) -> list[dict[str, Any]]:
    """A daily bar; an unknown ts_code is an invalid request (fails, the plan goes on)."""
    await asyncio.sleep(_LATENCY * (0.5 + _unit(ts_code, trade_date)))
    if ts_code.startswith("BAD"):
        raise InvalidRequest(f"unknown ts_code {ts_code!r}")
    base = 10 + 20 * _unit(ts_code)
    return [{"ts_code": ts_code, "trade_date": trade_date, "open": round(base, 2),
             "close": round(base * (0.97 + 0.06 * _unit(ts_code, trade_date)), 2)}]


_VENDOR_RATE = 8  # per second: stricter than the 12/s the demo plan file configures
_minute_calls: deque[float] = deque()


async def minute_bars(symbol: str, hour: int) -> list[dict[str, Any]]:
    """An hour of minute bars from a vendor stricter than configured: it answers 429."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    while _minute_calls and _minute_calls[0] <= now - 1.0:
        _minute_calls.popleft()
    if len(_minute_calls) >= _VENDOR_RATE:
        raise RateLimited("429 Too Many Requests", retry_after=1.5)
    _minute_calls.append(now)
    await asyncio.sleep(_LATENCY)
    return [{"symbol": symbol, "minute": hour * 60 + m, "price": round(100 * (1 + _unit(symbol, hour, m) / 50), 3)}
            for m in range(60)]

"""Deterministic market data: the same seed and parameters always give the same rows."""

from __future__ import annotations

import hashlib
from typing import Any


def unit(seed: int, *parts: Any) -> float:
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def daily_row(seed: int, ts_code: str, trade_date: str) -> list[Any]:
    """A Tushare ``daily`` row: ts_code, trade_date, open, high, low, close, vol."""
    base = 5 + 95 * unit(seed, ts_code)
    open_ = round(base * (0.95 + 0.1 * unit(seed, ts_code, trade_date, "o")), 2)
    close = round(base * (0.95 + 0.1 * unit(seed, ts_code, trade_date, "c")), 2)
    high = round(max(open_, close) * (1 + 0.02 * unit(seed, ts_code, trade_date, "h")), 2)
    low = round(min(open_, close) * (1 - 0.02 * unit(seed, ts_code, trade_date, "l")), 2)
    vol = round(1e5 * unit(seed, ts_code, trade_date, "v"), 1)
    return [ts_code, trade_date, open_, high, low, close, vol]


DAILY_FIELDS = ["ts_code", "trade_date", "open", "high", "low", "close", "vol"]


def kline(seed: int, symbol: str, open_time: int, interval_ms: int) -> list[Any]:
    """A Binance kline array, prices as strings the way Binance sends them."""
    base = 100 + 900 * unit(seed, symbol)
    o = base * (0.99 + 0.02 * unit(seed, symbol, open_time, "o"))
    c = base * (0.99 + 0.02 * unit(seed, symbol, open_time, "c"))
    h = max(o, c) * (1 + 0.005 * unit(seed, symbol, open_time, "h"))
    low = min(o, c) * (1 - 0.005 * unit(seed, symbol, open_time, "l"))
    v = 10 * unit(seed, symbol, open_time, "v")
    return [open_time, f"{o:.2f}", f"{h:.2f}", f"{low:.2f}", f"{c:.2f}", f"{v:.5f}",
            open_time + interval_ms - 1, f"{v * c:.2f}", int(100 * unit(seed, symbol, open_time, "n")),
            f"{v / 2:.5f}", f"{v * c / 2:.2f}", "0"]


def changing_records(seed: int, start: float, now: float, *, initial: int, every: float,
                     update_every: float) -> list[dict[str, Any]]:
    """The records of an API whose data grows and changes: ``initial`` records exist at vendor
    time ``start`` (made ``every`` seconds apart before it), one more comes every ``every``
    seconds after, and every third record is updated every ``update_every`` seconds. Each has
    an ``id``, a ``region``, an ``updated_at`` (ISO 8601 UTC) and a ``value`` that changes with it."""
    from datetime import UTC, datetime

    made = initial + int((now - start) // every) if now >= start else initial
    rows = []
    for k in range(made):
        created = start + (k - initial + 1) * every if k >= initial else start - (initial - k) * every
        updated = created
        if k % 3 == 0 and now > created:
            updated = created + ((now - created) // update_every) * update_every
        stamp = datetime.fromtimestamp(updated, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append({"id": k, "region": ("eu", "us")[k % 2], "updated_at": stamp,
                     "value": round(1000 * unit(seed, "record", k, stamp), 3)})
    return rows

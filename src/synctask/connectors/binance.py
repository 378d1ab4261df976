"""Binance spot market data: GET ``/api/v3/<api>``; request weights; used-weight headers.

``X-MBX-USED-WEIGHT-1M`` reconciles the limiter with Binance's own count. A 429 freezes the whole
vendor until Retry-After; a 418 means the IP is banned: the vendor is frozen for the ban's
length and the message says so loudly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from ..errors import ErrorRule, FatalError, InvalidRequest, RateLimited, TransientError
from ..model import Dataset, SyncTask, Vendor
from ..retry import parse_retry_after
from .base import Observation, Request, Response, Row, apply_rules, decode_json, malformed

KLINE_FIELDS = ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                "trades", "taker_buy_base", "taker_buy_quote", "ignore"]


class BinanceConnector:
    def __init__(self, vendor: Vendor, dataset: Dataset, rules: Sequence[ErrorRule] = ()) -> None:
        self.base = (vendor.base_url or "https://api.binance.com").rstrip("/")
        self.api = dataset.api
        self.rules = tuple(rules)

    def request(self, task: SyncTask) -> Request:
        params = {key: _text(value) for key, value in task.params.items()}
        return Request("GET", f"{self.base}/api/v3/{self.api}", params=params)

    def observations(self, response: Response) -> list[Observation]:
        used = response.header("X-MBX-USED-WEIGHT-1M")
        if used is not None and used.isdigit():
            return [Observation("vendor", int(used))]
        return []

    def parse(self, response: Response, task: SyncTask, now: float) -> list[Row]:
        status = response.status
        if status != 200:
            self._raise(response, now)
        data = decode_json(response, "binance")
        if self.api == "klines":
            extra = {k: task.params[k] for k in ("symbol", "interval") if k in task.params}
            return [{**extra, **row} for row in _klines(data)]
        if isinstance(data, dict):
            return [data]
        if isinstance(data, list) and all(isinstance(r, dict) for r in data):
            return data
        raise malformed("binance", f"expected an object or a list of objects, got {type(data).__name__}")

    def _raise(self, response: Response, now: float) -> None:
        status = response.status
        text = response.body.decode("utf-8", errors="replace")
        message = text[:200]
        try:
            import json

            message = str(json.loads(text).get("msg", message))
        except (ValueError, AttributeError):
            pass
        apply_rules(self.rules, status, text, message)
        retry_after = None
        raw = response.header("Retry-After")
        if raw is not None:
            retry_after = parse_retry_after(raw, now)
        if status == 418:
            raise RateLimited(f"BANNED: Binance banned this IP for {retry_after or 0:g}s ({message}); synctask "
                              "sends nothing to Binance until the ban ends", retry_after=retry_after, scope="vendor",
                              status=418)
        if status == 429:
            raise RateLimited(f"Binance: {message}", retry_after=retry_after, scope="vendor", status=429)
        if status >= 500:
            raise TransientError(f"HTTP {status} from Binance: {message}")
        if status in (401, 403):
            raise FatalError(f"Binance refused the request (HTTP {status}): {message}")
        raise InvalidRequest(f"Binance HTTP {status}: {message}")


def _klines(data: Any) -> list[Row]:
    if not isinstance(data, list):
        raise malformed("binance klines", f"expected a list of arrays, got {type(data).__name__}")
    rows: list[Row] = []
    for index, item in enumerate(data):
        if not isinstance(item, list) or len(item) < 11:
            raise malformed("binance klines", f"item {index} should be an array of 12 values, got {item!r:.80}")
        if not isinstance(item[0], int):
            raise malformed("binance klines", f"item {index} open time should be an integer, got {item[0]!r}")
        rows.append(dict(zip(KLINE_FIELDS, item)))
    return rows


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return str(int(moment.timestamp() * 1000))
    if isinstance(value, date):
        return str(int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000))
    return str(value)

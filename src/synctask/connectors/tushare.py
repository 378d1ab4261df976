"""Tushare Pro: POST ``{api_name, token, params, fields}``; ``{code, msg, data: {fields, items}}``.

``code != 0`` is classified by its message, including the vendor's Chinese wording: a per-minute
limit freezes the dataset (one window of its configured limit, else 60 s); a daily limit pauses
it until its window resets (its configured clock-aligned limit, else midnight Asia/Shanghai); a bad
token (code 40101, or HTTP 401/403) or an unknown api is fatal; anything else is an invalid request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

from ..errors import ErrorRule, FatalError, InvalidRequest, QuotaExhausted, RateLimited, TransientError
from ..limits import Quota
from ..model import Dataset, SyncTask, Vendor
from .base import Observation, Request, Response, Row, apply_rules, decode_json, malformed

SHANGHAI = ZoneInfo("Asia/Shanghai")


class TushareConnector:
    def __init__(self, vendor: Vendor, dataset: Dataset, rules: Sequence[ErrorRule] = ()) -> None:
        self.url = vendor.base_url or "http://api.tushare.pro"
        self.vendor = vendor  # its token, or the key each task took (several keys)
        self.api = dataset.api
        self.fields = str(dataset.options.get("fields", ""))
        self.rules = tuple(rules)
        self.has_window = any(isinstance(q, Quota) for q in dataset.limits)
        # A clock-aligned quota on the dataset is how the plan file says "the daily limit": the
        # limiter then knows exactly when it resets.
        self.has_daily = any(isinstance(q, Quota) and q.clock for q in dataset.limits)

    def request(self, task: SyncTask) -> Request:
        params = {key: _text(value) for key, value in task.params.items()}
        secret = self.vendor.secret(task.key)
        token = secret.reveal() if secret is not None else ""
        return Request("POST", self.url, json={"api_name": self.api, "token": token, "params": params,
                                               "fields": self.fields})

    def observations(self, response: Response) -> list[Observation]:
        """Tushare says its per-minute and daily limits in its refusals ("每分钟最多访问该接口200次"):
        a learned limit adopts them (nothing is counted: ``used`` 0)."""
        body = response.body
        if len(body) > 4096 or not any(words in body for words in _SAYS_LIMIT):
            return []
        try:  # its message, as sent (UTF-8) or JSON-escaped (\\u6700...)
            text = str(json.loads(body).get("msg") or "")
        except (ValueError, AttributeError):
            text = body.decode("utf-8", errors="replace")
        found = _STATED.search(text)
        if found is None:
            return []
        per = 60.0 if found.group(1) == "分钟" else 86400.0
        return [Observation("dataset", 0, per, None, int(found.group(2)), "Tushare's own message")]

    def parse(self, response: Response, task: SyncTask, now: float) -> list[Row]:
        if response.status >= 500:
            raise TransientError(f"HTTP {response.status} from tushare")
        if response.status != 200:
            body = response.body.decode("utf-8", errors="replace")[:200]
            apply_rules(self.rules, response.status, body, "")
            if response.status in (401, 403):
                raise FatalError(f"tushare answered HTTP {response.status}: the token was refused or may not use "
                                 f"api {self.api!r} ({body}); check the vendor's token variable and its permissions",
                                 status=response.status, scope="key")
            if response.status == 429:
                raise RateLimited(f"HTTP 429 from tushare: {body}", retry_after=None if self.has_window else 60.0,
                                  scope="dataset")
            raise InvalidRequest(f"HTTP {response.status} from tushare: {body}")
        data = decode_json(response, "tushare")
        if not isinstance(data, dict) or "code" not in data:
            raise malformed("tushare", f"expected an object with 'code', got {_short(data)}")
        code, msg = data["code"], str(data.get("msg") or "")
        if code != 0:
            apply_rules(self.rules, response.status, response.body.decode("utf-8", errors="replace"), msg)
            raise self._failure(code, msg, now)
        return _rows(data.get("data"))

    def _failure(self, code: Any, msg: str, now: float) -> Exception:
        if "每分钟最多访问" in msg:
            return RateLimited(msg, retry_after=None if self.has_window else 60.0, scope="dataset")
        if "每天最多访问" in msg:
            return QuotaExhausted(msg, retry_after=None if self.has_daily else _until_midnight(now), scope="dataset")
        if code == 40101 or "token" in msg.lower():
            return FatalError(f"tushare refused the token ({msg}); check the vendor's token variable", scope="key")
        if "接口名" in msg:
            return FatalError(f"tushare does not know api {self.api!r} ({msg})")
        return InvalidRequest(f"tushare code {code}: {msg}")


_SAYS_LIMIT = ("最多访问".encode(), b"\\u6700\\u591a\\u8bbf\\u95ee", b"\\u6700\\u591A\\u8BBF\\u95EE")
_STATED = re.compile(r"每(分钟|天)最多访问该接口(\d+)次")


def _rows(data: Any) -> list[Row]:
    if not isinstance(data, dict):
        raise malformed("tushare", f"'data' should be an object, got {_short(data)}")
    fields, items = data.get("fields"), data.get("items")
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise malformed("tushare", f"'data.fields' should be a list of names, got {_short(fields)}")
    if not isinstance(items, list):
        raise malformed("tushare", f"'data.items' should be a list, got {_short(items)}")
    rows: list[Row] = []
    for index, item in enumerate(items):
        if not isinstance(item, list) or len(item) != len(fields):
            raise malformed("tushare", f"data.items[{index}] should have {len(fields)} values, got {_short(item)}")
        rows.append(dict(zip(fields, item)))
    return rows


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y%m%d")
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    return str(value)


def _until_midnight(now: float) -> float:
    local = datetime.fromtimestamp(now, SHANGHAI)
    midnight = datetime.combine(local.date() + timedelta(days=1), dtime(0), tzinfo=SHANGHAI)
    return midnight.timestamp() - now


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"

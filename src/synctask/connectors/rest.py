"""A generic REST connector, configured in the plan file.

Dataset ``options``::

    method = "GET"                         # or POST
    path = "/v1/orders"                    # "{name}" is filled from task parameters
    query = { since = "{day}", size = "100" }
    json = { ... }                         # POST body template
    headers = { Authorization = "Bearer {token}" }   # {token}: the vendor's secret (also in query)
    records = "data.items"                 # where the rows are in the answer ("" = the whole body)
    pagination = { kind = "page", param = "page", start = 1, size = 100 }
               # { kind = "offset", param = "offset", size = 100 }
               # { kind = "cursor", param = "cursor", path = "meta.next_cursor" }
               # { kind = "link" }          (the Link header's rel="next")
    incremental = { cursor = "updated_at", param = "updated_since", initial = "2024-01-01T00:00:00Z",
                    lag = "5m" }          # cursor sync (see ``incremental``): sent as ?updated_since=

Every page is its own task (a follow-up of the one before), so each request is admitted by the
limiter and a resumed run starts from the page it stopped at. Rate-limit headers feed the
limiter: ``RateLimit-Policy``/``RateLimit`` (IETF), ``X-RateLimit-Remaining``/``-Reset``, and
``Retry-After`` on 429/503.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence, Sized
from typing import Any
from urllib.parse import urljoin

from ..errors import ErrorRule, FatalError, InvalidRequest, PlanMismatch, RateLimited, TransientError
from ..model import Dataset, Secret, SyncTask, Vendor
from ..retry import parse_retry_after
from .base import Observation, Page, Request, Response, Row, apply_rules, decode_json, malformed
from .headers import rate_limit_observations
from .streamed import STREAM_ABOVE, RowStream, first_at

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;[^,]*rel="?next"?', re.IGNORECASE)


class RestConnector:
    def __init__(self, vendor: Vendor, dataset: Dataset, rules: Sequence[ErrorRule] = ()) -> None:
        options = {**dict(vendor.options), **dict(dataset.options)}
        self.base = (vendor.base_url or "").rstrip("/")
        self.vendor = vendor  # its token, or the key each task took (several keys)
        self.method = str(options.get("method", "GET")).upper()
        self.path = str(options.get("path", f"/{dataset.api}"))
        self.query: Mapping[str, Any] = options.get("query", {})
        self.body: Any = options.get("json")
        self.headers: Mapping[str, Any] = options.get("headers", {})
        self._query_texts = [(k, str(v)) for k, v in self.query.items()]
        self._header_texts = [(k, str(v)) for k, v in self.headers.items()]
        self.records = str(options.get("records", ""))
        self.dataset = dataset.name
        self.pagination: Mapping[str, Any] = options.get("pagination", {})
        incremental = options.get("incremental") or {}
        self.since = str(incremental["param"]) if "param" in incremental else None  # cursor sync's parameter
        self.rules = tuple(rules)

    # --- requests -------------------------------------------------------------------------
    def request(self, task: SyncTask) -> Request:
        params = dict(task.params)
        next_url = params.pop("_next_url", None)
        token = self.vendor.secret(task.key)
        headers = {k: self._fill(v, params, token) for k, v in self._header_texts}
        if next_url is not None:  # a Link rel="next" page: the vendor wrote the whole URL
            return Request(self.method, str(next_url), headers=headers)
        query = {k: self._fill(v, params, token) for k, v in self._query_texts}  # ?apikey={token}
        page = self.pagination
        if page and page.get("param") in params:
            query[str(page["param"])] = str(params[str(page["param"])])
        if self.since is not None and self.since in params and not self._fills(self.since):
            query[self.since] = str(params[self.since])  # records since the cursor, unless a template says where
        body = _fill_json(self.body, params) if self.body is not None else None
        url = self.base + self._fill(self.path, params)
        return Request(self.method, url, params=query or None, json=body, headers=headers)

    def _fills(self, name: str) -> bool:
        """Whether a request template (path, query, headers, body) places parameter ``name``."""
        texts = [self.path, *map(str, self.query.values()), *map(str, self.headers.values()), str(self.body or "")]
        return any(f"{{{name}}}" in text for text in texts)

    def _fill(self, template: str, params: Mapping[str, Any], token: Secret | None = None) -> str:
        pieces = _pieces(template)  # text, name, text, name, ..., text
        if len(pieces) == 1:
            return template  # (the usual constant: nothing to fill)
        filled = [pieces[0]]
        for at in range(1, len(pieces), 2):
            name = pieces[at]
            if name == "token" and token is not None:
                filled.append(token.reveal())
            elif name in params:
                filled.append(str(params[name]))
            else:
                raise InvalidRequest(f"the template {template!r} needs parameter {name!r}, which the task lacks")
            filled.append(pieces[at + 1])
        return "".join(filled)

    # --- answers --------------------------------------------------------------------------
    def observations(self, response: Response) -> list[Observation]:
        return rate_limit_observations(response)

    def parse(self, response: Response, task: SyncTask, now: float) -> list[Row] | Page:
        if response.status != 200:
            self._raise(response, now)
        if len(response.body) > STREAM_ABOVE:
            return self._parse_streamed(response, task)
        data = decode_json(response, "REST")
        rows = _records(data, self.records, f"datasets.{self.dataset}.options.records")
        follow = self._next(task, response, data, rows)
        return Page(rows, follow, self._no_next_on_a_full_page(response, data, rows) if follow is None else None)

    def _parse_streamed(self, response: Response, task: SyncTask) -> Page:
        """A large answer: its records as a stream (see ``streamed``), the next page's cursor
        read on its own; what pagination looks at is the same as for a small answer."""
        body = bytes(response.body)
        rows: Sequence[Row] | RowStream = RowStream(body, self.records)
        if not rows:  # nothing at the path: an empty list, null, one record, or a wrong path
            found, value = first_at(body, self.records) if self.records else (True, [])
            if not found:
                raise PlanMismatch(f"expected a list of records at {self.records!r}, but the answer "
                                   f"({len(body) / 1048576:,.1f} MB) has nothing there; fix "
                                   f"datasets.{self.dataset}.options.records")
            rows = _records({"r": value}, "r", f"datasets.{self.dataset}.options.records")
        data: dict[str, Any] = {}
        if self.pagination.get("kind") == "cursor":
            path = str(self.pagination.get("path", "next_cursor"))
            found, cursor = first_at(body, path)
            if found:
                data = _nest(path, cursor)
        follow = self._next(task, response, data, rows)
        return Page(rows, follow, self._no_next_on_a_full_page(response, data, rows) if follow is None else None)

    def _no_next_on_a_full_page(self, response: Response, data: Any, rows: Sized) -> str | None:
        """A cursor path the answer does not have, or no Link header, after a full page: most
        likely a wrong path, and the rest would be skipped in silence; say so."""
        page = self.pagination
        kind, size = page.get("kind"), page.get("size")
        if not rows or kind not in ("cursor", "link") or (size is not None and len(rows) < int(size)):
            return None
        option = f"datasets.{self.dataset}.options.pagination"
        if kind == "link":
            if size is None or response.header("Link"):
                return None
            return (f"a full page of {len(rows)} rows came without a Link rel=\"next\" header, so no further "
                    f"page is fetched; check {option}")
        path = str(page.get("path", "next_cursor"))
        found: Any = data
        for part in filter(None, path.split(".")):
            if not isinstance(found, dict) or part not in found:
                keys = ", ".join(map(str, found)) if isinstance(found, dict) else type(found).__name__
                return (f"the answer has no {path!r} for the next page's cursor (there: {keys}) after a page "
                        f"of {len(rows)} rows, so no further page is fetched; fix {option}.path if it is wrong")
            found = found[part]
        return None

    def _next(self, task: SyncTask, response: Response, data: Any, rows: Sized) -> Mapping[str, Any] | None:
        page = self.pagination
        kind = page.get("kind")
        if not kind or not rows:
            return None
        params = dict(task.params)
        if kind == "page":
            name = str(page.get("param", "page"))
            if "size" in page and len(rows) < int(page["size"]):
                return None  # a short page is the last; without a size, an empty page ends it
            current = int(params.get(name, page.get("start", 1)))
            return {**params, name: current + 1}
        if kind == "offset":
            param = str(page.get("param", "offset"))
            size = int(page.get("size", len(rows)))
            if len(rows) < size:
                return None
            return {**params, param: int(params.get(param, 0)) + size}
        if kind == "cursor":
            cursor = _dig(data, str(page.get("path", "next_cursor")))
            if cursor in (None, ""):
                return None
            return {**params, str(page.get("param", "cursor")): cursor}
        if kind == "link":
            header = response.header("Link") or ""
            match = _LINK_NEXT.search(header)
            if match is None:
                return None
            here = str(params.get("_next_url") or "")
            return {**params, "_next_url": urljoin(here or self.base + "/", match.group(1))}
        raise FatalError(f"unknown pagination kind {kind!r}; use page, offset, cursor or link")

    def _raise(self, response: Response, now: float) -> None:
        status = response.status
        text = response.body.decode("utf-8", errors="replace")
        apply_rules(self.rules, status, text, "")
        snippet = " ".join(text.split())[:200]
        raw = response.header("Retry-After")
        retry_after = parse_retry_after(raw, now) if raw is not None else None
        if status == 429:
            raise RateLimited(snippet, retry_after=retry_after, scope="vendor", status=429)
        if status >= 500:
            raise TransientError(f"HTTP {status}: {snippet}", retry_after=retry_after)
        if status in (401, 403):
            raise FatalError(f"{snippet}; check the credentials", status=status, scope="key")
        raise InvalidRequest(f"HTTP {status}: {snippet}")


def _records(data: Any, path: str, option: str) -> list[Row]:
    """The records at ``path``; a path the answer does not have is the plan's mistake, not the
    vendor's: it stops the plan, saying which keys the answer does have."""
    found = data
    walked: list[str] = []
    for part in filter(None, path.split(".")):
        if not isinstance(found, dict) or part not in found:
            where = ".".join(walked) or "the top"
            keys = ", ".join(map(str, found)) if isinstance(found, dict) else f"a {type(found).__name__}"
            raise PlanMismatch(f"expected a list of records at {path!r}, but at {where} the answer has {keys}"
                               f" and no {part!r}; fix {option}")
        walked.append(part)
        found = found[part]
    if found is None:
        return []  # the path is there, with nothing in it: an empty page
    if isinstance(found, dict):
        return [found]
    if not isinstance(found, list):
        raise malformed("REST", f"expected a list of records at {path or 'the top'!r}, got {type(found).__name__}")
    for index, item in enumerate(found):
        if not isinstance(item, dict):
            raise malformed("REST", f"record {index} at {path or 'the top'!r} is {type(item).__name__}, not an object")
    return found


def _nest(path: str, value: Any) -> dict[str, Any]:
    """``{"meta": {"next_cursor": value}}`` for ``meta.next_cursor``: what a small answer would hold."""
    out: Any = value
    for part in reversed([p for p in path.split(".") if p]):
        out = {part: out}
    return out if isinstance(out, dict) else {}


def _dig(data: Any, path: str) -> Any:
    for part in filter(None, path.split(".")):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


@functools.lru_cache(maxsize=4096)
def _pieces(template: str) -> tuple[str, ...]:
    """A template cut at its placeholders, once: the text between them and their names, in turn."""
    return tuple(_PLACEHOLDER.split(template))


def _fill_json(template: Any, params: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole and whole.group(1) in params:
            return params[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(params.get(m.group(1), m.group(0))), template)
    if isinstance(template, dict):
        return {k: _fill_json(v, params) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill_json(v, params) for v in template]
    return template


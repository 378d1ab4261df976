"""Cursor sync: each run asks a REST dataset only for the records changed since the last one.

A dataset with ``options.incremental = { cursor = "updated_at", param = "updated_since",
initial = "2024-01-01T00:00:00Z", lag = "5m" }`` keeps, per partition (each combination of its
plan's other parameters), the highest ``cursor`` value its sink has durably written. A run asks
each partition for the records since that value minus ``lag`` (``initial`` the first time): the
boundary rows come again and the keyed sink replaces them. The cursor moves only after the
sink wrote the rows, and with pagination only when every page of that request is written, so a
kill in between fetches those rows again and never skips them. Cursor values compare as
instants: ISO 8601 text (a naive one in the option's ``tz``, default UTC) or epoch numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from .store import Store
from .units import parse_duration

__all__ = ["Incremental", "Cursors", "instant"]

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Incremental:
    """A dataset's cursor sync, from its ``options.incremental``."""

    cursor: str  # where the cursor is in each record (a dotted path)
    param: str  # the request parameter that asks for records since a cursor
    initial: datetime  # what the first run asks from
    lag: float = 0.0  # seconds asked again before the cursor (late commits, clock skew)
    format: str | None = None  # strftime for the parameter (default ISO 8601 in UTC: 2024-01-01T00:00:00Z)
    tz: tzinfo = UTC  # what a naive cursor value means

    pages: tuple[str, ...] = ("_next_url",)  # parameters pagination adds: not the partition's

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> Incremental | None:
        """From a dataset's options (its vendor's merged in); None when it has no cursor sync."""
        spec = options.get("incremental")
        if not spec:
            return None
        tz = ZoneInfo(spec["tz"]) if spec.get("tz") else UTC
        paging = options.get("pagination") or {}
        kind = str(paging.get("kind"))
        page = paging.get("param") or {"page": "page", "offset": "offset", "cursor": "cursor"}.get(kind)
        return cls(str(spec["cursor"]), str(spec["param"]), instant(spec["initial"], tz),
                   parse_duration(spec.get("lag", 0)), spec.get("format"), tz,
                   ("_next_url", str(page)) if page else ("_next_url",))

    def since(self, cursor: datetime | None) -> str:
        """The parameter's value for records since ``cursor`` (minus the lag)."""
        at = (cursor - timedelta(seconds=self.lag)) if cursor is not None else self.initial
        at = at.astimezone(UTC)
        if self.format:
            return at.strftime(self.format)
        return at.isoformat(timespec="microseconds" if at.microsecond else "seconds").replace("+00:00", "Z")


def instant(value: Any, tz: tzinfo = UTC) -> datetime:
    """A cursor value as an aware instant: ISO 8601 text (naive: in ``tz``), or epoch seconds
    (milliseconds when above 10^11, as many APIs send them). Raises ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"a cursor is a time, got {value!r}")
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)
    if isinstance(value, str):
        text = value.strip()
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)
    raise ValueError(f"a cursor is an ISO 8601 time or epoch seconds, got {value!r}")


class _WithSince:
    """A plan's grid with each task's ``since`` parameter filled from its partition's cursor."""

    def __init__(self, grid: Any, fill: Callable[[Mapping[str, Any]], dict[str, Any]]) -> None:
        self._grid, self._fill = grid, fill

    def __len__(self) -> int:
        return len(self._grid)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(self._fill, self._grid)


class Cursors:
    """Each incremental dataset's cursors: read when a run binds its grid, moved when a request's
    rows (all its pages) are durably written."""

    def __init__(self, store: Callable[[], Store], options: Callable[[str], Mapping[str, Any] | None]) -> None:
        self._store = store
        self._options = options  # a dataset's options, its vendor's merged in (None: not known)
        self.specs: dict[str, Incremental] = {}  # the datasets with cursor sync (read when each is added)
        self._pending: dict[str, datetime] = {}  # partition key → highest cursor written of a request so far

    def learn(self, dataset: str) -> None:
        """Read a dataset's cursor sync when it is added (or added again, changed)."""
        options = self._options(dataset)
        spec = Incremental.of(options) if options else None
        if spec is None:
            self.specs.pop(dataset, None)
        else:
            self.specs[dataset] = spec

    def forget(self, dataset: str) -> None:
        self.specs.pop(dataset, None)

    def spec(self, dataset: str) -> Incremental | None:
        return self.specs.get(dataset)

    def bind(self, dataset: str, grid: Any) -> Any:
        """``grid`` with each task asking for records since its partition's cursor (as it is now)."""
        spec = self.spec(dataset)
        if spec is None:
            return grid
        store = self._store()
        known: dict[str, datetime | None] = {}

        def fill(params: Mapping[str, Any]) -> dict[str, Any]:
            key = self._key(dataset, params, spec)
            if key not in known:
                saved = store.position(key)
                known[key] = instant(saved["cursor"]) if saved else None
            return {**params, spec.param: spec.since(known[key])}

        return _WithSince(grid, fill)

    def page(self, dataset: str, params: Mapping[str, Any]) -> _Page:
        """What follows one page of a request to a dataset with cursor sync through its write."""
        spec = self.specs[dataset]
        key = self._key(dataset, params, spec)
        first = not any(name in params for name in spec.pages)
        return _Page(self, spec, key, dataset, params, None if first else self._pending.get(key))

    def _move(self, page: _Page, last_page: bool) -> None:
        """A page is in the sink; the last one moves the partition's cursor to the highest value
        the request's pages wrote (never back). A first page starts afresh."""
        if not last_page:
            if page.top is not None:
                self._pending[page.key] = page.top
            return
        self._pending.pop(page.key, None)
        if page.top is None:
            return
        store = self._store()
        saved = store.position(page.key)
        if saved is None or instant(saved["cursor"]) < page.top:
            spec = page.spec
            partition = {k: v for k, v in page.params.items() if k not in (spec.param, *spec.pages)}
            store.save_position(page.key, {"cursor": page.top.isoformat(), "dataset": page.dataset,
                                           "partition": json.loads(json.dumps(partition, default=str))})

    @staticmethod
    def _key(dataset: str, params: Mapping[str, Any], spec: Incremental) -> str:
        partition = {k: v for k, v in params.items() if k not in (spec.param, *spec.pages)}
        digest = hashlib.blake2b(json.dumps(partition, sort_keys=True, default=str).encode(), digest_size=10)
        return f"cursor:{dataset}:{digest.hexdigest()}"


class _Page:
    """One page's rows as the sink takes them: the highest cursor among them (and the pages before)."""

    def __init__(self, cursors: Cursors, spec: Incremental, key: str, dataset: str, params: Mapping[str, Any],
                 top: datetime | None) -> None:
        self._cursors, self.spec, self.key = cursors, spec, key
        self.dataset, self.params, self.top = dataset, params, top

    def seen(self, rows: Sequence[Row]) -> None:
        """A batch the sink holds now."""
        spec, top = self.spec, self.top
        for row in rows:
            value = _dig(row, spec.cursor)
            if value is not None:
                at = instant(value, spec.tz)
                if top is None or at > top:
                    top = at
        self.top = top

    def written(self, last_page: bool) -> None:
        """Every row of the page is in the sink (``last_page``: the request's last)."""
        self._cursors._move(self, last_page)


def _dig(row: Row, path: str) -> Any:
    found: Any = row
    for part in path.split("."):
        if not isinstance(found, Mapping) or part not in found:
            return None
        found = found[part]
    return found

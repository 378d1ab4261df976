"""The connector protocol and the plain data it exchanges with the HTTP fetcher."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from ..errors import ErrorRule, OutcomeKind, RateLimited, TaskError, TransientError
from ..model import SyncTask

if TYPE_CHECKING:
    from .streamed import RowStream

Row = Mapping[str, Any]

try:  # aiohttp's case-insensitive headers (multidict comes with aiohttp)
    from multidict import CIMultiDict, CIMultiDictProxy
    _CASELESS: tuple[type, ...] | None = (CIMultiDict, CIMultiDictProxy)
except ImportError:  # pragma: no cover
    _CASELESS = None


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    params: Mapping[str, str] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header's value by name, in any case (aiohttp's headers look it up so themselves)."""
        if _CASELESS is not None and isinstance(self.headers, _CASELESS):
            return self.headers.get(name)
        lower = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lower:
                return value
        return None


@dataclass(frozen=True)
class Page:
    """Rows of one answer, and the parameters of the request for the next page (None: last)."""

    rows: Sequence[Row] | RowStream  # a large answer's rows are a stream, written batch by batch
    next_params: Mapping[str, Any] | None = None
    notice: str | None = None  # something a person should know about this answer, said once per plan


@dataclass(frozen=True)
class Observation:
    """The vendor's own count: ``used`` weight in its window of ``per`` seconds, on ``scope``."""

    scope: str  # "vendor" or "dataset"
    used: int
    per: float | None = None
    freeze_for: float | None = None  # the vendor says nothing is left until its reset
    limit: int | None = None  # the vendor states its quota over ``per`` (a learned limit adopts it)
    source: str | None = None  # which header said so ("the RateLimit-Policy header")


class Connector(Protocol):
    def request(self, task: SyncTask) -> Request: ...
    def parse(self, response: Response, task: SyncTask, now: float) -> list[Row] | Page: ...
    def observations(self, response: Response) -> list[Observation]: ...


def decode_json(response: Response, where: str) -> Any:
    """The body as JSON, or a retryable failure quoting where it broke (never the whole body).
    orjson decodes about three times faster; what it refuses and the standard library accepts
    (NaN, integers above 64 bits, broken UTF-8 replaced) is decoded as before."""
    try:
        return orjson.loads(response.body)
    except orjson.JSONDecodeError:
        pass
    text = response.body.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        snippet = text[max(exc.pos - 40, 0): exc.pos + 20]
        raise TransientError(f"malformed {where} response: {exc.msg} at character {exc.pos} near {snippet!r}") from None


def malformed(where: str, detail: str) -> TaskError:
    """A response of the wrong shape: retried (vendors glitch), then failed with this message."""
    return TransientError(f"malformed {where} response: {detail}")


def apply_rules(rules: Sequence[ErrorRule], status: int | None, body: str, message: str) -> None:
    """Raise the failure a user rule names for this answer, if one matches."""
    from ..errors import classify

    if not rules:
        return
    failure = classify(status=status, body=body, message=message, rules=rules)
    if any(rule.matches(status, body, message) for rule in rules):
        error = _ERRORS.get(failure.kind, TaskError)(failure.detail, retry_after=failure.retry_after)
        error.kind = failure.kind
        raise error


_ERRORS: dict[OutcomeKind, type[TaskError]] = {OutcomeKind.RATE_LIMITED: RateLimited}

"""Errors users can catch, and the classifier that turns a failed request into an outcome.

Every exception synctask raises derives from one root::

    SyncError
    ├── PlanFileError        a plan file (or plan data) is invalid; lists every problem found
    ├── IllegalTransition    a task, plan or run was asked to change state in a way the table forbids
    ├── LimitError           a reservation can never be admitted (weight above a quota, unknown scope)
    ├── UnknownPlan          a control operation named a plan the scheduler does not know
    ├── SinkMoved            a dataset's sink is not where its finished tasks wrote their rows
    ├── TaskFailed           a task ended in a failure; carries its ``Failure``
    ├── JobFailed            a job's mini-tasks failed; lists which and why
    └── TaskError            raised *by* Python tasks to say how they failed:
        ├── RateLimited      the vendor said slow down (optional retry_after)
        ├── QuotaExhausted   the window's quota is used up (optional retry_after)
        ├── InvalidRequest   these parameters will never work
        ├── TransientError   try again later (counts an attempt)
        └── FatalError       nothing will work until a person acts (credentials, unknown api)
            ├── PlanMismatch the answer does not fit the plan file (records path, sink key)
            └── StorageFailed rows could not be written locally (disk full, read-only folder)

A failed request is not an exception inside the engine: connectors and fetchers describe it as a
``Failure`` of one ``OutcomeKind``, and the scheduler decides what to do with it:

============== ============================================ ========================
kind           what synctask does                           counts as an attempt
============== ============================================ ========================
network        retry later with exponential backoff + jitter yes
timeout        retry later with exponential backoff + jitter yes
server (5xx)   retry later with exponential backoff + jitter yes
rate_limited   freeze the scope until Retry-After, retry     no
quota          pause the dataset until its window resets     no
invalid        the task fails, the plan goes on              --
fatal          stop the plan (or everything) gracefully      --
============== ============================================ ========================
"""

from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from .retry import parse_retry_after

__all__ = [
    "SyncError",
    "PlanFileError",
    "Problem",
    "IllegalTransition",
    "LimitError",
    "UnknownPlan",
    "TaskFailed",
    "JobFailed",
    "TaskError",
    "RateLimited",
    "QuotaExhausted",
    "InvalidRequest",
    "TransientError",
    "FatalError",
    "PlanMismatch",
    "StorageFailed",
    "SinkMoved",
    "OutcomeKind",
    "Failure",
    "ErrorRule",
    "classify",
]


class SyncError(Exception):
    """The root of every error synctask raises."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a plan file: where (``datasets.daily.limits[0]``) and what."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


def key_hint(key: str, allowed: Sequence[str]) -> str:
    """`` (did you mean 'records'?)`` for a misspelled key, else the keys allowed there."""
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if allowed:
        return f"; allowed: {', '.join(allowed)}"
    return ""


class PlanFileError(SyncError):
    """A plan file is invalid. ``problems`` lists each place and what is expected there."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = [f"{source}: {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class IllegalTransition(SyncError):
    """A state change that the transition table does not allow (a bug, or a racing control op)."""

    def __init__(self, what: str, current: Enum, requested: Enum) -> None:
        self.what = what
        self.current = current
        self.requested = requested
        super().__init__(
            f"{what} cannot go from {current.value!r} to {requested.value!r}"
        )


class LimitError(SyncError):
    """A request that no limit configuration could ever admit."""


class UnknownPlan(SyncError):
    """A plan name or id that is not (or no longer) known."""


class JobFailed(SyncError):
    """A job ended with failed mini-tasks; ``failures`` maps each task id to its explanation."""

    def __init__(self, job: str, failures: dict[str, str], total: int) -> None:
        self.job = job
        self.failures = dict(failures)
        shown = "; ".join(f"{tid}: {msg}" for tid, msg in list(self.failures.items())[:5])
        more = f" (and {len(self.failures) - 5} more)" if len(self.failures) > 5 else ""
        super().__init__(f"job {job}: {len(self.failures)} of {total} mini-tasks failed: {shown}{more}")


class OutcomeKind(str, Enum):
    """How one task ended; the scheduler maps each kind to an action (see the module table)."""

    OK = "ok"
    NETWORK = "network"
    TIMEOUT = "timeout"
    SERVER = "server"
    RATE_LIMITED = "rate_limited"
    QUOTA = "quota"
    INVALID = "invalid"
    FATAL = "fatal"
    CANCELLED = "cancelled"

    @property
    def retryable(self) -> bool:
        """Network, timeout and server errors are retried with backoff, using an attempt."""
        return self in _RETRYABLE


_RETRYABLE = frozenset({OutcomeKind.NETWORK, OutcomeKind.TIMEOUT, OutcomeKind.SERVER})

_HAPPENED = {
    OutcomeKind.NETWORK: "the connection to the vendor failed",
    OutcomeKind.TIMEOUT: "the request timed out",
    OutcomeKind.SERVER: "the vendor answered with a server error",
    OutcomeKind.RATE_LIMITED: "the vendor rate-limited the request",
    OutcomeKind.QUOTA: "the vendor's quota for this window is used up",
    OutcomeKind.INVALID: "the vendor rejected the request as invalid",
    OutcomeKind.FATAL: "the vendor refused us in a way retrying cannot fix",
    OutcomeKind.CANCELLED: "the task was cancelled",
}

_USER_CAN = {
    OutcomeKind.NETWORK: "check the network or the vendor's status page if this persists",
    OutcomeKind.TIMEOUT: "raise the plan's timeout if the vendor is slow but healthy",
    OutcomeKind.SERVER: "if it persists, check the vendor's status page",
    OutcomeKind.RATE_LIMITED: "lower the configured limit if this happens often",
    OutcomeKind.QUOTA: "wait for the reset or raise the quota with the vendor",
    OutcomeKind.INVALID: "fix the task's parameters in the plan file",
    OutcomeKind.FATAL: "check the credentials and the api name, then start the plan again",
    OutcomeKind.CANCELLED: "start the plan again to continue",
}


@dataclass(frozen=True)
class Failure:
    """A failed task, as connectors describe it: a kind, the vendor's words, hints for the action.

    ``retry_after`` is seconds from the failure (a vendor's Retry-After or a rule's cooldown).
    ``scope`` names which limit scope to freeze ("vendor" or "dataset"); None lets the
    scheduler choose (the dataset). ``detail`` never holds secrets: connectors redact them.
    """

    kind: OutcomeKind
    detail: str = ""
    status: int | None = None
    retry_after: float | None = None
    scope: str | None = None
    unexpected: bool = False  # an exception synctask has no rule for (a bug in a task, most likely)
    happened: str | None = None  # what happened, where the kind's usual words would mislead
    hint: str | None = None  # what the user can do, likewise

    def explain(self, action: str) -> str:
        """One sentence for people: what happened, what synctask did (``action``), what to do."""
        if self.unexpected:
            return (f"the task raised an unexpected {self.detail}; synctask {action}; fix the task's code, or "
                    "raise TransientError, InvalidRequest or FatalError from it to say how to handle this.")
        if self.hint is not None:
            return f"{self.happened or _HAPPENED[self.kind]}: {self.detail}; synctask {action}; {self.hint}."
        happened = _HAPPENED[self.kind]
        if self.status is not None:
            happened += f" (HTTP {self.status})"
        if self.detail:
            happened += f": {self.detail}"
        return f"{happened}; synctask {action}; {_USER_CAN[self.kind]}."


def outcome_told(message: str | None) -> OutcomeKind | None:
    """The outcome kind a standard ``Failure.explain`` sentence begins with (None: another)."""
    if message:
        for kind, happened in _HAPPENED.items():
            if message.startswith(happened):
                return kind
    return None


class TaskError(SyncError):
    """Raise a subclass from a Python task to tell synctask how it failed."""

    kind: OutcomeKind = OutcomeKind.FATAL
    happened: str | None = None
    hint: str | None = None

    def __init__(self, message: str = "", *, retry_after: float | None = None, scope: str | None = None,
                 status: int | None = None) -> None:
        self.retry_after = retry_after
        self.scope = scope
        self.status = status  # the vendor's HTTP status, when a connector raises it for an answer
        super().__init__(message)

    def to_failure(self) -> Failure:
        return Failure(self.kind, str(self), self.status, self.retry_after, self.scope, happened=self.happened,
                       hint=self.hint)


class RateLimited(TaskError):
    """The vendor rate-limited the request: freeze the scope, retry without using an attempt."""

    kind = OutcomeKind.RATE_LIMITED


class QuotaExhausted(TaskError):
    """The vendor's quota for the window is used up: pause the dataset until it resets."""

    kind = OutcomeKind.QUOTA


class InvalidRequest(TaskError):
    """These parameters will never work: fail the task, the plan goes on."""

    kind = OutcomeKind.INVALID


class TransientError(TaskError):
    """A temporary failure: retry with backoff, counting an attempt."""

    kind = OutcomeKind.SERVER


class FatalError(TaskError):
    """Nothing will work until a person acts: stop the plan gracefully."""

    kind = OutcomeKind.FATAL


class PlanMismatch(FatalError):
    """The vendor's answer does not fit the plan file (a records path or a key that is not
    there): every task would fail the same way, so the plan stops at the first one."""

    happened = "the vendor's answer does not fit the plan file"
    hint = "fix the plan file where this says, then run again"


class SinkMoved(SyncError):
    """A dataset's sink changed place since its finished tasks wrote their rows (they would be
    skipped, and the new place would miss them), or it is the state file itself."""


class StorageFailed(FatalError):
    """Rows could not be written locally (disk full, read-only, permission): every plan of the
    dataset stops at once, so no vendor request is spent on rows that cannot be kept."""

    happened = "synctask could not store the rows"
    hint = ("free space or fix the folder's permissions, then run the same command again; finished work "
            "is kept")

    def __init__(self, message: str) -> None:
        super().__init__(message, scope="dataset")


class TaskFailed(SyncError):
    """A task ended in failure; ``failure`` says how, ``str(err)`` says it in a sentence."""

    def __init__(self, task_id: str, failure: Failure, message: str) -> None:
        self.task_id = task_id
        self.failure = failure
        super().__init__(f"task {task_id}: {message}")


@dataclass(frozen=True)
class ErrorRule:
    """A user rule: a regex on the status, the body or the message → an outcome kind.

    ``on`` is "status", "body" or "message"; ``cooldown`` (seconds) applies to rate-limited and
    quota outcomes when the vendor gives no Retry-After.
    """

    pattern: re.Pattern[str]
    kind: OutcomeKind
    on: str = "body"
    cooldown: float | None = None

    def matches(self, status: int | None, body: str, message: str) -> bool:
        subject = {"status": "" if status is None else str(status), "body": body, "message": message}
        return self.pattern.search(subject[self.on]) is not None


_STATUS_KINDS: dict[int, OutcomeKind] = {
    400: OutcomeKind.INVALID,
    401: OutcomeKind.FATAL,
    403: OutcomeKind.FATAL,
    404: OutcomeKind.INVALID,
    405: OutcomeKind.FATAL,
    408: OutcomeKind.TIMEOUT,
    409: OutcomeKind.INVALID,
    410: OutcomeKind.FATAL,
    413: OutcomeKind.INVALID,
    418: OutcomeKind.RATE_LIMITED,  # Binance's IP ban: a long freeze, never a failure
    422: OutcomeKind.INVALID,
    425: OutcomeKind.SERVER,
    429: OutcomeKind.RATE_LIMITED,
}


def classify(
    *,
    status: int | None = None,
    exc: BaseException | None = None,
    body: str = "",
    message: str = "",
    headers: Mapping[str, str] | None = None,
    rules: Sequence[ErrorRule] = (),
    now: float | None = None,
) -> Failure:
    """Turn what a request produced into a ``Failure``: user rules first, then status, then exception.

    ``headers`` supplies Retry-After (seconds or an HTTP date; ``now`` is needed for a date).
    """
    retry_after = None
    if headers:
        raw = _header(headers, "retry-after")
        if raw is not None:
            retry_after = parse_retry_after(raw, now)
    detail = message or _short(body)
    for rule in rules:
        if rule.matches(status, body, message):
            if retry_after is None:
                retry_after = rule.cooldown
            return Failure(rule.kind, detail, status, retry_after)
    if status is not None:
        kind = _STATUS_KINDS.get(status)
        if kind is None:
            kind = OutcomeKind.SERVER if status >= 500 else OutcomeKind.INVALID
        return Failure(kind, detail, status, retry_after)
    if isinstance(exc, TaskError):
        return exc.to_failure()
    if exc is not None:
        kind = _exception_kind(exc)
        return Failure(kind, detail or _describe(exc), None, retry_after,
                       unexpected=kind is OutcomeKind.FATAL and not detail)
    return Failure(OutcomeKind.FATAL, detail or "no status and no exception to classify")


def _exception_kind(exc: BaseException) -> OutcomeKind:
    if isinstance(exc, asyncio.CancelledError):
        return OutcomeKind.CANCELLED
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return OutcomeKind.TIMEOUT
    if isinstance(exc, (ConnectionError, OSError, EOFError)):
        return OutcomeKind.NETWORK
    # aiohttp's errors without importing aiohttp: all connection-level ones share this name root.
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"ClientConnectionError", "ServerDisconnectedError", "ClientPayloadError"}:
        return OutcomeKind.NETWORK
    if "ServerTimeoutError" in names:
        return OutcomeKind.TIMEOUT
    return OutcomeKind.FATAL


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _short(body: str, limit: int = 200) -> str:
    body = " ".join(body.split())
    return body if len(body) <= limit else body[: limit - 1] + "…"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None

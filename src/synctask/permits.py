"""Permits: the engine's exact limits lent to other programs that use the same keys.

A notebook or a script calling a vendor on the key the daemon uses would push the vendor over its
limit behind the engine's back. Instead it asks for a permit before each request: the permit is
admitted through the same gate as the engine's own tasks of that vendor (or dataset), so it counts
in every limit they count in (windows, weights, concurrency caps, freezes); it holds its weight in
the sliding windows until the program says when the answer came (``answered``), exactly as a task
does; a 429 it reports freezes the scope as one of the engine's own would. A permit never
answered counts as answered when its hold ends, so a program that dies frees what it held.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import Failure, OutcomeKind, SyncError, UnknownPlan
from .learners import Learners
from .model import SyncTask, key_scope
from .scheduler import Scheduler
from .windows import Quota

__all__ = ["Permit", "PermitDesk", "PermitRefused", "OUTCOMES"]

OUTCOMES = ("done", "rate_limited", "error")
MAX_WAIT = 3600.0  # the longest a caller may wait for room
MAX_HOLD = 3600.0  # the longest a permit may stay unanswered before it counts as answered
POLL = 0.01  # seconds between tries while the room is held by requests not answered yet
DEFAULT_COOLDOWN = 1.0  # a 429 without Retry-After on a scope with no window freezes it this long
_ids = itertools.count(1)


class PermitRefused(SyncError):
    """No permit: the vendor or dataset is unknown, the weight can never pass, or no room came
    within the wait (``retry_at``: when room is expected, if known)."""

    def __init__(self, message: str, status: int = 409, retry_at: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_at = retry_at


@dataclass
class Permit:
    """One request of another program, admitted and counted like one of the engine's."""

    id: str
    vendor: str
    dataset: str | None
    weight: int
    key: str | None  # the name of the variable holding the key to use (never the key)
    taken: float
    expires: float  # when it counts as answered if nobody says so
    gate: Any
    node: str | None
    timer: asyncio.TimerHandle | None = None
    chose_key: bool = False  # ``key`` is one of the vendor's several keys, chosen by the limits
    request: SyncTask | None = None  # what the learners know it by, when the vendor's limits are learned

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "vendor": self.vendor, "dataset": self.dataset, "weight": self.weight,
                "key": self.key, "taken": self.taken, "expires": self.expires}


@dataclass(eq=False)
class _Waiter:
    """A permit asked for and not given yet."""

    vendor: str
    dataset: str | None
    weight: int
    hold: float
    gate: Any
    permit: asyncio.Future[Permit]
    when: float = 0.0  # when it may go, as last found (inf: when a request in flight is answered)


class PermitDesk:
    """Hands out permits on the engine's limits and takes them back. ``poke`` tells the engine
    that room may have come back (its queues try again)."""

    def __init__(self, scheduler: Scheduler, vendors: Callable[[], dict[str, Any]],
                 datasets: Callable[[], dict[str, Any]], poke: Callable[[], None],
                 clock: Callable[[], float] = time.time, learners: Learners | None = None) -> None:
        self.scheduler = scheduler
        self._vendors = vendors
        self._datasets = datasets
        self._poke = poke
        self._clock = clock
        self.out: dict[str, Permit] = {}
        self.taken: dict[tuple[str, str | None], int] = {}  # (vendor, dataset) -> permits taken so far
        self._recent: deque[float] = deque()  # when permits were taken, for "per minute"
        self.waiters: list[_Waiter] = []  # in the order they asked
        self.learners: Learners | None = learners
        scheduler.before_dispatch = self.grant

    # --- taking ------------------------------------------------------------------------------
    async def take(self, vendor: str, dataset: str | None = None, weight: int | None = None,
                   wait: float = 30.0, hold: float = 60.0) -> Permit:
        """Wait (up to ``wait`` seconds) until a request of ``weight`` to ``vendor`` (through
        ``dataset``'s limits too, if given) may go, and count it. Raises ``PermitRefused``.
        Waiting permits of a dataset go in the order they asked, before the engine's own tasks
        (``grant`` runs at the start of each of its dispatch turns)."""
        gate, weight = self._gate(vendor, dataset, weight)
        if not (0 <= wait <= MAX_WAIT) or not (0 < hold <= MAX_HOLD):
            raise PermitRefused(f"wait must be 0..{MAX_WAIT:g} s and hold 0..{MAX_HOLD:g} s "
                                f"(got wait={wait:g}, hold={hold:g})", 400)
        waiter = _Waiter(vendor, dataset, weight, hold, gate, asyncio.get_running_loop().create_future())
        self.waiters.append(waiter)
        deadline = self._clock() + wait
        given = False
        try:
            while True:
                now = self._clock()
                self.grant(now)
                if waiter.permit.done():
                    given = True
                    return waiter.permit.result()
                if now >= deadline or (waiter.when > deadline and not math.isinf(waiter.when)):
                    retry_at = None if math.isinf(waiter.when) else waiter.when
                    said = "" if retry_at is None else f"; room comes back in {retry_at - now:.2f} s"
                    raise PermitRefused(f"no room for a request to {vendor}{_of(dataset)} within {wait:g} s{said}",
                                        503, retry_at)
                pause = max(min(waiter.when, now + POLL, deadline) - now, 0.0)
                # (asyncio.wait, not wait_for: a cancel that lands as the permit is lent must not be swallowed)
                await asyncio.wait((waiter.permit,), timeout=pause)
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            if not given and waiter.permit.done():  # lent while its caller went away: give it back now
                self._give_back(waiter.permit.result(), self._clock())

    def grant(self, now: float) -> None:
        """Admit the waiting permits that may go now, those of one vendor and dataset in the
        order they asked."""
        if not self.waiters:
            return
        blocked: set[tuple[str, str | None]] = set()  # (a permit of another dataset may still find room)
        for waiter in list(self.waiters):
            line = (waiter.vendor, waiter.dataset)
            if line in blocked or waiter.permit.done():
                continue
            when = waiter.gate.try_acquire(waiter.weight, now)
            if when is not None:
                waiter.when = when
                blocked.add(line)
                continue
            self.waiters.remove(waiter)
            waiter.permit.set_result(self._lend(waiter, now))

    def _lend(self, waiter: _Waiter, now: float) -> Permit:
        chosen = waiter.gate.key  # with several keys: the one the limits chose, which the caller must use
        key = chosen if chosen is not None else _key_name(getattr(self._vendors().get(waiter.vendor), "token", None))
        permit = Permit(f"p{next(_ids)}-{secrets.token_hex(4)}", waiter.vendor, waiter.dataset, waiter.weight,
                        key, now, now + waiter.hold, waiter.gate, waiter.gate.chosen, chose_key=chosen is not None)
        permit.timer = asyncio.get_running_loop().call_later(waiter.hold, self._expire, permit.id)
        if self.learners is not None and self.learners.scopes_of(waiter.dataset, waiter.vendor):
            permit.request = SyncTask(f"permit:{permit.id}", {})
            permit.request.admitted = now
            self.learners.sent(permit.request, waiter.dataset, now, waiter.weight, waiter.vendor)
        self.out[permit.id] = permit
        self.taken[(waiter.vendor, waiter.dataset)] = self.taken.get((waiter.vendor, waiter.dataset), 0) + 1
        self._recent.append(now)
        return permit

    def _gate(self, vendor: str, dataset: str | None, weight: int | None) -> tuple[Any, int]:
        if vendor not in self._vendors():
            known = ", ".join(sorted(self._vendors())) or "none"
            raise PermitRefused(f"no vendor named {vendor!r} (known: {known})", 404)
        if dataset is not None:
            found = self._datasets().get(dataset)
            if found is None or found.vendor != vendor:
                raise PermitRefused(f"vendor {vendor!r} has no dataset named {dataset!r}", 404)
            try:
                gate, own = self.scheduler.gate_of(dataset)
            except (KeyError, UnknownPlan):
                raise PermitRefused(f"dataset {dataset!r} is not loaded in the engine", 404) from None
        else:
            gate, own = self.scheduler.vendor_gate(self._vendors()[vendor]), 1
        weight = own if weight is None else weight
        if not isinstance(weight, int) or weight < 1:
            raise PermitRefused(f"weight must be a whole number of at least 1 (got {weight!r})", 400)
        for scope in self._scopes(vendor, dataset):
            for limit in self.scheduler.limiter.limits(scope):
                if isinstance(limit, Quota) and weight > limit.rate:
                    raise PermitRefused(f"a request of weight {weight} can never pass {scope}'s {limit}", 400)
        return gate, weight

    # --- giving back -------------------------------------------------------------------------
    def answered(self, permit_id: str, outcome: str = "done", retry_after: float | None = None,
                 scope: str = "vendor", at: float | None = None) -> Permit:
        """The permit's request was answered (``at``: when its answer began; default now):
        its weight leaves each sliding window one window after that. ``rate_limited`` freezes
        the ``scope`` ("vendor" or "dataset") for ``retry_after`` seconds (else its window)."""
        if outcome not in OUTCOMES:
            raise PermitRefused(f"outcome must be one of {', '.join(OUTCOMES)} (got {outcome!r})", 400)
        if retry_after is not None and not (0 <= retry_after <= 86400 * 7):
            raise PermitRefused(f"retry_after must be 0..604800 seconds (got {retry_after!r})", 400)
        permit = self.out.get(permit_id)
        if permit is None:
            raise PermitRefused(f"no permit {permit_id!r} is out (answered already, or its hold ended)", 404)
        now = self._clock()
        limited = outcome == "rate_limited"
        failure = None if outcome == "done" else Failure(
            OutcomeKind.RATE_LIMITED if limited else OutcomeKind.SERVER, "another program's request",
            429 if limited else None, retry_after, scope)
        self._give_back(permit, min(at, now) if at is not None and at >= permit.taken else now, failure)
        if limited:
            frozen = f"{scope}:{permit.dataset}" if scope == "dataset" and permit.dataset else f"vendor:{permit.vendor}"
            if permit.chose_key and permit.key is not None:  # the vendor refused that key: its count, not the others
                frozen = key_scope(permit.key, frozen)
            wait = retry_after if retry_after is not None else self._window(frozen)
            self.scheduler.freeze(frozen, now + wait)
        return permit

    def _expire(self, permit_id: str) -> None:
        permit = self.out.get(permit_id)
        if permit is not None:
            self._give_back(permit, self._clock())

    def _give_back(self, permit: Permit, at: float, failure: Failure | None = None) -> None:
        self.out.pop(permit.id, None)
        if permit.timer is not None:
            permit.timer.cancel()
        key = permit.key if permit.chose_key else None
        permit.gate.settle(permit.weight, at, permit.node, key)
        permit.gate.release(permit.node, key)
        if permit.request is not None and self.learners is not None:  # what it says teaches the learned limits
            self.learners.ended(permit.request, permit.dataset, failure, self._clock(), permit.vendor)
        self.scheduler.room_freed(f"vendor:{permit.vendor}", at)
        self._poke()

    def _window(self, scope: str) -> float:
        quotas = [limit.per for limit in self.scheduler.limiter.limits(scope) if isinstance(limit, Quota)]
        return min(quotas) if quotas else DEFAULT_COOLDOWN

    def _scopes(self, vendor: str, dataset: str | None) -> list[str]:
        keys = [key.name for key in getattr(self._vendors().get(vendor), "keys", ())]
        scopes = [f"vendor:{vendor}"] + ([f"dataset:{dataset}"] if dataset else [])
        return scopes + [key_scope(key, scope) for key in keys for scope in scopes]

    # --- what is out -------------------------------------------------------------------------
    def per_minute(self) -> int:
        """Permits taken in the last minute."""
        now = self._clock()
        while self._recent and self._recent[0] <= now - 60.0:
            self._recent.popleft()
        return len(self._recent)

    def in_flight(self) -> dict[tuple[str, str | None], int]:
        counts: dict[tuple[str, str | None], int] = {}
        for permit in self.out.values():
            counts[(permit.vendor, permit.dataset)] = counts.get((permit.vendor, permit.dataset), 0) + 1
        return counts

    def close(self) -> None:
        """Give back every permit still out (the engine stops)."""
        for permit in list(self.out.values()):
            self._give_back(permit, self._clock())


def _of(dataset: str | None) -> str:
    return "" if dataset is None else f" (dataset {dataset})"


def _key_name(token: Any) -> str | None:
    """The variable a vendor's key comes from (``env TUSHARE_TOKEN`` -> ``TUSHARE_TOKEN``)."""
    where = getattr(token, "source", None)
    if isinstance(where, str) and where.startswith("env "):
        return where[4:]
    return None

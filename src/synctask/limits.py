"""Rate limits, exact: sliding and clock-aligned quotas, request weights, concurrency caps, freezes.

Theory of operation. A *scope* ("vendor:binance", "dataset:daily", "node:n1:vendor:binance") holds
any number of limits. A task is admitted through a ``Gate``, the set of scopes it draws on, and is
counted on all of them at once or on none. The limiter never sleeps and never reads a clock: the
caller passes ``now`` (epoch seconds) and ``Gate.try_acquire`` either admits the task or answers
the exact instant it may go (``math.inf`` while a concurrency cap is full or the room is held by
requests still in flight: that waits on an answer or a release, not on time).

Counting is the vendors' way:

* sliding window: at any instant ``t`` the weight the vendor stamped in ``(t - per, t]`` is at
  most ``rate``. The vendor stamps a request when it reads it, which we cannot see: somewhere
  between the moment it was admitted (it cannot leave earlier) and the first byte of its answer.
  So an admitted request *holds* its weight in the window until it is *settled* with the instant
  its answer began (``Gate.settle``), and stops counting at exactly that instant ``+ per`` (plus
  an optional ``margin`` for vendors whose clocks drift). Whatever delay lies on either side of
  the vendor's stamp, the vendor can never count more than ``rate``: of any ``rate + 1`` requests
  it stamps within one window, the last admitted found all the others still counted. The cost is
  about one round trip per window.
* clock window: windows are ``[k*per, (k+1)*per)`` in UTC, or local calendar days in ``tz`` for
  whole-day periods (Tushare resets at midnight Asia/Shanghai); each window holds ``rate``. A
  request still in flight when a window ends counts in the next one too: the vendor may stamp it
  on either side of the boundary.

Each counter's earliest admission time is monotone (usage only leaves it as time passes), so the
earliest time a task may pass every counter of every scope is the maximum of theirs: exact, with
no polling and no padding. When the room is held by requests still in flight the answer is
``math.inf``: the room frees only once one of them is settled. That is why this module is ours:
aiolimiter's leaky bucket admits up to 2x its rate in a sliding window, and pyrate-limiter pads
each wait, and neither knows when a request's answer came back.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any, NamedTuple, Union
from zoneinfo import ZoneInfo

from .errors import LimitError
from .units import format_duration

__all__ = ["Quota", "Concurrency", "Limit", "Limiter", "Gate", "NodeGate", "AnyGate", "DAY", "WindowUsage"]

DAY = 86400.0


@dataclass(frozen=True)
class Quota:
    """At most ``rate`` weight per ``per`` seconds, in a sliding window or a clock-aligned one."""

    rate: int
    per: float
    clock: bool = False
    tz: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rate, int) or isinstance(self.rate, bool) or self.rate < 1:
            raise ValueError(f"rate must be a whole number of at least 1, got {self.rate!r}")
        if not (self.per > 0 and math.isfinite(self.per)):
            raise ValueError(f"per must be a positive duration, got {self.per!r}")
        if self.tz is not None:
            ZoneInfo(self.tz)  # raises for an unknown zone

    def __str__(self) -> str:
        text = f"{self.rate} per {format_duration(self.per)}"
        if self.clock:
            text += " (clock-aligned" + (f", {self.tz})" if self.tz else ")")
        return text


@dataclass(frozen=True)
class Concurrency:
    """At most ``cap`` tasks in flight at once."""

    cap: int

    def __post_init__(self) -> None:
        if not isinstance(self.cap, int) or isinstance(self.cap, bool) or self.cap < 1:
            raise ValueError(f"concurrency must be a whole number of at least 1, got {self.cap!r}")

    def __str__(self) -> str:
        return f"{self.cap} in flight"


Limit = Union[Quota, Concurrency]


class WindowUsage(NamedTuple):
    """One limit's use now; ``resets_at``: when a clock window starts again (None: sliding, cap)."""

    limit: Limit
    used: int
    resets_at: float | None

    @property
    def capacity(self) -> int:
        """The limit's allowance: its rate, or its cap."""
        return self.limit.cap if isinstance(self.limit, Concurrency) else self.limit.rate

    def describe(self) -> str:
        """How a person says it: ``48 of 50 in the last 1s``, ``12,345 of 100,000 today, resets
        00:00 Asia/Shanghai``, ``3 of 5 in flight``."""
        limit = self.limit
        if isinstance(limit, Concurrency):
            return f"{self.used:,} of {limit.cap:,} in flight"
        head = f"{self.used:,} of {limit.rate:,}"
        if not limit.clock or self.resets_at is None:
            return f"{head} in the last {format_duration(limit.per)}"
        zone = ZoneInfo(limit.tz) if limit.tz else ZoneInfo("UTC")
        reset = datetime.fromtimestamp(self.resets_at, zone)
        where = limit.tz or "UTC"
        if limit.per == DAY:
            return f"{head} today, resets {reset:%H:%M} {where}"
        if limit.per > DAY:
            return f"{head} this {format_duration(limit.per)}, resets {reset:%Y-%m-%d %H:%M} {where}"
        return f"{head} this {format_duration(limit.per)} window, resets {reset:%H:%M:%S} {where}"


class _Sliding:
    """The log of one sliding window, kept as the instants each send stops counting.

    A send answered at ``s`` stops counting at the first float ``e`` with both ``s + span <= e``
    and ``s <= e - span``: vendors write the window either way, and at exact boundaries float
    rounding can make the two disagree by one ulp; we honour the stricter. ``used`` is the
    weight still inside the window, ``held`` of which is in flight (no expiry known yet)."""

    __slots__ = ("spec", "rate", "span", "expiries", "weights", "used", "held", "last_sent")

    def __init__(self, spec: Quota, margin: float) -> None:
        self.last_sent = -math.inf
        self.held = 0
        self.spec = spec
        self.rate = spec.rate
        self.span = spec.per + margin
        self.expiries: deque[float] = deque()
        self.weights: deque[int] = deque()
        self.used = 0

    def _evict(self, now: float) -> None:
        expiries = self.expiries
        while expiries and expiries[0] <= now:
            expiries.popleft()
            self.used -= self.weights.popleft()

    def earliest(self, weight: int, now: float) -> float:
        expiries = self.expiries
        if expiries and expiries[0] <= now:
            self._evict(now)
        excess = self.used + weight - self.rate
        if excess <= 0:
            return now
        # The instant enough of the oldest weight has left the window. Requests in flight leave
        # after every answered one (their answer is still to come), at an instant not known yet.
        freed = 0
        for expiry, w in zip(expiries, self.weights):
            freed += w
            if freed >= excess:
                return expiry
        if self.held:
            return math.inf
        raise LimitError(f"weight {weight} can never fit in {self.spec}")  # pragma: no cover

    def hold(self, weight: int) -> None:
        """Count an admitted request that is on its way: it stays in the window until settled."""
        self.used += weight
        self.held += weight

    def settle(self, weight: int, answered: float) -> None:
        """The request's answer began at ``answered``: it counts until ``answered + span``."""
        taken = min(weight, self.held)
        self.held -= taken
        self.used -= taken
        if answered >= self.last_sent or not self.expiries:
            self.add(weight, answered)  # the usual order: at the end of the log, as a send is
        else:
            self._insert(weight, answered)  # an answer overtaken by a later one: keep the log sorted

    def add(self, weight: int, now: float) -> None:
        self.used += weight
        if now <= self.last_sent and self.expiries:
            # The instant of the previous send (a burst; or a caller's clock that stepped back):
            # one log entry, more weight, never an earlier expiry. That entry cannot have been
            # evicted yet, since it expires after ``now``.
            self.weights[-1] += weight
            return
        span = self.span
        expiry = now + span
        while expiry - span < now:
            expiry = math.nextafter(expiry, math.inf)
        self.expiries.append(expiry)
        self.weights.append(weight)
        self.last_sent = now

    def _expiry(self, sent: float) -> float:
        span = self.span
        expiry = sent + span
        while expiry - span < sent:
            expiry = math.nextafter(expiry, math.inf)
        return expiry

    def _insert(self, weight: int, sent: float) -> None:
        """Count ``weight`` from ``sent``, which may be earlier than the newest entry (answers
        arrive out of order): entries stay sorted by expiry; the search starts at the end, where
        recent instants are."""
        new = self._expiry(sent)
        expiries, weights = self.expiries, self.weights
        self._evict(sent)
        i = len(expiries)
        while i > 0 and expiries[i - 1] > new:
            i -= 1
        if i > 0 and expiries[i - 1] == new:
            weights[i - 1] += weight
        else:
            expiries.insert(i, new)
            weights.insert(i, weight)
        self.used += weight
        if sent > self.last_sent:
            self.last_sent = sent

    def reset_time(self, now: float) -> float:
        self._evict(now)
        return self.expiries[0] if self.expiries else now

    def log(self, now: float | None = None) -> list[tuple[float, int]]:
        """(answer instant, weight) pairs still counting; the instant is never earlier than the
        answer. With ``now``, requests still in flight are included as answered at ``now``."""
        entries = [(e - self.span, w) for e, w in zip(self.expiries, self.weights)]
        if now is not None and self.held:
            entries.append((now, self.held))
        return entries


class _Clock:
    """The count of one clock-aligned window; rolls over at the window's end, carrying the
    requests still in flight into the new window (the vendor may stamp them in either)."""

    __slots__ = ("spec", "rate", "per", "zone", "start", "end", "used", "held")

    def __init__(self, spec: Quota) -> None:
        self.spec = spec
        self.rate = spec.rate
        self.per = spec.per
        self.zone = ZoneInfo(spec.tz) if spec.tz else None
        self.start = self.end = -math.inf
        self.used = 0
        self.held = 0

    def bounds(self, now: float) -> tuple[float, float]:
        """The window holding ``now``: UTC multiples of ``per``, or local days in ``tz``."""
        if self.zone is None:
            start = math.floor(now / self.per) * self.per
            return start, start + self.per
        local = datetime.fromtimestamp(now, self.zone)
        midnight = datetime.combine(local.date(), dtime(0), tzinfo=self.zone).timestamp()
        if self.per < DAY:
            start = midnight + math.floor((now - midnight) / self.per) * self.per
            return start, min(start + self.per, self._midnight_after(local))
        days = round(self.per / DAY)
        ordinal = local.date().toordinal()
        first = datetime.fromordinal(ordinal - ordinal % days)
        start_day = first.replace(tzinfo=self.zone)
        end_day = (first + timedelta(days=days)).replace(tzinfo=self.zone)
        return start_day.timestamp(), end_day.timestamp()

    def _midnight_after(self, local: datetime) -> float:
        tomorrow = local.date() + timedelta(days=1)
        return datetime.combine(tomorrow, dtime(0), tzinfo=self.zone).timestamp()

    def _roll(self, now: float) -> None:
        if now >= self.end or now < self.start:
            self.start, self.end = self.bounds(now)
            self.used = self.held

    def earliest(self, weight: int, now: float) -> float:
        self._roll(now)
        return now if self.used + weight <= self.rate else self.end

    def hold(self, weight: int) -> None:
        """Count an admitted request that is on its way (the caller has rolled to ``now``)."""
        self.used += weight
        self.held += weight

    def settle(self, weight: int, answered: float) -> None:
        """The answer began at ``answered``: a window that began meanwhile has counted it already."""
        if answered >= self.end:
            self._roll(answered)
        self.held -= min(weight, self.held)

    def reset_time(self, now: float) -> float:
        self._roll(now)
        return self.end


class _Slots:
    """A concurrency cap: how many admitted tasks have not been released yet."""

    __slots__ = ("spec", "cap", "active")

    def __init__(self, spec: Concurrency) -> None:
        self.spec = spec
        self.cap = spec.cap
        self.active = 0

    def earliest(self, weight: int, now: float) -> float:
        """``now`` while a slot is free, else ``inf`` (until one is released)."""
        return now if self.active < self.cap else math.inf


Counter = Union["_Sliding", "_Clock", _Slots]  # what one limit counts; ``earliest(weight, now)`` on each


class _Scope:
    __slots__ = ("name", "quotas", "slots", "frozen_until")

    def __init__(self, name: str) -> None:
        self.name = name
        self.quotas: list[_Sliding | _Clock] = []
        self.slots: list[_Slots] = []
        self.frozen_until = -math.inf


class Gate:
    """The scopes one kind of task draws on; admits a task on all of them at once or on none."""

    __slots__ = ("scopes", "_quotas", "_slots", "has_concurrency", "counters", "blocker", "chosen")

    def __init__(self, scopes: Sequence[_Scope]) -> None:
        self.scopes = tuple(scopes)
        self._quotas = tuple(q for s in scopes for q in s.quotas)
        self._slots = tuple(c for s in scopes for c in s.slots)
        self.has_concurrency = bool(self._slots)
        self.counters: tuple[Counter, ...] = (*self._quotas, *self._slots)  # each limit's own counter
        # After a refusal: the counter (a quota or a concurrency cap) that set the wait, or None
        # when a freeze did. Gates sharing that counter (a vendor's) can wait for it together.
        self.blocker: Counter | None = None
        self.chosen: str | None = None  # a plain gate sends to no node in particular

    def earliest(self, weight: int, now: float) -> float:
        """The first instant ≥ ``now`` a task of ``weight`` may go; ``inf`` while a cap is full.

        A freeze answers first (the quotas are asked again when it ends), which keeps a frozen
        scope cheap; otherwise the answer is the latest of every counter's earliest instant."""
        when = now
        for scope in self.scopes:
            if scope.frozen_until > when:
                when = scope.frozen_until
        if when > now:
            return when
        for slot in self._slots:
            if slot.active >= slot.cap:
                return math.inf
        for quota in self._quotas:
            at = quota.earliest(weight, now)
            if at > when:
                when = at
        return when

    def try_acquire(self, weight: int, now: float) -> float | None:
        """Admit and count a task now (None), or return when it may go without counting anything."""
        # ``earliest`` inlined: this runs once per dispatched task.
        for scope in self.scopes:
            if scope.frozen_until > now:
                self.blocker = None
                return self.earliest(weight, now)
        for slot in self._slots:
            if slot.active >= slot.cap:
                self.blocker = slot
                return math.inf
        when = now
        for quota in self._quotas:
            at = quota.earliest(weight, now)
            if at > when:
                when = at
                self.blocker = quota
        if when > now:
            return when
        for quota in self._quotas:
            quota.hold(weight)  # each counter was brought to ``now`` by ``earliest``
        for slot in self._slots:
            slot.active += 1
        return None

    def settle(self, weight: int, answered: float, node: str | None = None) -> None:
        """The request admitted through this gate got the first byte of its answer at
        ``answered`` (or failed then): it counts in each sliding window until ``answered + per``.
        Call once per admitted request; a request that never reached the wire settles too."""
        for quota in self._quotas:
            quota.settle(weight, answered)

    def send(self, weight: int, now: float) -> float | None:
        """``try_acquire`` for a request answered at the instant it leaves (a local call, a test)."""
        when = self.try_acquire(weight, now)
        if when is None:
            self.settle(weight, now)
        return when

    def release(self, node: str | None = None) -> None:
        """A task admitted through this gate has finished: give back its concurrency slots."""
        for slot in self._slots:
            if slot.active > 0:
                slot.active -= 1


class NodeGate:
    """A gate for tasks that may go to any of several worker nodes, each with limits of its own
    (a per-IP limit) besides the shared ones: it admits a task through the shared scopes and the
    first node, in turn, whose own limits have room, and says which in ``chosen``. Nodes not
    ``usable`` (their worker is gone) are skipped."""

    __slots__ = ("gates", "nodes", "usable", "chosen", "blocker", "counters", "has_concurrency", "_next")

    def __init__(self, gates: Mapping[str, Gate]) -> None:
        self.gates = dict(gates)
        self.nodes = list(self.gates)
        self.usable = set(self.nodes)
        self.chosen: str | None = None
        self.blocker: Counter | None = None
        seen: dict[int, Counter] = {}
        for gate in self.gates.values():
            for counter in gate.counters:
                seen.setdefault(id(counter), counter)
        self.counters: tuple[Counter, ...] = tuple(seen.values())
        self.has_concurrency = any(g.has_concurrency for g in self.gates.values())
        self._next = 0

    def earliest(self, weight: int, now: float) -> float:
        times = [self.gates[n].earliest(weight, now) for n in self.nodes if n in self.usable]
        return min(times) if times else math.inf

    def try_acquire(self, weight: int, now: float) -> float | None:
        count = len(self.nodes)
        best = math.inf
        blockers: set[int] = set()
        blocker: Counter | None = None
        for k in range(count):
            i = (self._next + k) % count
            node = self.nodes[i]
            if node not in self.usable:
                continue
            gate = self.gates[node]
            when = gate.try_acquire(weight, now)
            if when is None:
                self.chosen = node
                self._next = (i + 1) % count
                return None
            best = min(best, when)
            blockers.add(id(gate.blocker))
            blocker = gate.blocker
        # One counter held every node back (a shared one): wait in its line; else sleep (or park)
        # until the first node may go.
        self.blocker = blocker if len(blockers) == 1 else None
        return best

    def settle(self, weight: int, answered: float, node: str | None = None) -> None:
        gate = self.gates.get(node) if node is not None else None
        if gate is not None:
            gate.settle(weight, answered)

    def release(self, node: str | None = None) -> None:
        gate = self.gates.get(node) if node is not None else None
        if gate is not None:
            gate.release()


class Limiter:
    """Every scope's limits and freezes; hands out ``Gate`` objects over sets of scopes.

    ``margin`` (seconds) widens every sliding window by a safety gap for the jitter between when
    a request leaves and when the vendor counts it; 0 counts exactly as sent.
    """

    def __init__(self, margin: float = 0.0) -> None:
        if margin < 0:
            raise ValueError(f"margin must not be negative, got {margin}")
        self.margin = margin
        self._scopes: dict[str, _Scope] = {}

    # --- configuration -------------------------------------------------------------------
    def configure(self, scope: str, limits: Iterable[Limit], margin: float | None = None) -> None:
        """Set the limits of ``scope``; counters of limits that stay the same keep their usage.
        ``margin`` overrides the limiter's safety gap for this scope's sliding windows.

        Gates made before a reconfiguration still see the scope's new counters, since gates hold
        the scope; call ``gate()`` again after changing limits to refresh its flattened view.
        """
        state = self._scopes.get(scope) or _Scope(scope)
        old_q = {q.spec: q for q in state.quotas}
        old_c = {c.spec: c for c in state.slots}
        quotas: list[_Sliding | _Clock] = []
        slots: list[_Slots] = []
        for limit in limits:
            if isinstance(limit, Quota):
                kept = old_q.pop(limit, None)
                gap = self.margin if margin is None else margin
                quotas.append(kept or (_Clock(limit) if limit.clock else _Sliding(limit, gap)))
            elif isinstance(limit, Concurrency):
                slots.append(old_c.pop(limit) if limit in old_c else _Slots(limit))
            else:
                raise LimitError(f"scope {scope!r}: not a limit: {limit!r}")
        state.quotas, state.slots = quotas, slots
        self._scopes[scope] = state

    def limits(self, scope: str) -> list[Limit]:
        state = self._scopes.get(scope)
        if state is None:
            return []
        return [q.spec for q in state.quotas] + [c.spec for c in state.slots]

    def forget(self, scope: str) -> None:
        """Drop a scope no gate uses any more (its counts go with it)."""
        self._scopes.pop(scope, None)

    def scopes(self) -> list[str]:
        return list(self._scopes)

    def gate(self, scopes: Sequence[str], max_weight: int = 1) -> Gate:
        """A gate over ``scopes`` (created empty when unknown); checks ``max_weight`` can ever fit."""
        states = []
        for name in scopes:
            state = self._scopes.get(name)
            if state is None:
                state = self._scopes[name] = _Scope(name)
            for quota in state.quotas:
                if max_weight > quota.rate:
                    raise LimitError(
                        f"a request of weight {max_weight} can never fit in {name}'s limit "
                        f"{quota.spec}; raise the limit or lower the weight"
                    )
            states.append(state)
        return Gate(states)

    # --- what vendors tell us ------------------------------------------------------------
    def freeze(self, scope: str, until: float) -> None:
        """Admit nothing through ``scope`` before ``until`` (a 429's Retry-After, a ban)."""
        state = self._scope(scope)
        if until > state.frozen_until:
            state.frozen_until = until

    def thaw(self, scope: str) -> None:
        """Lift a freeze early (an operator's decision)."""
        self._scope(scope).frozen_until = -math.inf

    def frozen_until(self, scope: str, now: float) -> float | None:
        """When a freeze on ``scope`` ends, or None when it is not frozen at ``now``."""
        state = self._scopes.get(scope)
        if state is None or state.frozen_until <= now:
            return None
        return state.frozen_until

    def observe(self, scope: str, used: int, now: float, per: float | None = None) -> bool:
        """Reconcile with the vendor's own count (``X-MBX-USED-WEIGHT-1M: 1200``).

        Our count only ever rises to the vendor's, never falls: the vendor may not have counted
        requests still in flight, and other clients of the same key count against us too.
        ``per`` picks the window the vendor reported on (all quota windows when None).
        Returns True when ``per`` is known and one of our quotas over that window is now full,
        so it holds requests back exactly as long as the vendor's window needs.
        """
        held = False
        for quota in self._scope(scope).quotas:
            if per is not None and quota.spec.per != per:
                continue
            if isinstance(quota, _Clock):
                quota._roll(now)
                quota.used = max(quota.used, used)
            else:
                quota._evict(now)
                if used > quota.used:
                    quota.add(used - quota.used, now)
            held = held or (per is not None and quota.used >= quota.spec.rate)
        return held

    def next_reset(self, scope: str, now: float) -> float | None:
        """When the longest window of ``scope`` next frees room (to pause an exhausted dataset)."""
        state = self._scopes.get(scope)
        if state is None or not state.quotas:
            return None
        longest = max(state.quotas, key=lambda q: q.spec.per)
        return longest.reset_time(now)

    def usage(self, scope: str, now: float) -> list[tuple[Limit, int]]:
        """Each limit of ``scope`` with what counts against it at ``now``."""
        return [(w.limit, w.used) for w in self.windows(scope, now)]

    def time_for(self, scopes: Iterable[str], weight: int, now: float) -> float:
        """The least time the quotas of ``scopes`` need to admit ``weight`` more from ``now``:
        what each window has left goes at once, the rest at the window's rate (a clock window
        first waits for its reset). The slowest quota decides; concurrency caps are not rates."""
        slowest = 0.0
        for scope in scopes:
            state = self._scopes.get(scope)
            if state is None:
                continue
            for quota in state.quotas:
                rate, per = quota.spec.rate, quota.spec.per
                if isinstance(quota, _Clock):
                    quota._roll(now)
                else:
                    quota._evict(now)
                beyond = weight - max(rate - quota.used, 0)
                if beyond <= 0:
                    continue
                if isinstance(quota, _Clock):
                    need = (quota.end - now) + (math.ceil(beyond / rate) - 1) * per
                else:
                    need = beyond / rate * per
                slowest = max(slowest, need)
        return slowest

    def windows(self, scope: str, now: float) -> list[WindowUsage]:
        """Each limit of ``scope`` with its use at ``now`` and, for a clock window, when it resets."""
        state = self._scopes.get(scope)
        if state is None:
            return []
        out = []
        for quota in state.quotas:
            if isinstance(quota, _Clock):
                quota._roll(now)
                out.append(WindowUsage(quota.spec, quota.used, quota.end))
            else:
                quota._evict(now)
                out.append(WindowUsage(quota.spec, quota.used, None))
        out.extend(WindowUsage(c.spec, c.active, None) for c in state.slots)
        return out

    # --- persistence ----------------------------------------------------------------------
    def export_usage(self, now: float, min_period: float = 0.0) -> list[dict[str, Any]]:
        """Usage of windows of ``min_period`` or longer, as JSON-ready records, so a restart
        neither resets a daily quota nor forgets the last minute's sends. Sliding entries of
        windows of an hour or more are rounded *up* to the second (a day of sends stays small):
        a restored log may block slightly longer than the original, never shorter. Shorter
        windows keep their exact instants."""
        records: list[dict[str, Any]] = []
        for name, state in self._scopes.items():
            for quota in state.quotas:
                if quota.spec.per < min_period:
                    continue
                base = {"scope": name, "rate": quota.spec.rate, "per": quota.spec.per,
                        "clock": quota.spec.clock, "tz": quota.spec.tz}
                if isinstance(quota, _Clock):
                    quota._roll(now)
                    if quota.used:
                        records.append({**base, "window_start": quota.start, "used": quota.used})
                else:
                    quota._evict(now)
                    buckets: dict[float, int] = {}
                    coarse = quota.spec.per >= 3600.0
                    for sent, w in quota.log(now):
                        key = float(math.ceil(sent)) if coarse else sent
                        buckets[key] = buckets.get(key, 0) + w
                    if buckets:
                        records.append({**base, "entries": [[t, w] for t, w in buckets.items()]})
        return records

    def restore_usage(self, records: Iterable[Mapping[str, Any]], now: float) -> int:
        """Add exported usage back; records whose scope or limit no longer exist are ignored.
        Returns how many records applied."""
        applied = 0
        for rec in records:
            state = self._scopes.get(rec["scope"])
            if state is None:
                continue
            spec = Quota(int(rec["rate"]), float(rec["per"]), bool(rec["clock"]), rec.get("tz"))
            for quota in state.quotas:
                if quota.spec != spec:
                    continue
                if isinstance(quota, _Clock):
                    quota._roll(now)
                    if quota.start == rec["window_start"]:
                        quota.used = max(quota.used, int(rec["used"]))
                        applied += 1
                else:
                    _merge_log(quota, rec["entries"], now)
                    applied += 1
        return applied

    def _scope(self, scope: str) -> _Scope:
        state = self._scopes.get(scope)
        if state is None:
            state = self._scopes[scope] = _Scope(scope)
        return state


def _merge_log(quota: _Sliding, entries: Iterable[Sequence[float]], now: float) -> None:
    fresh = _Sliding(quota.spec, quota.span - quota.spec.per)
    merged = sorted(quota.log() + [(min(float(t), now), int(w)) for t, w in entries])
    for sent, weight in merged:
        fresh.add(weight, sent)
    fresh._evict(now)
    quota.expiries, quota.weights = fresh.expiries, fresh.weights
    quota.used = fresh.used + quota.held  # requests in flight stay held
    quota.last_sent = fresh.last_sent


AnyGate = Union[Gate, NodeGate]
"""What a dataset's tasks pass: one gate, or one per worker node for node-scoped limits."""

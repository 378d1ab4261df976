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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

from .errors import LimitError
from .windows import (
    DAY,
    Budget,
    Clock,
    Concurrency,
    Counter,
    Lease,
    Limit,
    Quota,
    Sliding,
    Slots,
    WindowUsage,
    merge_log,
)

__all__ = ["Quota", "Concurrency", "Limit", "Limiter", "Gate", "NodeGate", "KeyGate", "AnyGate", "DAY", "WindowUsage"]

class _Scope:
    __slots__ = ("name", "quotas", "slots", "frozen_until", "budget")

    def __init__(self, name: str, lease: Lease) -> None:
        self.name = name
        self.quotas: list[Sliding | Clock] = []
        self.slots: list[Slots] = []
        self.frozen_until = -math.inf
        self.budget = Budget(lease)  # what it may admit before the next durable save (a lease)


class Gate:
    """The scopes one kind of task draws on; admits a task on all of them at once or on none."""

    __slots__ = ("scopes", "_quotas", "_slots", "_budgets", "_lease", "has_concurrency", "counters", "blocker",
                 "chosen", "key")

    def __init__(self, scopes: Sequence[_Scope]) -> None:
        self.scopes = tuple(scopes)
        self._quotas = tuple(q for s in scopes for q in s.quotas)
        self._slots = tuple(c for s in scopes for c in s.slots)
        self._budgets = tuple(s.budget for s in scopes if s.quotas)  # checked only under a lease
        self._lease = scopes[0].budget.lease if scopes else Lease()
        self.has_concurrency = bool(self._slots)
        self.counters: tuple[Counter, ...] = (*self._quotas, *self._slots)  # each limit's own counter
        # After a refusal: the counter (a quota or a concurrency cap) that set the wait, or None
        # when a freeze did. Gates sharing that counter (a vendor's) can wait for it together.
        self.blocker: Counter | None = None
        self.chosen: str | None = None  # a plain gate sends to no node in particular
        self.key: str | None = None  # nor with a key in particular

    @property
    def scope_names(self) -> list[str]:
        return [scope.name for scope in self.scopes]

    def room(self, now: float) -> float:
        """The share of its tightest limit still free at ``now`` (1.0: no limit): how a key is chosen."""
        room = 1.0
        for quota in self._quotas:
            quota.earliest(0, now)  # (brings its count to ``now``)
            room = min(room, (quota.rate - quota.used) / quota.rate)
        for slot in self._slots:
            room = min(room, (slot.cap - slot.active) / slot.cap)
        return room

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
        for budget in self._budgets:
            if budget.earliest(weight, now) == math.inf:
                return math.inf
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
        if self._lease.active:  # what a killed process may have sent unsaved stays within its lease
            for budget in self._budgets:
                if budget.remaining < weight or now >= self._lease.until:
                    self.blocker = None  # parked until the next lease (``Scheduler.renewed``)
                    self._lease.starved = True  # (the saver renews it early: ``Limiter.lease_starved``)
                    return math.inf
            for budget in self._budgets:
                budget.remaining -= weight
        for quota in self._quotas:
            quota.hold(weight)  # each counter was brought to ``now`` by ``earliest``
        for slot in self._slots:
            slot.active += 1
        return None

    def settle(self, weight: int, answered: float, node: str | None = None, key: str | None = None) -> None:
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

    def release(self, node: str | None = None, key: str | None = None) -> None:
        """A task admitted through this gate has finished: give back its concurrency slots."""
        for slot in self._slots:
            if slot.active > 0:
                slot.active -= 1


class _SplitGate:
    """Gates for the same tasks, one per choice (a node, a key): a task passes through one of the
    ``usable`` ones, tried in the order ``_in_turn`` gives; ``_took`` notes which."""

    __slots__ = ("gates", "choices", "usable", "chosen", "key", "blocker", "counters", "has_concurrency")

    def __init__(self, gates: Mapping[str, Gate | NodeGate]) -> None:
        self.gates = dict(gates)
        self.choices = list(self.gates)
        self.usable = set(self.choices)
        self.chosen: str | None = None  # the node the last admitted task goes to
        self.key: str | None = None  # the key it takes
        self.blocker: Counter | None = None
        self.counters = _counters_of(self.gates.values())
        self.has_concurrency: bool = any(g.has_concurrency for g in self.gates.values())

    @property
    def scope_names(self) -> list[str]:
        return list(dict.fromkeys(name for gate in self.gates.values() for name in gate.scope_names))

    def earliest(self, weight: int, now: float) -> float:
        times = [self.gates[c].earliest(weight, now) for c in self.choices if c in self.usable]
        return min(times) if times else math.inf

    def room(self, now: float) -> float:
        return max((self.gates[c].room(now) for c in self.choices if c in self.usable), default=0.0)

    def _in_turn(self, now: float) -> list[str]:
        return [c for c in self.choices if c in self.usable]

    def _took(self, choice: str, gate: Gate | NodeGate) -> None:
        raise NotImplementedError

    def try_acquire(self, weight: int, now: float) -> float | None:
        best = math.inf
        blockers: set[int] = set()
        blocker: Counter | None = None
        for choice in self._in_turn(now):
            gate = self.gates[choice]
            when = gate.try_acquire(weight, now)
            if when is None:
                self._took(choice, gate)
                return None
            best = min(best, when)
            blockers.add(id(gate.blocker))
            blocker = gate.blocker
        # One counter held every choice back (a shared one): wait in its line; else sleep (or
        # park) until the first may go.
        self.blocker = blocker if len(blockers) == 1 else None
        return best


class NodeGate(_SplitGate):
    """A gate for tasks that may go to any of several worker nodes, each with limits of its own
    (a per-IP limit) besides the shared ones: it admits a task through the shared scopes and the
    first node, in turn, whose own limits have room, and says which in ``chosen``. Nodes not
    ``usable`` (their worker is gone) are skipped."""

    __slots__ = ("nodes", "_next")

    def __init__(self, gates: Mapping[str, Gate]) -> None:
        super().__init__(gates)
        self.nodes = self.choices
        self._next = 0

    def _in_turn(self, now: float) -> list[str]:
        count = len(self.nodes)
        turn = [self.nodes[(self._next + k) % count] for k in range(count)]
        return [node for node in turn if node in self.usable]

    def _took(self, choice: str, gate: Gate | NodeGate) -> None:
        self.chosen = choice
        self._next = (self.nodes.index(choice) + 1) % len(self.nodes)

    def settle(self, weight: int, answered: float, node: str | None = None, key: str | None = None) -> None:
        gate = self.gates.get(node) if node is not None else None
        if gate is not None:
            gate.settle(weight, answered)

    def release(self, node: str | None = None, key: str | None = None) -> None:
        gate = self.gates.get(node) if node is not None else None
        if gate is not None:
            gate.release()


class KeyGate(_SplitGate):
    """A gate for tasks that may take any of a vendor's keys, each counted on scopes of its own
    besides the shared ones: ``spread`` admits through the usable key with the most room (every
    key's windows are used, none drains first), ``fill-first`` through the first, in order, that
    has room (a free key before a paid one). Says the key in ``key`` and the node in ``chosen``.
    Keys not ``usable`` (refused by the vendor) are skipped."""

    __slots__ = ("keys", "order")

    def __init__(self, gates: Mapping[str, Gate | NodeGate], order: str = "spread") -> None:
        super().__init__(gates)
        self.keys = self.choices
        self.order = order

    def _in_turn(self, now: float) -> list[str]:
        usable = [k for k in self.keys if k in self.usable]
        if self.order == "spread" and len(usable) > 1:
            rooms = {k: self.gates[k].room(now) for k in usable}
            usable.sort(key=lambda k: -rooms[k])  # (stable: the same room keeps the written order)
        return usable

    def _took(self, choice: str, gate: Gate | NodeGate) -> None:
        self.key, self.chosen = choice, gate.chosen

    def settle(self, weight: int, answered: float, node: str | None = None, key: str | None = None) -> None:
        gate = self.gates.get(key) if key is not None else None
        if gate is not None:
            gate.settle(weight, answered, node)

    def release(self, node: str | None = None, key: str | None = None) -> None:
        gate = self.gates.get(key) if key is not None else None
        if gate is not None:
            gate.release(node)


def _counters_of(gates: Iterable[Gate | NodeGate]) -> tuple[Counter, ...]:
    seen: dict[int, Counter] = {}
    for gate in gates:
        for counter in gate.counters:
            seen.setdefault(id(counter), counter)
    return tuple(seen.values())


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
        self._lease = Lease()  # shared by every scope's budget (see ``lease``)

    # --- configuration -------------------------------------------------------------------
    def configure(self, scope: str, limits: Iterable[Limit], margin: float | None = None) -> None:
        """Set the limits of ``scope``; counters of limits that stay the same keep their usage.
        ``margin`` overrides the limiter's safety gap for this scope's sliding windows.

        Gates made before a reconfiguration still see the scope's new counters, since gates hold
        the scope; call ``gate()`` again after changing limits to refresh its flattened view.
        """
        state = self._scopes.get(scope) or _Scope(scope, self._lease)
        old_q = {q.spec: q for q in state.quotas}
        old_c = {c.spec: c for c in state.slots}
        quotas: list[Sliding | Clock] = []
        slots: list[Slots] = []
        for limit in limits:
            if isinstance(limit, Quota):
                kept = old_q.pop(limit, None)
                gap = self.margin if margin is None else margin
                quotas.append(kept or (Clock(limit) if limit.clock else Sliding(limit, gap)))
            elif isinstance(limit, Concurrency):
                slots.append(old_c.pop(limit) if limit in old_c else Slots(limit))
            else:
                raise LimitError(f"scope {scope!r}: not a limit: {limit!r}")
        # A new cap (a learning probe's, changed) counts the tasks already in flight through the
        # scope (every cap of a scope holds each of them): each gives its slot back when it ends.
        in_flight = max((c.active for c in state.slots), default=0)
        for slot in slots:
            if slot.active == 0:
                slot.active = in_flight
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
                state = self._scopes[name] = _Scope(name, self._lease)
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
            if isinstance(quota, Clock):
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
                if isinstance(quota, Clock):
                    quota._roll(now)
                else:
                    quota._evict(now)
                beyond = weight - max(rate - quota.used, 0)
                if beyond <= 0:
                    continue
                if isinstance(quota, Clock):
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
            if isinstance(quota, Clock):
                quota._roll(now)
                out.append(WindowUsage(quota.spec, quota.used, quota.end))
            else:
                quota._evict(now)
                out.append(WindowUsage(quota.spec, quota.used, None))
        out.extend(WindowUsage(c.spec, c.active, None) for c in state.slots)
        return out

    # --- persistence ----------------------------------------------------------------------
    # --- leases: what a killed process may have sent since its last save ---------------------
    def lease(self, until: float, allowances: Mapping[str, int]) -> None:
        """From now until ``until`` each scope may admit at most its allowance (others nothing):
        the promise the state was just told, so a restarted process can count on it."""
        self._lease.active, self._lease.until, self._lease.starved = True, until, False
        for name, state in self._scopes.items():
            budget = state.budget
            budget.allowance = budget.remaining = allowances.get(name, 0) if state.quotas else math.inf

    @property
    def lease_starved(self) -> bool:
        """True when a scope used its whole allowance under the current lease and waits for the
        next one (renewing it now lets it go on: ``Delivery`` does)."""
        return self._lease.starved

    def next_allowances(self, period: float, stretch: float = 1.0) -> dict[str, int]:
        """Each limited scope's allowance for the next lease: twice what it admitted since the last
        one began, times ``stretch`` (how much longer than the last one the next lease may have
        to last before it is renewed), at least ``LEASE_FLOOR`` (so a quiet scope can start and a
        busy one can grow), never more than its windows could admit in ``period``. A restart
        counts it as sent, so it stays near what the process really sends: a crash costs a window
        what was in use, not all."""
        out = {}
        for name, state in self._scopes.items():
            if not state.quotas:
                continue
            most = min(q.spec.rate * (math.floor(period / q.spec.per) + 1) for q in state.quotas)
            spent = state.budget.spent if self._lease.active else 0
            out[name] = int(min(most, max(2 * spent * stretch, LEASE_FLOOR)))
        return out

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
                if isinstance(quota, Clock):
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
        A lease record (see ``lease_record``) counts what the saving process may have admitted
        after it saved: each scope's allowance, as answered as late as it could have been.
        Returns how many records applied."""
        applied = 0
        for rec in records:
            if rec.get("scope") == LEASE_SCOPE:
                self._charge_lease(rec, now)
                continue
            state = self._scopes.get(rec["scope"])
            if state is None:
                continue
            spec = Quota(int(rec["rate"]), float(rec["per"]), bool(rec["clock"]), rec.get("tz"))
            for quota in state.quotas:
                if quota.spec != spec:
                    continue
                if isinstance(quota, Clock):
                    quota._roll(now)
                    if quota.start == rec["window_start"]:
                        quota.used = max(quota.used, int(rec["used"]))
                        applied += 1
                else:
                    merge_log(quota, rec["entries"], now)
                    applied += 1
        return applied

    def lease_record(self, until: float, allowances: Mapping[str, int]) -> dict[str, Any]:
        """The lease as a usage record, saved with the usage it follows. Requests in flight now are
        in that usage as answered now; the vendor may stamp them later, so they count again here."""
        held = {name: max(q.held for q in state.quotas) for name, state in self._scopes.items() if state.quotas}
        counted = {name: allowances.get(name, 0) + held.get(name, 0) for name in {*allowances, *held}}
        return {"scope": LEASE_SCOPE, "until": until, "allowances": {k: v for k, v in counted.items() if v}}

    def _charge_lease(self, rec: Mapping[str, Any], now: float) -> None:
        # The saving process sent nothing after its lease ended, nor after it died (before now: this
        # process holds the state's lock, which it let go of by dying); a request it sent may be
        # stamped by the vendor a little later.
        at = min(float(rec["until"]), now) + LEASE_CUSHION
        for name, allowance in dict(rec.get("allowances") or {}).items():
            state = self._scopes.get(name)
            if state is None or not allowance:
                continue
            for quota in state.quotas:
                if isinstance(quota, Clock):
                    quota._roll(now)
                quota.charge(int(allowance), at)

    def _scope(self, scope: str) -> _Scope:
        state = self._scopes.get(scope)
        if state is None:
            state = self._scopes[scope] = _Scope(scope, self._lease)
        return state


LEASE_SCOPE = "lease"  # the usage record that holds the lease (no scope has this name)
LEASE_FLOOR = 10  # what a scope may admit under a lease at least (its first requests; it doubles per save)
LEASE_CUSHION = 1.0  # seconds after a lease's end a request sent under it may still be stamped

AnyGate = Union[Gate, NodeGate, KeyGate]
"""What a dataset's tasks pass: one gate, one per worker node for node-scoped limits, or one per
key (each a gate or a node gate) for a vendor with several keys."""

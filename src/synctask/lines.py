"""Where each dataset queue waits: ready, asleep until an instant, parked, or in a counter's line.

The scheduler keeps every queue in exactly one place:

* ``ready``: a round-robin line of queues that may have a task to send now;
* ``sleeping``: a heap of queues with nothing to send before a known instant (the limiter's
  answer, a retry's due time, a freeze);
* ``parked``: queues waiting with no time known and no counter to wait on; any answer or
  release puts them back in line;
* a counter's *waiting line*: queues that found no room on one limit counter, let out one at a
  time as room comes (a line sleeps in the same heap until its counter has room);
* ``idle``: queues with no work at all until a control op adds some.

Pure: no I/O, time is an argument. Entries in the heap and in lines carry a token, so a queue
that moved on leaves stale entries behind that are skipped, never searched for.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

from .lanes import IDLE, PARKED, READY, SLEEPING, Queue
from .windows import Counter

__all__ = ["Lines", "Waitlist"]


class Waitlist:
    """The queues waiting for room on one limit counter (a quota or a concurrency cap; a vendor's
    is shared by all its datasets), let out one at a time, first come first out. Waking them all
    when room appears would cost a failed try per waiting queue for each request admitted: with
    thousands of datasets under one vendor limit, thousands of tries per decision."""

    __slots__ = ("counter", "waiters", "where", "sleep_token", "wake_at")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.waiters: deque[tuple[int, Queue]] = deque()  # (the queue's token when it joined, queue)
        self.where = IDLE  # SLEEPING while an entry in the heap will let one out
        self.sleep_token = 0
        self.wake_at = math.inf


class Lines:
    """The ready line, the sleeping heap, the park and every counter's waiting line."""

    def __init__(self) -> None:
        self.ready: deque[Queue] = deque()
        self.sleeping: list[tuple[float, int, Queue | Waitlist]] = []
        self.parked: list[Queue] = []  # waiting with no time known and no counter to wait on
        self.waitlists: dict[Counter, Waitlist] = {}  # by limit counter, one for each
        self._token = 0

    def line_up(self, queue: Queue) -> None:
        """The waiting lines of the queue's limit counters (one per counter, shared by queues)."""
        waitlists = self.waitlists
        queue.lines = tuple(waitlists.get(c) or waitlists.setdefault(c, Waitlist(c)) for c in queue.gate.counters)

    def forget_unused(self, used: set[int]) -> None:
        """Drop the lines of counters no gate has now (limits that changed) once nobody waits in them."""
        for counter in [c for c, line in self.waitlists.items() if id(c) not in used and not line.waiters
                        and line.where is not SLEEPING]:
            del self.waitlists[counter]

    def wake_due(self, now: float) -> None:
        """Queues whose sleep has ended go to the ready line; lines whose time came let one out."""
        sleeping, ready = self.sleeping, self.ready
        while sleeping and sleeping[0][0] <= now:
            _, token, item = heapq.heappop(sleeping)
            if item.where is SLEEPING and item.sleep_token == token:
                if isinstance(item, Waitlist):
                    item.where = IDLE
                    self.let_out(item)
                else:
                    item.where = READY
                    ready.append(item)

    def next_wake(self) -> float | None:
        """When a sleeping queue next wakes (None: nothing sleeps; wait for an event)."""
        sleeping = self.sleeping
        while sleeping:
            _, token, item = sleeping[0]
            if item.where is SLEEPING and item.sleep_token == token:
                return sleeping[0][0]
            heapq.heappop(sleeping)
        return None

    def wait_in_line(self, queue: Queue, counter: Counter, wake: float, woken_by: Waitlist | None) -> Waitlist:
        """``queue`` found no room on ``counter`` before ``wake`` (``inf``: until a request in
        flight ends): it joins the counter's line, at the front if it just came out of it."""
        line = self.waitlists[counter]
        self.join_line(queue, line, parked=wake == math.inf, front=line is woken_by)
        if wake != math.inf and (line.where is not SLEEPING or wake < line.wake_at):
            self._sleep_line(line, wake)
        return line

    @staticmethod
    def line_waiting(queue: Queue) -> Waitlist | None:
        """A line of queues waiting for room on one of the queue's counters, if there is one."""
        for line in queue.lines:
            if line.waiters:
                return line
        return None

    def join_line(self, queue: Queue, line: Waitlist, *, parked: bool, front: bool = False) -> None:
        """``queue`` waits in ``line`` (at its back, or at its ``front`` when it just came out of
        it); ``parked``: no time is known when room comes (shown as such by ``where``)."""
        self._token += 1
        queue.sleep_token = self._token
        queue.waiting_on = line
        queue.where = PARKED if parked else SLEEPING
        if front:
            line.waiters.appendleft((self._token, queue))
        else:
            line.waiters.append((self._token, queue))

    def _sleep_line(self, line: Waitlist, until: float) -> None:
        self._token += 1
        line.where, line.sleep_token, line.wake_at = SLEEPING, self._token, until
        heapq.heappush(self.sleeping, (until, self._token, line))

    def let_out(self, line: Waitlist) -> None:
        """The first queue still waiting in ``line`` goes to the ready line for a try."""
        waiters = line.waiters
        while waiters:
            token, queue = waiters.popleft()
            if queue.waiting_on is line and queue.sleep_token == token:
                queue.waiting_on = None
                queue.woken_by = line
                queue.where = READY
                self.ready.append(queue)
                return

    def next_out(self, line: Waitlist | None, now: float) -> None:
        """Let the next queue out of ``line`` if its counter has room at ``now``, else wake the
        line when it will (a request's worth): one try per admission, not one per waiting queue."""
        if line is None or not line.waiters or line.where is SLEEPING:
            return
        at = line.counter.earliest(1, now)
        if at <= now:
            self.let_out(line)
        elif at != math.inf:
            self._sleep_line(line, at)

    def room_changed(self, queue: Queue, now: float) -> None:
        """A request of ``queue`` was answered or ended: its counters may have room (or know when
        they will): let the next queue out of each line that waits for one."""
        for line in queue.lines:
            if line.waiters and line.where is not SLEEPING:
                self.next_out(line, now)
        self.unpark()

    def rest(self, queue: Queue, until: float) -> None:
        """``queue`` has nothing to send before ``until`` (``inf``: until something changes)."""
        if until == math.inf:
            queue.where = PARKED
            self.parked.append(queue)
        else:
            self._token += 1
            queue.where = SLEEPING
            queue.sleep_token = self._token
            heapq.heappush(self.sleeping, (until, self._token, queue))

    def poke(self, queue: Queue) -> None:
        """``queue`` may have something to send now: into the ready line, wherever it waited."""
        if queue.where is not READY:
            if queue.waiting_on is not None:
                queue.waiting_on = None  # its place in the line is void (a stale entry, skipped)
            elif queue.where is PARKED:
                self.parked.remove(queue)
            queue.where = READY
            self.ready.append(queue)

    def unpark(self) -> None:
        if self.parked:
            for parked in self.parked:
                parked.where = READY
                self.ready.append(parked)
            self.parked.clear()

    def drop(self, queue: Queue) -> None:
        """Take ``queue`` out of every place (its dataset is removed)."""
        if queue.waiting_on is not None:
            queue.waiting_on = None
        elif queue.where is PARKED:
            self.parked.remove(queue)
        elif queue.where is READY:
            self.ready.remove(queue)
            if queue.woken_by is not None:
                self.let_out(queue.woken_by)
        queue.where = IDLE
        queue.sleep_token = -1

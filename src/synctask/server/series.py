"""The last hour of the daemon's work, for the dashboard's graphs: answers, errors, rate-limited
answers and freezes per 10-second step, and how full each limit was, in fixed memory (a ring
of 360 steps, whatever the daemon has done and for however long it runs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ..events import Event, FreezeEvent, TaskEvent
from ..history import iso
from ..limits import Limiter

__all__ = ["Series", "STEP", "STEPS"]

STEP = 10.0  # seconds per step
STEPS = 360  # steps kept: one hour
SAMPLE_EVERY = 2.0  # seconds between looks at the limits' use
_COUNTS = ("requests", "errors", "limited", "freezes")
_LIMITED = frozenset({"rate_limited", "quota", "banned"})
_NOT_ANSWERS = frozenset({"", "cancelled"})


class Series:
    """Counts per step from the executor's events, and the fullest each limit was in each step
    (0 to 1) from looking at the limiter every ``SAMPLE_EVERY`` seconds."""

    def __init__(self, limiter: Limiter, clock: Callable[[], float] = time.time) -> None:
        self.limiter = limiter
        self.clock = clock
        self._stamp = [-1] * STEPS  # the step each slot holds now
        self._counts = {name: [0] * STEPS for name in _COUNTS}
        self._usage: dict[str, list[float]] = {}  # scope -> fullest fraction per slot
        self._sampler: asyncio.Task[None] | None = None
        self.started = clock()  # steps before this hold nothing worth drawing

    def __call__(self, event: Event) -> None:
        if isinstance(event, TaskEvent):
            if event.outcome in _NOT_ANSWERS:  # a start, or a try a control op stopped
                return
            slot = self._slot(event.at)
            self._counts["requests"][slot] += 1
            if event.outcome in _LIMITED:
                self._counts["limited"][slot] += 1
            elif event.outcome != "ok":
                self._counts["errors"][slot] += 1
        elif isinstance(event, FreezeEvent) and event.new:
            self._counts["freezes"][self._slot(event.at)] += 1

    def sample(self, now: float) -> None:
        """Note how full each limit of each scope is now (the fullest of its limits)."""
        slot = self._slot(now)
        scopes = self.limiter.scopes()
        for gone in set(self._usage) - set(scopes):
            del self._usage[gone]
        for scope in scopes:
            windows = self.limiter.windows(scope, now)
            if not windows:
                continue
            full = max(min(w.used / w.capacity, 1.0) for w in windows)
            values = self._usage.setdefault(scope, [0.0] * STEPS)
            if full > values[slot]:
                values[slot] = full

    def export(self, now: float | None = None) -> dict[str, Any]:
        """The last hour, oldest step first: counts per step and each scope's fullest use."""
        now = self.clock() if now is None else now
        newest = int(now // STEP)
        steps = range(newest - STEPS + 1, newest + 1)
        live = [(self._stamp[b % STEPS] == b, b % STEPS) for b in steps]
        out: dict[str, Any] = {"step_seconds": STEP, "start": iso(steps[0] * STEP),
                               "end": iso((newest + 1) * STEP), "since": iso(max(self.started, steps[0] * STEP))}
        for name, values in self._counts.items():
            out[name] = [values[i] if ok else 0 for ok, i in live]
        out["usage"] = {scope: [round(values[i], 3) if ok else 0.0 for ok, i in live]
                        for scope, values in self._usage.items()}
        return out

    def start(self) -> None:
        if self._sampler is None:
            self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None

    async def _sample_forever(self) -> None:
        while True:
            self.sample(self.clock())
            await asyncio.sleep(SAMPLE_EVERY)

    def _slot(self, at: float) -> int:
        step = int(at // STEP)
        slot = step % STEPS
        if self._stamp[slot] != step:  # a new step: what the slot held is an hour old
            self._stamp[slot] = step
            for values in self._counts.values():
                values[slot] = 0
            for fractions in self._usage.values():
                fractions[slot] = 0.0
        return slot

"""Delivery: rows to sinks and outcomes to the state store, so that "done" means durable.

A task's rows are written (its sink returns only once they are durable) before its outcome is
recorded; outcomes are committed together a few milliseconds after they are recorded (group
commit), so a kill -9 forgets at most what was still in flight and those last milliseconds.
Quota usage is saved about every second and at each checkpoint; each sink repairs what a killed
process left before a run fetches anything.
When the state cannot be written, ``on_failure`` hears it once: the run must end at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .alarm import Alarm
from .catalog import Catalog
from .connectors.streamed import RowStream
from .disk import failure_words
from .errors import SinkMoved, StorageFailed, SyncError
from .fetchers.base import Streamed
from .limits import Limiter
from .model import SyncPlan
from .sinks import Sink, describe_identity, rows_of, sink_identity
from .store import MemoryStore, SQLiteStore, StateUnwritable, Store, TaskRecord

__all__ = ["Delivery"]

SINKS = "sinks"  # the state-store key of where each dataset's sink wrote
SAVE_EVERY = 0.25  # seconds between saves of usage (and leases), at least: what a crash leaves unknown
LEASE = 1.5  # seconds a lease lasts: saves come well within it, so a running process never waits for one
RENEWED_WITHIN = LEASE / 2 + SAVE_EVERY  # the longest a lease goes before the saver renews it
RENEW_EARLY = 0.02  # seconds at least between early renewals (a scope that used its whole allowance)
COMMIT_WITHIN = 0.005  # seconds from an outcome to the commit that holds it (with those recorded meanwhile)


class Delivery:
    """The state store and the sinks' writes, and the failures of either, said in words."""

    def __init__(self, catalog: Catalog, limiter: Limiter, clock: Callable[[], float],
                 store: Store | None, state_path: Path | None) -> None:
        self.catalog = catalog
        self.limiter = limiter
        self._clock = clock
        self._store = store
        self.state_path = state_path
        self.on_failure: Callable[[StateUnwritable], None] = lambda exc: None
        self.on_lease: list[Callable[[], None]] = []  # told of each new lease: queues waiting on one may go
        self.loop: asyncio.AbstractEventLoop | None = None  # where commits are queued (the engine's loop)
        self.failure: str | None = None  # the state could not be written: the run ended
        self.sink_failures: list[str] = []  # sinks that could not be closed (a full disk at the end)
        self._commit_due = False
        self._usage_restored = False
        self._leased_at: float | None = None  # when the current lease began
        self._renew = Alarm()  # rung when a scope used its whole allowance: renew the lease now
        self.before_restore: Callable[[], None] | None = None  # learned limits, taken up before usage
        # Runs' counts go into the state with every save, for the runs still going, so a restarted
        # process shows what its predecessor did (done, failed and rows it recounts from the
        # outcomes, which carry each done task's rows): ``counts`` of a run that still goes (None
        # once it ended: its record is final), ``going`` the runs that go (run id → plan). Set by
        # the executor.
        self.counts: Callable[[str, str], dict[str, Any] | None] = lambda run_id, plan: None
        self.going: Callable[[], Mapping[str, str]] = dict

    # --- the store -----------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The state store; a SQLite file is created only when first needed."""
        if self._store is None:
            self.open_state()
        assert self._store is not None
        return self._store

    def open_state(self, *, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> None:
        if self._store is None:
            assert self.state_path is not None
            self._store = SQLiteStore(self.state_path, wait=wait, on_wait=on_wait)

    def close(self) -> None:
        if self._store is not None:
            try:
                self._store.close()
            except StateUnwritable as exc:
                self.failure = self.failure or str(exc)

    def record(self, record: TaskRecord) -> None:
        """Buffer an outcome and commit it ``COMMIT_WITHIN`` seconds later, with every other
        outcome recorded meanwhile (group commit; no task waits for it): a kill -9 forgets at most
        the tasks still in flight and those of the last few milliseconds, which run again and
        overwrite the same keys. Against a fast vendor each loop turn ends a few tasks: a commit
        per turn cost about 8% of the CPU at 16 workers."""
        self.store.record(record)
        if not self._commit_due:
            self._commit_due = True
            loop = self.loop
            if loop is not None and not loop.is_closed():
                loop.call_later(COMMIT_WITHIN, self._commit)
            else:
                self._commit()

    def _commit(self) -> None:
        self._commit_due = False
        with self.storing():
            self.store.flush()

    def _note_counts(self, runs: Mapping[str, str]) -> None:
        store = self.store
        for run_id, plan in runs.items():
            counts = self.counts(run_id, plan)
            if counts is not None:
                store.note_counts(run_id, counts)

    @contextlib.contextmanager
    def storing(self) -> Iterator[None]:
        """Around every write to the state: when it fails, the run must end at once (what it did
        next could not be remembered, so it would spend requests twice)."""
        try:
            yield
        except StateUnwritable as exc:
            if self.failure is None:
                self.failure = str(exc)
                self.on_failure(exc)

    def restore_usage(self) -> None:
        if not self._usage_restored:
            if self.before_restore is not None:
                self.before_restore()
            self.limiter.restore_usage(self.store.load_usage(), self._clock())
            self._usage_restored = True

    def checkpoint(self, interrupted: Mapping[str, dict[str, Any]], *, last: bool = False) -> None:
        """Save what must survive: buffered outcomes, usage (with a new lease), and the runs that
        did not end (``interrupted``: each run id with its counts). ``last``: the process admits
        nothing more, so its lease promises nothing (a restart then counts no unknown sends)."""
        with self.storing():
            store = self.store
            store.flush()
            self._save_usage(last=last)
            for run_id, stats in interrupted.items():
                store.end_run(run_id, "interrupted", self._clock(), stats)

    def _save_usage(self, *, last: bool = False) -> None:
        """Usage now and the lease that follows it, in one write; the limiter keeps to the lease
        only once the state holds it. Until the next save (``LEASE`` seconds at most) each scope
        admits at most its allowance, so a process killed at any instant left at most that
        unrecorded, and a restarted one counts it (``Limiter.restore_usage``)."""
        now = self._clock()
        records = self.limiter.export_usage(now)
        if isinstance(self.store, MemoryStore):  # nothing outlives this process: no lease to keep
            self.store.save_usage(records)
            return
        until = now if last else now + LEASE
        # What a scope admitted in the last lease's time, scaled to the longest the next one may
        # go before its renewal: a scope admitting at a steady rate is never parked waiting.
        since = now - self._leased_at if self._leased_at is not None else RENEWED_WITHIN
        stretch = max(1.0, RENEWED_WITHIN / max(since, 1e-3))
        allowances = {} if last else self.limiter.next_allowances(LEASE, stretch)
        records.append(self.limiter.lease_record(until, allowances))
        self.store.save_usage(records)
        self.limiter.lease(until, allowances)
        self._leased_at = now
        for hook in self.on_lease:
            hook()

    def renew_soon(self) -> None:
        """A scope used its whole allowance: renew the lease at once rather than at the next
        periodic save (it would wait there for up to ``RENEWED_WITHIN`` seconds)."""
        self._renew.ring()

    async def save_usage_periodically(self, interval: float) -> None:
        """Quota usage and a new lease about every ``SAVE_EVERY`` seconds, so a process killed
        with -9 and restarted knows what it sent, to the lease (outcomes are committed within
        ``COMMIT_WITHIN``, by ``record``). A huge log (a sliding day of sends) takes longer to export: then it
        is saved less often, up to half a lease apart, keeping the cost near 1% of time. A scope
        that used its whole allowance is not left waiting for the next save: ``renew_soon``."""
        loop = asyncio.get_running_loop()
        next_usage = loop.time() + SAVE_EVERY
        # In memory nothing outlives the process: no lease to renew, saves only as often as asked.
        every = interval if isinstance(self.store, MemoryStore) else min(interval, SAVE_EVERY)
        while True:
            self._renew.clear()
            await self._renew.sleep(every)
            if self._renew.rung and self.limiter.lease_starved:  # parked on its allowance: renew now
                next_usage = min(next_usage, loop.time())
                await asyncio.sleep(RENEW_EARLY)  # (a burst of parked scopes shares one renewal)
            if loop.time() >= next_usage:
                started = time.perf_counter()
                with self.storing():
                    self._note_counts(self.going())
                    self.store.flush()
                    self._save_usage()
                next_usage = loop.time() + min(max(SAVE_EVERY, 100 * (time.perf_counter() - started)), LEASE / 2)

    # --- sinks ---------------------------------------------------------------------------
    async def write(self, dataset: str, result: Any,
                    written_rows: Callable[[Sequence[Mapping[str, Any]]], None] | None = None) -> int:
        """Hand a task's result to the dataset's sink (durable when this returns); the rows written.
        ``written_rows`` sees each batch once the sink holds it."""
        if isinstance(result, Streamed):
            return 0  # a stream wrote (and reported) its rows itself, batch by batch
        if isinstance(result, RowStream):  # a large answer: parsed and written a batch at a time
            batches = result.batches()
            written = 0
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                await self._to_sink(dataset, batch)
                if written_rows is not None:
                    written_rows(batch)
                written += len(batch)
            return written
        rows = rows_of(result)
        if not rows:
            return 0
        await self._to_sink(dataset, rows)
        if written_rows is not None:
            written_rows(rows)
        return len(rows)

    async def _to_sink(self, dataset: str, rows: Sequence[Mapping[str, Any]]) -> None:
        try:
            sink = self.catalog.sink(dataset)
            if sink is not None:
                await sink.write(rows)
        except SyncError:
            raise
        except Exception as exc:  # the disk, not the vendor: say so, and stop spending requests
            place = self.catalog.place(dataset)
            raise StorageFailed(f"writing to {place} failed: {failure_words(exc, place)}") from exc

    async def prepare(self, datasets: Collection[str]) -> None:
        """Before a run: the limiter knows what earlier runs sent (to their leases), this run's
        first lease is in the state before anything is sent, the sinks are repaired."""
        self.restore_usage()
        with self.storing():
            self._save_usage()
        await self.recover_sinks(datasets)

    async def wrap_up(self) -> None:
        """After a run: the HTTP sessions and every sink opened are closed (the next run opens them again)."""
        await self.catalog.close_sessions()
        await self.close_sinks(self.catalog.take_opened())

    async def recover_sinks(self, datasets: Collection[str]) -> None:
        """Before anything is fetched, let each sink of a plan repair what a killed process left
        (an interrupted Parquet compaction, stray temporary files), even if nothing is new."""
        for dataset in sorted(datasets):
            if not self.catalog.recoverable(dataset):
                continue
            recover = getattr(self.catalog.sink(dataset), "recover", None)
            if recover is not None:
                await recover()

    async def close_sinks(self, sinks: list[tuple[str, Sink]]) -> None:
        """Close each sink; one that fails is said in ``sink_failures``, the others still close."""
        for dataset, sink in sinks:
            try:
                await sink.close()
            except Exception as exc:  # the disk, at the end: say where and why
                place = self.catalog.place(dataset, sink)
                self.sink_failures.append(f"closing {place} failed: {failure_words(exc, place)}; the rows written "
                                          "before are kept, and the next run tidies the sink again")

    def check_sinks(self, plans: Iterable[SyncPlan], refetch: Collection[str] = ()) -> None:
        """Compare the sink of each dataset of ``plans`` with the one its finished tasks wrote to
        (kept in the state): a sink that moved would skip every finished task and miss their rows,
        so it raises ``SinkMoved`` naming both places, unless the dataset is in ``refetch`` (its
        plans' finished tasks are then forgotten and fetched again into the new place). A sink
        that is the state file itself raises too. The places are then kept for the next run."""
        store = self.store
        known: dict[str, Any] = dict(store.setting(SINKS) or {})
        state = self.state_path.resolve() if self.state_path is not None else None
        moved = []
        datasets: dict[str, list[str]] = {}
        for plan in plans:
            datasets.setdefault(plan.dataset, []).append(plan.name)
        for name, names in datasets.items():
            spec = self.catalog.sink_spec(name)
            identity = sink_identity(name, spec, self.catalog.base_dir) if spec else None
            if identity is None:
                continue
            if state is not None and identity["path"] in {f"{state}{end}" for end in ("", "-wal", "-shm", ".lock")}:
                raise SinkMoved(f"the sink of dataset {name!r} is the state file {state}: its rows would destroy "
                                "the state; give the sink a path of its own")
            before = known.get(name)
            if name in refetch:
                for plan_name in names:
                    store.forget_plan(plan_name)
            elif before is not None and before != identity:
                done = sum(store.task_states(plan_name).get("done", 0) for plan_name in names)
                if done:
                    moved.append(f"dataset {name!r} now writes to {describe_identity(identity)}, but the rows of its "
                                 f"{done:,} finished tasks are in {describe_identity(before)}; they would be skipped "
                                 f"and the new place would miss them. Put the sink back, move the data there, or run "
                                 f"again with --refetch {name} to fetch them again into the new place")
                    continue
            known[name] = identity
        if moved:
            raise SinkMoved("; ".join(moved))
        store.save_setting(SINKS, known)

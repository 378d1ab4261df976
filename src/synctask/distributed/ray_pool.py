"""Running tasks on a Ray cluster: the master's side of the actors in ``actor.py``.

The executor, its scheduler and its limiter stay in the master: one authority decides every
send, so limits hold across nodes without distributed races. This runner only carries each
admitted task to an actor (one per node by default, ``slots`` tasks at once each), in batches
both ways, and brings its outcome back. When an actor or its node dies, its tasks in flight
come back as cancelled (to their queues, without using a retry; the limiter has counted them as
sent, since the vendor may have seen them) and a new actor starts on a node still alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..connectors import CONNECTORS
from ..errors import Failure, OutcomeKind, SyncError, TaskError
from ..model import Dataset, SyncTask, Vendor

__all__ = ["RayRunner", "RemoteFailure", "ray_available", "remote_spec"]

CLOCK_PROBES = 5  # clock readings per actor at start; the one with the shortest round trip wins
NODE_KEY = 12  # hex digits of a Ray node id that name the node in limits and messages
ACTOR_START = 60.0  # seconds an actor may take to come up before the run gives up on it
NODE_WATCH = 2.0  # seconds between looks for nodes that joined the cluster since the start
INSTALL = "Ray is not installed: pip install 'synctask[ray]'"
_NAMES = itertools.count(1)  # actor numbers, unique in this process (a killed actor's name frees late)
_PROCESS = uuid.uuid4().hex[:8]  # and this master among others with the same pid on other machines


RAY_LOG = logging.getLogger("synctask.ray")  # where Ray's own messages go (not raw to the terminal)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class RemoteFailure(TaskError):
    """A task's failure as its node classified it, carried back to the master unchanged."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure

    def to_failure(self) -> Failure:
        return self.failure


@dataclass
class _Worker:
    handle: Any
    node_id: str
    ip: str
    offset: float  # the node's clock minus the master's
    uncertainty: float  # half the shortest round trip: how wrong ``offset`` may be
    pending: dict[int, tuple[asyncio.Future[tuple[Any, ...]], SyncTask]] = field(default_factory=dict)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    cancels: list[int] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    collector: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return f"{self.ip} (node {self.node_id[:NODE_KEY]})"

    @property
    def node(self) -> str:
        """The node's name in limiter scopes (``node:<this>:vendor:<vendor>``)."""
        return self.node_id[:NODE_KEY]


class RayRunner:
    """Runs tasks' fetches on Ray actors, batched; see the module's docstring."""

    def __init__(self, address: str, *, slots: int, actors: int | None,
                 fetch_spec: Callable[[str], tuple[Any, ...]], dataset_of: Callable[[SyncTask], str],
                 answered: Callable[[SyncTask, float], None], lost: Callable[[str, list[SyncTask]], None],
                 clock: Callable[[], float] = time.time,
                 observed: Callable[[SyncTask, Any, float], None] | None = None,
                 nodes_changed: Callable[[set[str]], None] | None = None, local: Any = None) -> None:
        self.address = address
        self.slots = slots
        self.actors = actors
        self.fetch_spec = fetch_spec
        self.dataset_of = dataset_of
        self.answered = answered
        self.lost = lost
        self.clock = clock
        self.observed = observed
        self.nodes_changed = nodes_changed
        self.local = local  # a Runner for what stays in the master's process (WebSocket streams)
        self.workers: list[_Worker] = []
        self._keys = itertools.count(1)
        self._flush_due = False
        self._started_ray = False
        self._sends: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._spawning: set[str] = set()  # nodes an actor is being started on

    # --- life ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to the cluster (``auto``, an address, or ``local`` to start one here) and
        start the actors, measuring each one's clock against the master's."""
        if self.workers:
            return
        try:
            import ray
        except ImportError:
            raise SyncError(INSTALL) from None
        _ray_messages_to_log()
        if not ray.is_initialized():
            # "local" starts an instance of this process's own, whatever cluster the machine last
            # started or $RAY_ADDRESS names. In this thread (Ray installs signal handlers).
            with _stderr_to_log():  # what the processes it starts print goes to the log too
                ray.init(address=self.address, log_to_driver=False, include_dashboard=False,
                         configure_logging=False)
            self._started_ray = True
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if not nodes:
            raise SyncError(f"the Ray cluster at {self.address!r} has no live node")
        count = self.actors or len(nodes)
        await asyncio.gather(*(self._spawn(nodes[i % len(nodes)]["NodeID"]) for i in range(count)))
        if self.actors is None:  # one actor per node: nodes that join later get theirs
            self._watcher = asyncio.get_running_loop().create_task(self._watch_nodes())

    async def _watch_nodes(self) -> None:
        """Start an actor on each node that joined the cluster after the start (its node scopes
        count from then); a node that cannot take one is tried again at the next look."""
        import ray

        while True:
            await asyncio.sleep(NODE_WATCH)
            try:
                alive = await asyncio.to_thread(lambda: [n["NodeID"] for n in ray.nodes() if n.get("Alive")])
            except Exception:  # the cluster's control store is briefly unreachable: look again later
                continue
            used = {w.node_id for w in self.workers} | self._spawning
            for node in [n for n in alive if n not in used]:
                self._spawning.add(node)
                try:
                    await self._spawn(node)
                except Exception:  # the node left again, or has no room: the next look tries again
                    pass
                finally:
                    self._spawning.discard(node)

    async def _spawn(self, node_id: str | None) -> _Worker:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .actor import TaskActor

        # Named, so `ray list actors` (and a test) can tell synctask's actors and their master's pid.
        name = f"synctask-worker-{os.getpid()}-{next(_NAMES)}-{_PROCESS}"
        options: dict[str, Any] = {"max_concurrency": self.slots + 8, "num_cpus": 0, "name": name,
                                   "namespace": "synctask"}
        if node_id is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
        handle: Any = ray.remote(TaskActor).options(**options).remote()
        try:
            where = await asyncio.wait_for(handle.describe.remote(), ACTOR_START)
        except TimeoutError:
            ray.kill(handle)
            raise SyncError(f"a Ray actor did not start within {ACTOR_START:g}s on node {node_id}; is the node "
                            "short of memory, or gone?") from None
        offset, uncertainty = 0.0, float("inf")
        for _ in range(CLOCK_PROBES):
            sent = self.clock()
            reading = await handle.clock.remote()
            back = self.clock()
            if (back - sent) / 2 < uncertainty:
                uncertainty = (back - sent) / 2
                offset = reading - (sent + back) / 2
        worker = _Worker(handle, where["node_id"], where["ip"], offset, uncertainty)
        worker.collector = asyncio.get_running_loop().create_task(self._collect(worker))
        self.workers.append(worker)
        self._nodes_changed()
        return worker

    def nodes_up(self) -> list[str]:
        """The nodes that have a worker now (their names in limiter scopes), in start order."""
        return list(dict.fromkeys(w.node for w in self.workers))

    def _nodes_changed(self) -> None:
        if self.nodes_changed is not None:
            self.nodes_changed(set(self.nodes_up()))

    async def close(self) -> None:
        """Stop the actors (tasks still on them are cancelled there) and leave the cluster."""
        import ray

        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        workers, self.workers = self.workers, []
        for worker in workers:
            if worker.collector is not None:
                worker.collector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.collector
            with contextlib.suppress(Exception):
                ray.kill(worker.handle)
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def nodes(self) -> list[str]:
        return [w.label for w in self.workers]

    # --- tasks ---------------------------------------------------------------------------
    async def run(self, task: SyncTask) -> Any:
        dataset = self.dataset_of(task)
        if self.local is not None and self.fetch_spec(dataset)[0] == "local":
            return await self.local.run(task)
        workers = self.workers if task.node is None else [w for w in self.workers if w.node == task.node]
        if not workers:
            where = "no Ray worker is alive" if task.node is None else f"node {task.node} has no Ray worker now"
            raise RemoteFailure(Failure(OutcomeKind.CANCELLED, f"{where}; the task goes back to its queue"))
        worker = min(workers, key=lambda w: len(w.pending))
        key = next(self._keys)
        future: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        worker.pending[key] = (future, task)
        worker.outbox.append((key, task.plan, dataset, dict(task.params), task.timeout, task.key))
        self._schedule_flush()
        try:
            failure, result, ended, began, observations = await future
        except asyncio.CancelledError:
            if worker.pending.pop(key, None) is not None:
                worker.cancels.append(key)
                self._schedule_flush()
            raise

        def here(at: float) -> float:  # the node's clock, made the master's: later by the uncertainty, never past now
            return min(at - worker.offset + worker.uncertainty, self.clock())

        if began is not None:  # a node may send it seconds after its dispatch: the vendor counted it about then
            task.reached = min(began - worker.offset, self.clock())
        if self.observed is not None:
            for observation, at in observations:
                self.observed(task, observation, here(at))
        self.answered(task, here(began if began is not None else ended))
        if failure is not None:
            raise RemoteFailure(failure)
        return result

    def _schedule_flush(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """One call per actor per loop turn, carrying every task and cancel of the turn."""
        self._flush_due = False
        for worker in self.workers:
            if worker.outbox:
                batch, worker.outbox = worker.outbox, []
                fetchers = {}
                for _, _, dataset, *_ in batch:
                    if dataset not in worker.known:
                        worker.known.add(dataset)
                        fetchers[dataset] = self.fetch_spec(dataset)
                self._send(worker.handle.run.remote(batch, fetchers))
            if worker.cancels:
                keys, worker.cancels = worker.cancels, []
                self._send(worker.handle.cancel.remote(keys))

    def _send(self, ref: Any) -> None:
        """Await a call's reply in the background: a dead actor is noticed by its collector."""
        async def settle() -> None:
            with contextlib.suppress(Exception):
                await ref

        job = asyncio.get_running_loop().create_task(settle())
        self._sends.add(job)
        job.add_done_callback(self._sends.discard)

    async def _collect(self, worker: _Worker) -> None:
        """Bring outcomes back as they are ready; on the actor's death, requeue and replace."""
        import ray

        while True:
            try:
                outcomes = await worker.handle.collect.remote()
            except asyncio.CancelledError:
                raise
            except (ray.exceptions.RayActorError, ray.exceptions.RaySystemError) as exc:
                await self._lose(worker, exc)
                return
            for key, *outcome in outcomes:
                entry = worker.pending.pop(key, None)
                if entry is not None and not entry[0].done():
                    entry[0].set_result(tuple(outcome))

    async def _lose(self, worker: _Worker, exc: BaseException) -> None:
        import ray

        if worker in self.workers:
            self.workers.remove(worker)
            self._nodes_changed()
        message = (f"the Ray worker on {worker.label} was lost ({type(exc).__name__}); its tasks go back to "
                   "their queues without using a retry")
        tasks = [task for _, task in worker.pending.values()]
        lost = Failure(OutcomeKind.CANCELLED, message)
        for future, _ in worker.pending.values():
            if not future.done():
                future.set_result((lost, None, self.clock() + worker.offset, None, []))
        worker.pending.clear()
        self.lost(message, tasks)
        alive = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        if alive:
            used = {w.node_id for w in self.workers} | self._spawning
            node = next((n for n in alive if n not in used), alive[0])
            self._spawning.add(node)
            try:
                with contextlib.suppress(Exception):
                    await self._spawn(node)
            finally:
                self._spawning.discard(node)


class _ToLog(logging.Handler):
    """Ray's log records, said again on ``synctask.ray`` one level lower (Ray's warnings are
    advice to whoever runs a cluster; synctask says what matters to a run in its own words)."""

    def emit(self, record: logging.LogRecord) -> None:
        RAY_LOG.log(max(record.levelno - 10, logging.DEBUG), "%s", record.getMessage())


def _ray_messages_to_log() -> None:
    """Send Ray's own messages (its loggers, and the cluster's error lines such as "(raylet) A
    worker died") to the ``synctask.ray`` logger, not raw to stderr through the progress table.
    The error lines come through a private function of Ray's driver; if it moved, they print."""
    ray_logger = logging.getLogger("ray")
    if not any(isinstance(h, _ToLog) for h in ray_logger.handlers):
        ray_logger.handlers[:] = [_ToLog()]  # in place of its handler to stderr
        ray_logger.propagate = False
    try:
        from ray._private import worker as driver
    except ImportError:
        return
    if hasattr(driver, "print_to_stdstream"):
        def said(data: dict[str, Any], ignore_prefix: bool = False) -> None:
            for line in data.get("lines", ()):
                RAY_LOG.info("(%s) %s", data.get("pid", "ray"), line)

        driver.print_to_stdstream = said


@contextlib.contextmanager
def _stderr_to_log() -> Iterator[None]:
    """While Ray starts, file descriptor 2 is a pipe whose lines go to ``synctask.ray``: the
    processes it starts (its GCS, raylet, workers) keep that stderr for life, so what they print
    ("Token authentication is enabled ...") reaches the log, not the terminal."""
    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)
    os.close(write)
    threading.Thread(target=_forward, args=(read,), name="synctask-ray-stderr", daemon=True).start()
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _forward(read: int) -> None:
    """Each line written to the pipe, to the log; ends when the last process holding it does."""
    with os.fdopen(read, "rb") as lines:
        for line in lines:
            RAY_LOG.info("%s", line.decode(errors="replace").rstrip())


def remote_spec(dataset: Dataset, vendor: Vendor | None, fetch: Any) -> tuple[Any, ...]:
    """How a Ray node makes the dataset's fetcher: a ``python:`` task by name, the callable
    itself (pickled), or an HTTP connector from its vendor and dataset (token included: it
    travels inside the cluster only); ``("local",)``: a WebSocket stream, run in the master's
    process (a stream holds one connection for hours: nothing to spread)."""
    if fetch is not None and not hasattr(fetch, "fetch"):
        return ("callable", fetch, False)
    for spec in (dataset.api, vendor.connector if vendor else ""):
        if spec.startswith("python:"):
            return ("python", spec)
    if vendor is not None and vendor.connector in CONNECTORS:
        return ("http", vendor, dataset)
    if vendor is not None and vendor.connector == "websocket":
        return ("local",)
    raise SyncError(f"dataset {dataset.name!r}: connector {vendor.connector if vendor else '?'!r} cannot run on "
                    "Ray; use an HTTP connector or a Python task, or run it without --ray")

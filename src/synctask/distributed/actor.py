"""The Ray actor that runs tasks on a node: batches in, outcomes out in batches.

The master sends ``run(batch, fetchers)`` (each task with its dataset, parameters and timeout,
plus the fetchers the node does not know yet) and keeps one ``collect()`` call waiting, which
returns every outcome ready since the last one. So a call carries many tasks each way, and Ray's
per-call cost (about 3 ms here) is paid per batch, not per task. Outcomes carry the node's clock
reading when the answer came; the master converts it to its own clock.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

from ..errors import Failure, OutcomeKind, classify
from ..fetchers import PythonFetcher, resolve_callable
from ..model import SyncTask

__all__ = ["TaskActor"]

# (key, plan, dataset, params, timeout)
TaskSpec = tuple[int, str, str, dict[str, Any], "float | None", "str | None"]  # (..., timeout, vendor key's name)
# (key, failure or None, result, when it ended and when its answer began (None: not told) on
# this node's clock, the vendor's counts seen in the answer as (observation, at))
Outcome = tuple[int, "Failure | None", Any, float, "float | None", list[tuple[Any, float]]]


class TaskActor:
    """One node's worker: runs up to ``slots`` tasks at once on its event loop."""

    def __init__(self) -> None:
        self._fetchers: dict[str, Any] = {}
        self._sessions: Any = None
        self._answers: dict[SyncTask, float] = {}
        self._observed: dict[SyncTask, list[tuple[Any, float]]] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._ready: list[Outcome] = []
        self._wake = asyncio.Event()

    def describe(self) -> dict[str, Any]:
        """Where this actor runs: its node's id and address, and its process."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
                "host": socket.gethostname(), "pid": os.getpid()}

    def clock(self) -> float:
        return time.time()

    async def run(self, batch: list[TaskSpec], fetchers: dict[str, tuple[Any, ...]]) -> int:
        for dataset, spec in fetchers.items():
            self._fetchers[dataset] = self._fetcher(spec)
        for key, plan, dataset, params, timeout, api_key in batch:
            self._running[key] = asyncio.get_running_loop().create_task(
                self._one(key, plan, dataset, params, timeout, api_key))
        return len(self._running)

    async def _one(self, key: int, plan: str, dataset: str, params: dict[str, Any], timeout: float | None,
                   api_key: str | None = None) -> None:
        failure: Failure | None = None
        result: Any = None
        task = SyncTask(plan, params, timeout=timeout)
        task.key = api_key  # the vendor key the master's limits chose (its name: the fetch spec has the values)
        try:
            fetcher = self._fetchers[dataset]
            if timeout is None:
                result = await fetcher.fetch(task)
            else:
                async with asyncio.timeout(timeout):
                    result = await fetcher.fetch(task)
        except asyncio.CancelledError:
            failure = Failure(OutcomeKind.CANCELLED, "stopped while running")
        except Exception as exc:  # said back to the master as an outcome, like any other failure
            failure = classify(exc=exc)
            if isinstance(exc, TimeoutError) and timeout:
                failure = Failure(OutcomeKind.TIMEOUT, f"no answer within {timeout:g}s")
        self._running.pop(key, None)
        self._ready.append((key, failure, result, time.time(), self._answers.pop(task, None),
                            self._observed.pop(task, [])))
        self._wake.set()

    async def collect(self) -> list[Outcome]:
        """Every outcome ready since the last call (waits for at least one)."""
        await self._wake.wait()
        self._wake.clear()
        ready, self._ready = self._ready, []
        return ready

    def cancel(self, keys: list[int]) -> None:
        for key in keys:
            handle = self._running.get(key)
            if handle is not None:
                handle.cancel()


    def _fetcher(self, spec: tuple[Any, ...]) -> Any:
        """``("python", "python:pkg.module:function")``, ``("callable", fn, single_argument)`` or
        ``("http", vendor, dataset)``: an HTTP connector whose answers' first byte and rate-limit
        headers are noted per task and sent back with its outcome."""
        if spec[0] == "python":
            return PythonFetcher(resolve_callable(spec[1]))
        if spec[0] == "callable":
            return PythonFetcher(spec[1], single_argument=bool(spec[2]))
        from ..fetchers.http import http_fetcher
        from ..fetchers.sessions import SessionPool

        if self._sessions is None:
            self._sessions = SessionPool()
        return http_fetcher(spec[1], spec[2], self._sessions, self._observe, time.time, self._answer)

    def _observe(self, task: SyncTask, observation: Any, now: float) -> None:
        self._observed.setdefault(task, []).append((observation, now))

    def _answer(self, task: SyncTask, at: float) -> None:
        self._answers.setdefault(task, at)

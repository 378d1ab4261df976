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
TaskSpec = tuple[int, str, str, dict[str, Any], "float | None"]
# (key, failure or None, result, answered at on this node's clock)
Outcome = tuple[int, "Failure | None", Any, float]


class TaskActor:
    """One node's worker: runs up to ``slots`` tasks at once on its event loop."""

    def __init__(self) -> None:
        self._fetchers: dict[str, PythonFetcher] = {}
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
            self._fetchers[dataset] = _fetcher(spec)
        for key, plan, dataset, params, timeout in batch:
            self._running[key] = asyncio.get_running_loop().create_task(self._one(key, plan, dataset, params, timeout))
        return len(self._running)

    async def _one(self, key: int, plan: str, dataset: str, params: dict[str, Any], timeout: float | None) -> None:
        failure: Failure | None = None
        result: Any = None
        try:
            fetcher = self._fetchers[dataset]
            task = SyncTask(plan, params, timeout=timeout)
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
        self._ready.append((key, failure, result, time.time()))
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


def _fetcher(spec: tuple[Any, ...]) -> PythonFetcher:
    """``("python", "python:pkg.module:function")`` or ``("callable", fn, single_argument)``."""
    if spec[0] == "python":
        return PythonFetcher(resolve_callable(spec[1]))
    return PythonFetcher(spec[1], single_argument=bool(spec[2]))

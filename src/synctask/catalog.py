"""What the executor knows: vendors, datasets and plans as registered, and what is built from them.

Each dataset gets its fetcher (a Python callable, a WebSocket stream or an HTTP connector) when
it is added, and its sink (from its ``sink`` table) when rows first need it; the sinks a run
opened are closed at its end, those of removed datasets as soon as nothing writes to them.
The catalog decides nothing about when tasks run: that is the scheduler's job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .connectors import CONNECTORS, Observation
from .errors import SyncError, UnknownPlan
from .fetchers import Fetcher, PythonFetcher, resolve_callable
from .model import Dataset, SyncPlan, SyncTask, Vendor
from .sinks import Sink, open_sink, sink_place

if TYPE_CHECKING:
    from .fetchers.sessions import SessionPool

__all__ = ["Catalog", "FetcherHooks"]


@dataclass(frozen=True)
class FetcherHooks:
    """What network fetchers tell the executor: the vendor's own counts, the first byte of each
    answer, a stream's progress (and where to resume it), on the executor's clock."""

    observed: Callable[[SyncTask, Observation, float], None]
    answered: Callable[[SyncTask, float], None]
    streamed: Callable[[SyncTask, int, int, dict[str, int]], None]
    resume: Callable[[SyncTask], dict[str, Any] | None]
    clock: Callable[[], float]
    reconnected: Callable[[SyncTask, int, int | None], None] | None = None  # a stream came back


class Catalog:
    """Vendors, datasets and plans by name, each dataset's fetcher, and its sink (opened lazily)."""

    def __init__(self, base_dir: Path, *, remote: bool = False) -> None:
        self.base_dir = base_dir
        self.hooks: FetcherHooks | None = None  # set by the engine before the first dataset
        self.remote = remote  # on Ray: keep how a node makes each fetcher too
        self.vendors: dict[str, Vendor] = {}
        self.datasets: dict[str, Dataset] = {}
        self.plans: dict[str, SyncPlan] = {}
        self.fetchers: dict[str, Fetcher] = {}
        self.fetch_specs: dict[str, tuple[Any, ...]] = {}  # how a Ray node makes each dataset's fetcher
        self._given: dict[str, Sink] = {}  # sinks given by the caller: theirs to close
        self._specs: dict[str, Mapping[str, Any]] = {}  # sink tables from plan files: ours, opened per run
        self._opened: dict[str, Sink] = {}
        self._removed: list[Sink] = []  # opened sinks of removed datasets, to close
        self._sessions: SessionPool | None = None

    # --- lookups -------------------------------------------------------------------------
    def plan(self, name: str) -> SyncPlan:
        plan = self.plans.get(name)
        if plan is None:
            raise UnknownPlan(f"no plan named {name!r}; known: {', '.join(self.plans) or 'none'}")
        return plan

    def dataset(self, name: str) -> Dataset:
        found = self.datasets.get(name)
        if found is None:
            raise UnknownPlan(f"no dataset named {name!r}; known: {', '.join(self.datasets) or 'none'}")
        return found

    def options_of(self, dataset: str) -> Mapping[str, Any] | None:
        """A dataset's options with its vendor's beneath them (as its connector reads them)."""
        found = self.datasets.get(dataset)
        if found is None:
            return None
        vendor = self.vendors.get(found.vendor)
        return {**dict(vendor.options), **dict(found.options)} if vendor is not None else dict(found.options)

    def transport(self, dataset: str) -> str:
        """How a dataset's tasks reach its vendor: "http", "stream" (a WebSocket) or "python"
        (a callable or a fetcher of the user's)."""
        kind = type(self.fetchers.get(dataset)).__name__
        return {"HttpFetcher": "http", "WebSocketFetcher": "stream"}.get(kind, "python")

    def dataset_of(self, task: SyncTask) -> str:
        plan = self.plans.get(task.plan)
        return plan.dataset if plan else ""

    # --- registering -----------------------------------------------------------------------
    def add_vendor(self, vendor: Vendor) -> None:
        self.vendors[vendor.name] = vendor

    def add_plan(self, plan: SyncPlan) -> None:
        self.plans[plan.name] = plan

    def remove_plan(self, name: str) -> None:
        self.plans.pop(name, None)

    def add_dataset(self, dataset: Dataset, fetch: Callable[..., Any] | Fetcher | None = None,
                    sink: Sink | None = None) -> None:
        vendor = self.vendors.get(dataset.vendor)
        self.datasets[dataset.name] = dataset
        self.fetchers[dataset.name] = self._make_fetcher(dataset, vendor, fetch)
        if self.remote:
            from .distributed.ray_pool import remote_spec

            self.fetch_specs[dataset.name] = remote_spec(dataset, vendor, fetch)
        if sink is not None:
            self._given[dataset.name] = sink
        elif dataset.sink:
            self._specs[dataset.name] = dataset.sink
            open_sink(dataset.name, dataset.sink, self.base_dir, check_only=True)

    def add_callable(self, dataset: Dataset, execute: Callable[[Any], Any]) -> None:
        """A job's dataset: each mini-task calls ``execute(item)``, here or on a Ray node."""
        self.datasets[dataset.name] = dataset
        self.fetchers[dataset.name] = PythonFetcher(execute, single_argument=True)
        self.fetch_specs[dataset.name] = ("callable", execute, True)

    def remove_dataset(self, name: str) -> None:
        """Forget a dataset; its opened sink waits in ``take_removed`` to be closed."""
        self.datasets.pop(name, None)
        self.fetchers.pop(name, None)
        self.fetch_specs.pop(name, None)
        self._specs.pop(name, None)
        opened = self._opened.pop(name, None)
        if opened is not None:
            self._removed.append(opened)

    def remove_vendor(self, name: str) -> None:
        users = [d.name for d in self.datasets.values() if d.vendor == name]
        if users:
            raise ValueError(f"vendor {name!r} is still used by datasets {users}")
        self.vendors.pop(name, None)

    def _make_fetcher(self, dataset: Dataset, vendor: Vendor | None, fetch: Any) -> Fetcher:
        if fetch is not None:
            return fetch if hasattr(fetch, "fetch") else PythonFetcher(fetch)
        for where, spec in ((f"datasets.{dataset.name}.api", dataset.api),
                            (f"vendors.{dataset.vendor}.connector", vendor.connector if vendor else "")):
            if spec.startswith("python:"):
                try:
                    return PythonFetcher(resolve_callable(spec))
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from None
        name = vendor.connector if vendor else "?"
        hooks = self.hooks
        assert hooks is not None, "the engine gives the catalog its hooks first"
        if vendor is not None and name == "websocket":
            from .fetchers.websocket import WebSocketFetcher

            url = (vendor.base_url or "").rstrip("/") + str(dataset.options.get("path", "/ws"))
            return WebSocketFetcher(vendor.name, url, self.http, lambda: self.sink(dataset.name),
                                    int(dataset.options.get("batch", 100)), on_flush=hooks.streamed,
                                    resume=hooks.resume, on_answered=hooks.answered, clock=hooks.clock,
                                    on_reconnect=hooks.reconnected)
        if vendor is not None and name in CONNECTORS:
            from .fetchers.http import http_fetcher

            return http_fetcher(vendor, dataset, self.http, hooks.observed, hooks.clock, hooks.answered)
        raise SyncError(
            f"dataset {dataset.name!r}: connector {name!r} is not available; use "
            f"{', '.join(repr(c) for c in [*CONNECTORS, 'websocket'])} "
            "or a Python task (api = \"python:package.module:function\")"
        )

    @property
    def http(self) -> SessionPool:
        """The HTTP client sessions, made when the first network fetcher is (aiohttp loads then)."""
        if self._sessions is None:
            from .fetchers.sessions import SessionPool

            self._sessions = SessionPool()
        return self._sessions

    async def close_sessions(self) -> None:
        if self._sessions is not None:
            await self._sessions.close()

    # --- sinks ---------------------------------------------------------------------------
    def sink(self, dataset: str) -> Sink | None:
        """The dataset's sink, opened from its table on first need."""
        sink = self._given.get(dataset) or self._opened.get(dataset)
        if sink is None and dataset in self._specs:
            sink = open_sink(dataset, self._specs[dataset], self.base_dir)
            if sink is not None:
                self._opened[dataset] = sink
        return sink

    def sink_spec(self, dataset: str) -> Mapping[str, Any] | None:
        """The dataset's sink table (None for a sink given from Python, or none)."""
        return self._specs.get(dataset)

    def recoverable(self, dataset: str) -> bool:
        """Whether the dataset's sink may hold what a killed process left to repair (Parquet, or
        a sink given from Python); others stay closed until used."""
        return dataset in self._given or self._specs.get(dataset, {}).get("kind") == "parquet"

    def place(self, dataset: str, sink: Sink | None = None) -> str:
        """Where the dataset's rows go, for a message."""
        sink = sink or self._given.get(dataset) or self._opened.get(dataset)
        return sink_place(dataset, sink, self._specs.get(dataset, {}), self.base_dir)

    def take_removed(self) -> list[tuple[str, Sink]]:
        """The opened sinks of removed datasets, to close now (handed over once)."""
        removed, self._removed = self._removed, []
        return [("", sink) for sink in removed]

    def take_opened(self) -> list[tuple[str, Sink]]:
        """Every sink this catalog opened (removed ones too), to close at a run's end."""
        opened, self._opened = self._opened, {}
        return [*opened.items(), *self.take_removed()]

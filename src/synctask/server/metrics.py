"""Prometheus metrics of a running executor, at ``/metrics`` of ``synctask serve``.

Counters and the request-duration histogram follow the executor's events; gauges (tasks in
flight and by state, limit usage and capacity, freezes, workers, last success) are read from
the executor when Prometheus scrapes. Labels stay bounded: plan, dataset, vendor, scope, limit,
outcome and state names, never a task id or a parameter value.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..errors import outcome_told
from ..events import Event, FreezeEvent, TaskEvent
from ..executor import SyncTaskExecutor
from ..model import scope_parts

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_ENDED = ("done", "failed", "retry", "requeued", "cancelled")


class Metrics:
    """One registry per executor (so tests and several daemons in one process do not mix)."""

    def __init__(self, executor: SyncTaskExecutor) -> None:
        self.executor = executor
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("synctask_requests", "Requests (tasks sent) that came back, by outcome.",
                                ["vendor", "dataset", "outcome"], registry=self.registry)
        self.tasks = Counter("synctask_tasks", "Tasks that ended a try, by how.", ["plan", "state"],
                             registry=self.registry)
        self.retries = Counter("synctask_retries", "Tries that will be retried.", ["vendor", "reason"],
                               registry=self.registry)
        self.freezes = Counter("synctask_freezes", "Freezes that began.", ["vendor", "scope"], registry=self.registry)
        self.duration = Histogram("synctask_request_duration_seconds", "From a task's start to its end.",
                                  ["vendor"], registry=self.registry,
                                  buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.limit_wait = Histogram("synctask_limit_wait_seconds", "How long a dataset's next task was held back "
                                    "by limits or a freeze before it went.", ["vendor"], registry=self.registry,
                                    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600))
        self.last_success: dict[str, float] = {}
        self._started: dict[str, float] = {}  # task id -> start, for tasks in flight only
        self.registry.register(_Gauges(self))
        executor.listen(self.observe)
        executor.scheduler.on_limit_wait = self.waited

    def waited(self, dataset: str, seconds: float) -> None:
        try:
            vendor = self.executor.catalog.dataset(dataset).vendor
        except Exception:  # a dataset removed meanwhile
            vendor = ""
        self.limit_wait.labels(vendor).observe(seconds)

    def vendor_of(self, plan: str) -> tuple[str, str]:
        try:
            dataset = self.executor.catalog.plan(plan).dataset
            return self.executor.catalog.dataset(dataset).vendor, dataset
        except Exception:  # a plan removed meanwhile
            return "", ""

    def observe(self, event: Event) -> None:
        if isinstance(event, TaskEvent):
            if event.kind == "started":
                self._started[event.task_id] = event.at
                return
            if event.kind not in _ENDED:
                return
            vendor, dataset = self.vendor_of(event.plan)
            self.tasks.labels(event.plan, event.kind).inc()
            started = self._started.pop(event.task_id, None)
            if event.kind in ("requeued", "cancelled"):
                return  # stopped by a control op: not an answer from the vendor
            self.requests.labels(vendor, dataset, event.kind).inc()
            if started is not None:
                self.duration.labels(vendor).observe(max(event.at - started, 0.0))
            if event.kind == "retry":
                self.retries.labels(vendor, _reason(event.message)).inc()
            elif event.kind == "done":
                self.last_success[event.plan] = event.at
        elif isinstance(event, FreezeEvent) and event.new:
            self.freezes.labels(self.vendor_of(event.plan)[0], event.scope).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _reason(message: str | None) -> str:
    """A bounded reason: the outcome kind the retry's sentence names, else "other"."""
    kind = outcome_told(message)
    return kind.value if kind is not None else "other"


class _Gauges(Collector):
    """What is true at scrape time, read from the executor."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        executor, now = self.metrics.executor, time.time()
        in_flight = GaugeMetricFamily("synctask_tasks_in_flight", "Tasks running now.", labels=["plan"])
        by_state = GaugeMetricFamily("synctask_plan_tasks", "The current run's tasks by state.",
                                     labels=["plan", "state"])
        success = GaugeMetricFamily("synctask_plan_last_success_timestamp_seconds",
                                    "When a task of the plan last succeeded.", labels=["plan"])
        for plan in executor.catalog.plans.values():
            p = executor.progress.snapshot(plan.name, now)
            in_flight.add_metric([plan.name], p.in_flight)
            for state, value in (("done", p.done), ("failed", p.failed), ("skipped", p.skipped),
                                 ("remaining", p.remaining)):
                if value is not None:
                    by_state.add_metric([plan.name, state], value)
            if plan.name in self.metrics.last_success:
                success.add_metric([plan.name], self.metrics.last_success[plan.name])
        used = GaugeMetricFamily("synctask_limit_used", "What counts against each limit now.",
                                 labels=["vendor", "scope", "window", "node"])
        capacity = GaugeMetricFamily("synctask_limit_capacity", "Each limit's allowance.",
                                     labels=["vendor", "scope", "window", "node"])
        frozen = GaugeMetricFamily("synctask_frozen_until_timestamp_seconds", "Until when a scope admits nothing.",
                                   labels=["scope"])
        limiter = executor.limiter
        for scope in limiter.scopes():
            kind, name, node = scope_parts(scope)  # a node scope is a per-node (per-IP) limit
            vendor = name if kind in ("vendor", "node") else ""
            for w in limiter.windows(scope, now):
                labels = [vendor, scope, str(w.limit), node or ""]
                used.add_metric(labels, w.used)
                capacity.add_metric(labels, w.capacity)
            until = limiter.frozen_until(scope, now)
            if until is not None:
                frozen.add_metric([scope], until)
        workers = GaugeMetricFamily("synctask_workers", "Tasks the executor runs at once.")
        workers.add_metric([], executor.workers)
        yield from (in_flight, by_state, success, used, capacity, frozen, workers)

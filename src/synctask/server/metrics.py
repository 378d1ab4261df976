"""Prometheus metrics of a running executor, at ``/metrics`` of ``synctask serve``.

Counters and the request-duration histogram follow the executor's events; gauges (tasks in
flight and by state, limit usage and capacity, freezes, workers, last success) are read from
the executor when Prometheus scrapes. One label name per concept (``outcome`` for how a thing
ended), short bounded values (``window="1m"``, ``window="1d-clock"``), never a task id or a
parameter value; ``node`` only where it means something (on Ray).

- ``synctask_requests_total{vendor,dataset,outcome}``: every answer, ``outcome`` one of ok,
  network, timeout, server, rate_limited, quota, banned, invalid, fatal (alert on the last four).
- ``synctask_tasks_total{plan,outcome}``: tasks that ended for good: done, failed, cancelled.
- ``synctask_retries_total{vendor,outcome}``: tries that will be tried again, by why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..events import Event, FreezeEvent, TaskEvent
from ..executor import SyncTaskExecutor
from ..model import scope_key, scope_parts
from ..windows import Concurrency

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_FINAL = ("done", "failed", "cancelled")  # a task's ends for good (retry and requeued go again)
_NOT_ANSWERS = ("", "cancelled")  # a try stopped by a control op (or a job's): the vendor said nothing

disable_created_metrics()  # a ``_created`` series per counter doubles the series and helps no alert


class Metrics:
    """One registry per executor (so tests and several daemons in one process do not mix)."""

    def __init__(self, executor: SyncTaskExecutor) -> None:
        self.executor = executor
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("synctask_requests", "Answers from vendors (tasks tried), by outcome.",
                                ["vendor", "dataset", "outcome"], registry=self.registry)
        self.tasks = Counter("synctask_tasks", "Tasks that ended for good, by outcome.", ["plan", "outcome"],
                             registry=self.registry)
        self.retries = Counter("synctask_retries", "Tries that will be tried again, by the outcome that "
                               "caused it.", ["vendor", "outcome"], registry=self.registry)
        self.freezes = Counter("synctask_freezes", "Freezes that began.", ["vendor", "scope"], registry=self.registry)
        self.duration = Histogram("synctask_request_duration_seconds", "HTTP requests, from being sent to their "
                                  "answer handled.", ["vendor"], registry=self.registry,
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
            started = self._started.pop(event.task_id, None)
            if event.kind in _FINAL:
                self.tasks.labels(event.plan, event.kind).inc()
            if event.outcome in _NOT_ANSWERS:
                return
            vendor, dataset = self.vendor_of(event.plan)
            self.requests.labels(vendor, dataset, event.outcome).inc()
            if started is not None and self.executor.catalog.transport(dataset) == "http":
                self.duration.labels(vendor).observe(max(event.at - started, 0.0))
            if event.kind == "retry":
                self.retries.labels(vendor, event.outcome).inc()
            elif event.kind == "done":
                self.last_success[event.plan] = event.at
        elif isinstance(event, FreezeEvent) and event.new:
            self.freezes.labels(self.vendor_of(event.plan)[0], event.scope).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Gauges(Collector):
    """What is true at scrape time, read from the executor."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
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
        on_ray = executor.on_ray
        keyed = {name: vendor for name, vendor in executor.catalog.vendors.items() if vendor.keys}
        by = [*(["node"] if on_ray else []), *(["key"] if keyed else [])]  # (a key: its variable's name)
        labels = ["vendor", "scope", "window", *by]
        used = GaugeMetricFamily("synctask_limit_used", "What counts against each rate limit now.", labels=labels)
        capacity = GaugeMetricFamily("synctask_limit_capacity", "Each rate limit's allowance.", labels=labels)
        cap_labels = ["vendor", "scope", *by]
        running = GaugeMetricFamily("synctask_concurrency_in_flight", "Requests in flight under each "
                                    "concurrency cap.", labels=cap_labels)
        cap = GaugeMetricFamily("synctask_concurrency_capacity", "Each concurrency cap.", labels=cap_labels)
        frozen = GaugeMetricFamily("synctask_frozen_until_timestamp_seconds", "Until when a scope admits nothing.",
                                   labels=["vendor", "scope"])
        limiter = executor.limiter
        for scope in limiter.scopes():
            vendor = self._vendor(scope)
            node = [scope_parts(scope)[2] or ""] if on_ray else []
            if keyed:
                node.append(scope_key(scope) or "")
            for w in limiter.windows(scope, now):
                if isinstance(w.limit, Concurrency):
                    running.add_metric([vendor, scope, *node], w.used)
                    cap.add_metric([vendor, scope, *node], w.capacity)
                else:
                    used.add_metric([vendor, scope, w.limit.label, *node], w.used)
                    capacity.add_metric([vendor, scope, w.limit.label, *node], w.capacity)
            until = limiter.frozen_until(scope, now)
            if until is not None:
                frozen.add_metric([vendor, scope], until)
        learned = GaugeMetricFamily("synctask_limit_learned", "A limit learned from the vendor's answers (how: "
                                    "stated, refused, trying, probing).", labels=["vendor", "scope", "window", "how"])
        learned_at = GaugeMetricFamily("synctask_limit_learned_timestamp_seconds", "When a limit was learned.",
                                       labels=["vendor", "scope", "window"])
        for scope, learner in executor.learners.by_scope.items():
            vendor = self._vendor(scope)
            if learner.probe is not None:
                learned.add_metric([vendor, scope, learner.probe.label, "probing"], learner.probe.rate)
            for item in learner.learned.values():
                learned.add_metric([vendor, scope, item.limit.label, item.how], item.limit.rate)
                learned_at.add_metric([vendor, scope, item.limit.label], item.at)
        permits = GaugeMetricFamily("synctask_permits_in_flight", "Permits other programs hold now "
                                    "(POST /api/permits, not answered yet).", labels=["vendor", "dataset"])
        for (vendor, dataset), count in executor.permits.in_flight().items():
            permits.add_metric([vendor, dataset or ""], count)
        lent = CounterMetricFamily("synctask_permits_taken", "Permits given to other programs since the daemon "
                                   "started.", labels=["vendor", "dataset"])
        for (vendor, dataset), count in executor.permits.taken.items():
            lent.add_metric([vendor, dataset or ""], count)
        usable = GaugeMetricFamily("synctask_key_usable", "1 for each key a vendor's tasks take, 0 for one the "
                                   "vendor refused (set aside); the key is its variable's name.",
                                   labels=["vendor", "key"])
        for name, keyed_vendor in keyed.items():
            refused = executor.scheduler.keys_refused(name)
            for key in keyed_vendor.keys:
                usable.add_metric([name, key.name], 0 if key.name in refused else 1)
        workers = GaugeMetricFamily("synctask_workers", "Tasks the executor runs at once.")
        workers.add_metric([], executor.workers)
        yield from (in_flight, by_state, success, used, capacity, running, cap, frozen, learned, learned_at, permits,
                    lent, usable, workers)

    def _vendor(self, scope: str) -> str:
        """The vendor a scope belongs to (a dataset's scope: its dataset's vendor)."""
        kind, name, _ = scope_parts(scope)
        if kind == "dataset":
            found = self.metrics.executor.catalog.datasets.get(name)
            return found.vendor if found is not None else ""
        return name if kind in ("vendor", "node") else ""

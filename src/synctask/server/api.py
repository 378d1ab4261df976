"""The control API of ``synctask serve``: JSON over HTTP under ``/api/``, on aiohttp.

One running ``SyncTaskExecutor`` is driven from outside: list plans with their progress, look
at one with its recent failures, start/stop/pause/resume/cancel/remove it, set the worker
count, read each vendor's limits with their live usage, and follow the executor's events as a
server-sent-events stream. Mutations that are already true answer 200 (pausing a paused plan);
impossible ones answer 404 or 409 with a sentence. Nothing returned ever holds a secret.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import IllegalTransition, PlanFileError, SyncError, UnknownPlan
from ..events import Event, FreezeEvent, TaskEvent
from ..executor import SyncTaskExecutor
from ..history import iso, run_row
from ..model import MAX_WORKERS, PlanState
from ..permits import PermitRefused
from .guard import Policy, Refusal, guard
from .series import Series
from .stream import BACKLOG, Broadcast, chunk
from .views import live_counts, masked, plan_view, running_row, scopes_view, task_row

if TYPE_CHECKING:
    from .service import Service

__all__ = ["make_app", "RECENT_FAILURES"]

STATIC = Path(__file__).parent / "static"  # the dashboard: three files, no build step, no CDN
RECENT_FAILURES = 50  # failed tasks kept per plan for GET /api/plans/{name}
MAX_BODY = 10 * 1024 * 1024  # the largest plan document taken, as for plan files
_ACTIONS = ("start", "stop", "pause", "resume", "cancel", "retry")
_ENDED = (PlanState.IDLE, PlanState.COMPLETED, PlanState.FAILED, PlanState.CANCELLED)
_ALREADY = {"pause": {PlanState.PAUSED}, "resume": {PlanState.RUNNING}, "start": {PlanState.RUNNING},
            "stop": {PlanState.STOPPED}, "cancel": {PlanState.CANCELLED}}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Recent:
    """From the executor's events: each plan's last failed and retried tasks, and the last
    reason each scope was frozen."""

    def __init__(self) -> None:
        self.by_plan: dict[str, deque[dict[str, Any]]] = {}
        self.freezes: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, TaskEvent):
            if event.kind in ("failed", "retry"):
                recent = self.by_plan.setdefault(event.plan, deque(maxlen=RECENT_FAILURES))
                recent.append({"task_id": event.task_id, "kind": event.kind, "message": event.message,
                               "attempt": event.attempt, "at": iso(event.at)})
        elif isinstance(event, FreezeEvent):
            self.freezes[event.scope] = masked(event.message) or ""


def make_app(executor: SyncTaskExecutor, policy: Policy, *, service: Service | None = None) -> web.Application:
    """The API over ``executor``, answering only the callers ``policy`` admits (see ``guard``).
    ``service`` (the daemon's plan catalog) lets plans be added, removed for good and reloaded."""
    from .metrics import Metrics

    recent = _Recent()
    executor.listen(recent)
    app = web.Application(middlewares=[guard(policy, _refused), _errors, _queries], client_max_size=MAX_BODY)
    app["executor"], app["recent"], app["metrics"] = executor, recent, Metrics(executor)
    app["service"] = service
    app["series"] = series = Series(executor.limiter)
    executor.listen(series)
    app.on_startup.append(lambda _: _start(series))
    app.on_cleanup.append(lambda _: series.stop())
    app["broadcast"] = broadcast = Broadcast(lambda: _progress(executor, recent.freezes), executor.in_flight)
    executor.listen(broadcast)
    app.router.add_get("/", _dashboard)
    app.router.add_static("/static/", STATIC, append_version=False)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/api/plans", _plans)
    app.router.add_post("/api/plans", _add)
    app.router.add_post("/api/reload", _reload)
    app.router.add_get("/api/plans/{name}", _plan)
    app.router.add_get("/api/plans/{name}/runs", _runs)
    app.router.add_post("/api/plans/{name}/{action}", _act)
    app.router.add_post("/api/plans/{name}/tasks/{task_id}/retry", _retry_task)
    app.router.add_delete("/api/plans/{name}", _remove)
    app.router.add_get("/api/vendors", _vendors)
    app.router.add_put("/api/workers", _workers)
    app.router.add_get("/api/tasks", _tasks)
    app.router.add_get("/api/series", _series)
    app.router.add_get("/api/openapi.json", _openapi)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/api/permits", _permits)
    app.router.add_post("/api/permits", _take_permit)
    app.router.add_post("/api/permits/{id}/answered", _permit_answered)
    return app


async def _start(series: Series) -> None:
    series.start()


async def _openapi(request: web.Request) -> web.Response:
    """The API's OpenAPI 3.1 document."""
    from .openapi import document

    return web.json_response(document())


async def _series(request: web.Request) -> web.Response:
    """The last hour in 10-second steps: answers, errors, rate-limited answers, freezes, and how
    full each limit was (the dashboard's graphs)."""
    return web.json_response(request.app["series"].export())


def _refused(refusal: Refusal) -> web.Response:
    return _error(refusal.status, refusal.message)


async def _dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)


# The page runs only its own script and talks only to this daemon; no frame may embed it.
_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
                 "Cache-Control": "no-cache", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Control errors as JSON with a sentence; never a traceback, never a secret."""
    try:
        return await handler(request)
    except UnknownPlan as exc:
        return _error(404, str(exc))
    except PlanFileError as exc:
        return web.json_response({"error": str(exc), "problems": [
            {"where": p.where, "message": p.message} for p in exc.problems]}, status=400)
    except (IllegalTransition, SyncError, ValueError) as exc:
        return _error(409 if isinstance(exc, (IllegalTransition, SyncError)) else 400, str(exc))
    except web.HTTPException as exc:  # aiohttp's own (405, 404, 413): JSON with a sentence too
        if exc.status < 400:
            raise
        return _error(exc.status, _HTTP_SAID.get(exc.status, exc.reason))


# The query parameters each /api address takes, with the values allowed (None: checked by its
# handler). Anything else answers 400 naming it: a typo must not be silently ignored.
_QUERY: dict[str, dict[str, frozenset[str] | None]] = {
    "/api/events": {"tasks": frozenset({"all"})},
    "/api/plans/{name}/runs": {"limit": None},
    "/api/tasks": {"plan": None, "state": frozenset({"failed", "done", "running"}), "q": None, "limit": None,
                   "offset": None},
}


@web.middleware
async def _queries(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse query parameters (and values) an /api address does not take, with a sentence."""
    if request.query and request.path.startswith("/api/"):
        route = request.match_info.route.resource
        allowed = _QUERY.get(route.canonical, {}) if route is not None else {}
        for key, value in request.query.items():
            if key not in allowed:
                takes = ", ".join(allowed) or "no query parameters"
                return _error(400, f"{request.path} does not take {key!r} (it takes {takes})")
            values = allowed[key]
            if values is not None and value not in values:
                return _error(400, f"{key}={value!r} is not a value {request.path} knows; use "
                                   f"{' or '.join(sorted(values))}")
    return await handler(request)


_HTTP_SAID = {404: "nothing here: the API is under /api/ (see the README's API section)",
              405: "this address does not take that method (see the README's API section)",
              413: f"the body is larger than {MAX_BODY // 1024 // 1024} MB: send a smaller plan document"}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": masked(message)}, status=status)


async def _health(request: web.Request) -> web.Response:
    executor: SyncTaskExecutor = request.app["executor"]
    return web.json_response({"ok": True, "plans": len(executor.catalog.plans), "workers": executor.workers})


async def _plans(request: web.Request) -> web.Response:
    executor: SyncTaskExecutor = request.app["executor"]
    return web.json_response({"plans": [plan_view(executor, plan.name) for plan in executor.catalog.plans.values()]})


async def _plan(request: web.Request) -> web.Response:
    executor: SyncTaskExecutor = request.app["executor"]
    name = request.match_info["name"]
    view = plan_view(executor, name)
    view["recent_failures"] = list(request.app["recent"].by_plan.get(name, ()))
    view["failed_tasks"] = [task_row(record) for record in executor.store.failures(name, RECENT_FAILURES)]
    view["in_flight_tasks"] = [running_row(task, time.time()) for task in _running(executor, name)]
    last = executor.store.last_run(name)
    view["last_run"] = None if last is None else {
        "id": last.id, **run_row(last, live := live_counts(executor, name, last.id), orphaned=live is None)}
    service: Service | None = request.app["service"]
    if service is not None:
        view["origin"] = service.catalog.origin(name)
        view["definition"] = service.catalog.definition(name)
    return web.json_response(view)


async def _runs(request: web.Request) -> web.Response:
    """The plan's run history, newest first (``?limit=N``: the newest N)."""
    executor: SyncTaskExecutor = request.app["executor"]
    name = request.match_info["name"]
    executor.catalog.plan(name)  # UnknownPlan → 404
    limit = _whole(request, "limit", None, 1, None)
    rows = []
    for run in executor.store.history(name, limit):
        live = live_counts(executor, name, run.id)
        rows.append(run_row(run, live, orphaned=live is None))
    return web.json_response({"plan": name, "runs": rows})


def _whole(request: web.Request, key: str, default: int | None, least: int, most: int | None) -> int | None:
    """The query parameter ``key`` as a whole number from ``least`` to ``most`` (400 otherwise)."""
    text = request.query.get(key)
    if text is None:
        return default
    if not text.isdigit() or int(text) < least or (most is not None and int(text) > most):
        upto = f" to {most:,}" if most is not None else " or more"
        raise ValueError(f"{key} must be a whole number from {least}{upto} (got {text!r})")
    return int(text)


def _running(executor: SyncTaskExecutor, name: str) -> list[Any]:
    return executor.scheduler.in_flight(name) if executor.scheduler.has_plan(name) else []


async def _tasks(request: web.Request) -> web.Response:
    """Tasks by plan, state and text (in their id, parameters or message), newest first, a page
    at a time: failed and done ones from the state (they survive restarts), running ones live."""
    executor: SyncTaskExecutor = request.app["executor"]
    plan, state, text = request.query.get("plan"), request.query.get("state"), request.query.get("q") or None
    if plan is not None:
        executor.catalog.plan(plan)  # UnknownPlan → 404
    limit = _whole(request, "limit", 50, 1, 500) or 50
    offset = _whole(request, "offset", 0, 0, None) or 0
    rows: list[dict[str, Any]] = []
    if state in (None, "running"):
        now = time.time()
        names = [plan] if plan is not None else list(executor.catalog.plans)
        live = [running_row(task, now) for name in names for task in _running(executor, name)]
        if text:
            low = text.lower()
            live = [row for row in live if low in row["task_id"].lower() or low in json.dumps(row["params"]).lower()]
        rows = live[offset:offset + limit + 1]
        offset = max(offset - len(live), 0)
    if state != "running" and len(rows) <= limit:
        records = executor.store.find_tasks(plan, state, text, limit + 1 - len(rows), offset)
        rows += [task_row(record) for record in records]
    more = len(rows) > limit
    return web.json_response({"tasks": rows[:limit], "more": more, "limit": limit,
                              "offset": _whole(request, "offset", 0, 0, None)})


async def _act(request: web.Request) -> web.Response:
    executor: SyncTaskExecutor = request.app["executor"]
    name, action = request.match_info["name"], request.match_info["action"]
    if action not in _ACTIONS:
        return _error(404, f"no action {action!r}; use one of {', '.join(_ACTIONS)}")
    before = executor.plan_state(name)
    if action == "retry":
        return _retry(executor, name, before)
    if before in _ALREADY[action]:
        return web.json_response({"plan": name, "state": before.value, "changed": False})
    if action != "start" and not executor.scheduler.has_plan(name):  # it exists, with no run going to act on
        why = "no run since the daemon started" if before is PlanState.IDLE else "its last run has ended"
        return _error(409, f"plan {name!r} is {before.value} ({why}): it cannot {action}; start it first")
    try:
        getattr(executor, f"{action}_plan")(name)
    except IllegalTransition:
        return _error(409, f"plan {name!r} is {before.value}: it cannot {action} now")
    return web.json_response({"plan": name, "state": executor.plan_state(name).value, "changed": True})


def _retry(executor: SyncTaskExecutor, name: str, before: PlanState) -> web.Response:
    """Run the plan's failed tasks again: a new run that skips every finished task."""
    if before not in _ENDED:
        return _error(409, f"plan {name!r} is {before.value}: its failed tasks can be retried once its run "
                           "has ended (cancel it first to retry now)")
    failed = executor.store.task_states(name).get("failed", 0)
    if not failed:
        return web.json_response({"plan": name, "state": before.value, "changed": False, "failed_before": 0,
                                  "message": f"plan {name!r} has no failed tasks: nothing to retry"})
    executor.start_plan(name)
    return web.json_response({"plan": name, "state": executor.plan_state(name).value, "changed": True,
                              "failed_before": failed})


async def _retry_task(request: web.Request) -> web.Response:
    """Run one failed task again, alone: a new run of just that task (the plan's run has ended)."""
    executor: SyncTaskExecutor = request.app["executor"]
    name, task_id = request.match_info["name"], request.match_info["task_id"]
    before = executor.plan_state(name)
    if before not in _ENDED:
        return _error(409, f"plan {name!r} is {before.value}: its failed tasks can be retried once its run "
                           "has ended (cancel it first to retry now)")
    if not executor.retry_tasks(name, [task_id]):
        return _error(404, f"plan {name!r} has no failed task {task_id!r} (it may be done since): "
                           f"GET /api/tasks?plan={name}&state=failed lists them")
    return web.json_response({"plan": name, "state": executor.plan_state(name).value, "changed": True,
                              "retried": [task_id]})


async def _remove(request: web.Request) -> web.Response:
    executor: SyncTaskExecutor = request.app["executor"]
    service: Service | None = request.app["service"]
    name = request.match_info["name"]
    if service is not None:
        await service.remove(name)
    else:
        executor.remove_plan(name)
    return web.json_response({"plan": name, "removed": True})


async def _add(request: web.Request) -> web.Response:
    """Add the plans (with any vendors and datasets) of a TOML or JSON document in the body."""
    from .catalog import read_document

    service = _service(request)
    text = await request.text()
    source = "request body"
    doc = read_document(text, source, request.content_type)
    change = await service.add(doc, source)
    executor: SyncTaskExecutor = request.app["executor"]
    return web.json_response({"added": change.added,
                              "plans": [plan_view(executor, name) for name in change.added]}, status=201)


async def _reload(request: web.Request) -> web.Response:
    """Read the plan file again: added, changed and removed plans apply; the others go on."""
    change = await _service(request).reload()
    return web.json_response(change.as_dict())


def _service(request: web.Request) -> Service:
    service: Service | None = request.app["service"]
    if service is None:
        raise SyncError("this daemon was started without a plan file: it cannot add or reload plans")
    return service


async def _vendors(request: web.Request) -> web.Response:
    """Each limited scope (a vendor's, a dataset's, a node's) with each limit's live use, said as
    a person says it, and its freeze or ban with the reason."""
    recent: _Recent = request.app["recent"]
    return web.json_response({"scopes": scopes_view(request.app["executor"], recent.freezes)})


def _progress(executor: SyncTaskExecutor, freezes: dict[str, str]) -> dict[str, Any]:
    """Every plan's and every limit's state now: the stream's ``progress`` event."""
    now = time.time()
    nodes: dict[str, int] = {}
    if executor.on_ray:  # what is in flight on each node
        for name in executor.catalog.plans:
            for task in _running(executor, name):
                nodes[task.node or "any"] = nodes.get(task.node or "any", 0) + 1
    return {"type": "progress", "at": iso(now, precise=True), "workers": executor.workers,
            "in_flight": executor.in_flight(), "nodes": nodes,
            "plans": [plan_view(executor, plan.name, now) for plan in executor.catalog.plans.values()],
            "scopes": scopes_view(executor, freezes),
            "permits": {"out": len(executor.permits.out), "last_minute": executor.permits.per_minute()}}


async def _workers(request: web.Request) -> web.Response:
    executor: SyncTaskExecutor = request.app["executor"]
    try:
        workers = (await request.json())["workers"]
    except (ValueError, KeyError, TypeError):
        workers = None
    if type(workers) is not int or not 1 <= workers <= MAX_WORKERS:
        return _error(400, f'send {{"workers": N}} with N a whole number from 1 to {MAX_WORKERS:,}')
    executor.set_workers(workers)
    return web.json_response({"workers": executor.workers})


async def _take_permit(request: web.Request) -> web.Response:
    """Wait until one request of another program may go to a vendor, count it like one of the
    engine's own, and answer its permit: ``{"vendor", "dataset"?, "weight"?, "wait"?, "hold"?}``."""
    executor: SyncTaskExecutor = request.app["executor"]
    body = await _object(request)
    vendor, dataset = body.get("vendor"), body.get("dataset")
    if not isinstance(vendor, str) or not (dataset is None or isinstance(dataset, str)):
        return _error(400, 'send {"vendor": NAME} and optionally "dataset", "weight", "wait" and "hold" (seconds)')
    weight, wait, hold = body.get("weight"), body.get("wait", 30.0), body.get("hold", 60.0)
    if not all(type(x) in (int, float) for x in (wait, hold)) or not (weight is None or type(weight) is int):
        return _error(400, '"weight" is a whole number; "wait" and "hold" are seconds')
    try:
        permit = await executor.permits.take(vendor, dataset, weight, float(wait), float(hold))
    except PermitRefused as refused:
        headers = {}
        if refused.retry_at is not None:
            headers["Retry-After"] = str(max(1, math.ceil(refused.retry_at - time.time())))
        return web.json_response({"error": str(refused)}, status=refused.status, headers=headers)
    return web.json_response({**permit.view(), "taken": iso(permit.taken), "expires": iso(permit.expires)})


async def _permit_answered(request: web.Request) -> web.Response:
    """The permit's request was answered: ``{"outcome": "done" | "rate_limited" | "error",
    "retry_after"?: seconds, "scope"?: "vendor" | "dataset", "at"?: epoch seconds}``; its room comes
    back one window after its answer began."""
    executor: SyncTaskExecutor = request.app["executor"]
    body = await _object(request)
    outcome, retry_after, scope = body.get("outcome", "done"), body.get("retry_after"), body.get("scope", "vendor")
    at = body.get("at")
    if not isinstance(outcome, str) or scope not in ("vendor", "dataset") or not all(
            x is None or type(x) in (int, float) for x in (retry_after, at)):
        return _error(400, 'send {"outcome": "done" | "rate_limited" | "error"} and optionally "retry_after" '
                           '(seconds), "scope" ("vendor" or "dataset") and "at" (when the answer began, epoch seconds)')
    try:
        permit = executor.permits.answered(request.match_info["id"], outcome, retry_after, scope, at)
    except PermitRefused as refused:
        return _error(refused.status, str(refused))
    return web.json_response({"id": permit.id, "outcome": outcome})


async def _permits(request: web.Request) -> web.Response:
    """Permits out now (per vendor and dataset) and taken in the last minute."""
    desk = request.app["executor"].permits
    out = [{"vendor": vendor, "dataset": dataset, "in_flight": count}
           for (vendor, dataset), count in sorted(desk.in_flight().items(), key=str)]
    return web.json_response({"in_flight": out, "taken_last_minute": desk.per_minute(),
                              "taken": [{"vendor": v, "dataset": d, "count": n} for (v, d), n in desk.taken.items()]})


async def _object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body (an empty body: {})."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ValueError('the body is not JSON: send a JSON object, like {"vendor": "NAME"}') from None
    if not isinstance(body, dict):
        raise ValueError('send a JSON object, like {"vendor": "NAME"}')
    return body


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus' text format (scrape it; the token applies here too when there is one)."""
    from .metrics import CONTENT_TYPE

    return web.Response(body=request.app["metrics"].exposition(), headers={"Content-Type": CONTENT_TYPE})


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events. Each ``data:`` line is a JSON array: the lines of one loop turn (see
    ``stream.Feed``: a freeze's line counts the answers it held back, a plan's retries share a
    line, each item has an ``id`` and the ``line`` it draws), or a ``progress`` snapshot of
    every plan and limit (twice a second while anything changes). A new subscriber first gets
    the last 200 lines; one that sends ``Last-Event-ID`` only those changed since. ``?tasks=all``
    streams every event as it is instead, each task's start and end included."""
    broadcast: Broadcast = request.app["broadcast"]
    every = request.query.get("tasks", "") == "all"
    seen = request.headers.get("Last-Event-ID", "").strip()
    if seen and not seen.isdigit():
        return _error(400, f"Last-Event-ID must be an event id this daemon sent (a whole number), not {seen!r}")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    queue: asyncio.Queue[bytes] = asyncio.Queue(BACKLOG)
    broadcast.join(queue, every)
    try:
        await response.write(b": synctask events\n\n")  # the stream is open: clients may act now
        await response.write(broadcast.snapshot())
        missed = [] if every else broadcast.feed.since(int(seen) if seen else None)
        if missed:
            await response.write(chunk(missed))
        while True:
            await response.write(await queue.get())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        broadcast.leave(queue, every)
    return response

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
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import IllegalTransition, PlanFileError, SyncError, UnknownPlan
from ..events import Event, FreezeEvent, PlanEvent, SkipEvent, StreamEvent, TaskEvent
from ..executor import SyncTaskExecutor
from ..history import iso, run_row
from ..model import MAX_WORKERS, PlanState, scope_parts
from ..redact import SECRETS
from ..store import TaskRecord
from .guard import Policy, Refusal, guard

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
                               "attempt": event.attempt, "at": event.at})
        elif isinstance(event, FreezeEvent):
            self.freezes[event.scope] = SECRETS(event.message) if SECRETS else event.message


def make_app(executor: SyncTaskExecutor, policy: Policy, *, service: Service | None = None) -> web.Application:
    """The API over ``executor``, answering only the callers ``policy`` admits (see ``guard``).
    ``service`` (the daemon's plan catalog) lets plans be added, removed for good and reloaded."""
    from .metrics import Metrics

    recent = _Recent()
    executor.listen(recent)
    app = web.Application(middlewares=[guard(policy, _refused), _errors, _queries], client_max_size=MAX_BODY)
    app["executor"], app["recent"], app["metrics"] = executor, recent, Metrics(executor)
    app["service"] = service
    app["broadcast"] = broadcast = _Broadcast(executor, recent.freezes)
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
    app.router.add_delete("/api/plans/{name}", _remove)
    app.router.add_get("/api/vendors", _vendors)
    app.router.add_put("/api/workers", _workers)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/metrics", _metrics)
    return app


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
    return web.json_response({"error": SECRETS(message) if SECRETS else message}, status=status)


async def _health(request: web.Request) -> web.Response:
    executor: SyncTaskExecutor = request.app["executor"]
    return web.json_response({"ok": True, "plans": len(executor.catalog.plans), "workers": executor.workers})


def _plan_view(executor: SyncTaskExecutor, name: str) -> dict[str, Any]:
    """What a person wants to see of one plan: state, counts, pace, ETA, freeze, next run."""
    now = time.time()
    state = executor.plan_state(name).value
    p = executor.progress.snapshot(name, now)
    view: dict[str, Any] = {
        "name": name, "state": state, "dataset": executor.catalog.plan(name).dataset,
        "total": p.total, "done": p.done, "failed": p.failed, "skipped": p.skipped, "in_flight": p.in_flight,
        "retries": p.retries, "freezes": p.freezes, "rows": p.rows, "rate": round(p.rate, 3),
        "eta_seconds": None if p.eta is None else round(p.eta, 1), "frozen_until": p.frozen_until,
        "last_message": SECRETS(p.last_message) if SECRETS and p.last_message else p.last_message,
        "run_id": p.run_id, "next_due": None,
    }
    due = executor.next_due(name)
    if due is not None:
        view["next_due"] = due.isoformat()
    return view


async def _plans(request: web.Request) -> web.Response:
    executor: SyncTaskExecutor = request.app["executor"]
    return web.json_response({"plans": [_plan_view(executor, plan.name) for plan in executor.catalog.plans.values()]})


async def _plan(request: web.Request) -> web.Response:
    executor: SyncTaskExecutor = request.app["executor"]
    name = request.match_info["name"]
    view = _plan_view(executor, name)
    view["recent_failures"] = list(request.app["recent"].by_plan.get(name, ()))
    view["failed_tasks"] = [_failed_task(record) for record in executor.store.failures(name, RECENT_FAILURES)]
    last = executor.store.last_run(name)
    view["last_run"] = None if last is None else {
        "id": last.id, **run_row(last, live := _live(executor, name, last.id), orphaned=live is None)}
    service: Service | None = request.app["service"]
    if service is not None:
        view["origin"] = service.catalog.origin(name)
        view["definition"] = service.catalog.definition(name)
    return web.json_response(view)


def _failed_task(record: TaskRecord) -> dict[str, Any]:
    """A failed task as the state keeps it: its parameters, why it failed, when, in which run."""
    params = json.loads(record.params) if record.params else None
    message = SECRETS(record.message) if SECRETS and record.message else record.message
    if SECRETS and params is not None:
        params = json.loads(SECRETS(json.dumps(params)))
    return {"task_id": record.task_id, "params": params, "message": message, "attempts": record.attempts,
            "at": iso(record.at), "run_id": record.run_id}


def _live(executor: SyncTaskExecutor, name: str, run_id: str) -> dict[str, Any] | None:
    """The counts of the plan's run if it is the one going on here (fresher than its record)."""
    p = executor.progress.plans.get(name)
    going = p is not None and p.run_id == run_id and executor.scheduler.has_plan(name)
    return executor.progress.counts(name) if going else None


async def _runs(request: web.Request) -> web.Response:
    """The plan's run history, newest first (``?limit=N``: the newest N)."""
    executor: SyncTaskExecutor = request.app["executor"]
    name = request.match_info["name"]
    executor.catalog.plan(name)  # UnknownPlan → 404
    text = request.query.get("limit")
    limit = None
    if text is not None:
        if not text.isdigit() or int(text) < 1:
            return _error(400, f"limit must be a whole number of runs, 1 or more (got {text!r})")
        limit = int(text)
    rows = []
    for run in executor.store.history(name, limit):
        live = _live(executor, name, run.id)
        rows.append(run_row(run, live, orphaned=live is None))
    return web.json_response({"plan": name, "runs": rows})


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
                              "plans": [_plan_view(executor, name) for name in change.added]}, status=201)


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
    return web.json_response({"scopes": _scopes_view(request.app["executor"], recent.freezes)})


def _scopes_view(executor: SyncTaskExecutor, freezes: dict[str, str]) -> list[dict[str, Any]]:
    now = time.time()
    scopes = []
    for scope in executor.limiter.scopes():
        frozen = executor.limiter.frozen_until(scope, now)
        limits = [{"limit": str(w.limit), "used": w.used, "capacity": w.capacity, "resets_at": w.resets_at,
                   "text": w.describe()} for w in executor.limiter.windows(scope, now)]
        if not limits and frozen is None:
            continue
        view: dict[str, Any] = {"scope": scope, "vendor": _vendor_of(executor, scope), "node": scope_parts(scope)[2],
                                "limits": limits, "frozen_until": frozen, "freeze": None}
        if frozen is not None:
            message = freezes.get(scope, "")
            view["freeze"] = {"message": message, "ban": any(code in message for code in _BANS)}
        scopes.append(view)
    return scopes


_BANS = ("(HTTP 418)", "(HTTP 403)")  # what vendors answer when they ban a client, not just slow it


def _vendor_of(executor: SyncTaskExecutor, scope: str) -> str | None:
    """The vendor a scope belongs to (a dataset's scope: its dataset's vendor)."""
    kind, name, _ = scope_parts(scope)
    if kind in ("vendor", "node"):
        return name
    if kind == "dataset":
        try:
            return executor.catalog.dataset(name).vendor
        except UnknownPlan:
            return None
    return None


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


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus' text format (scrape it; the token applies here too when there is one)."""
    from .metrics import CONTENT_TYPE

    return web.Response(body=request.app["metrics"].exposition(), headers={"Content-Type": CONTENT_TYPE})


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events. Each ``data:`` line is a JSON array: the events of one loop turn, in
    order, or a ``progress`` snapshot of every plan and limit (twice a second while anything
    changes). Tasks starting and finishing normally are left out (they are what the snapshot
    counts) unless ``?tasks=all``: failures, retries, freezes and plan changes always come,
    and a new subscriber first gets the last 200 of them."""
    broadcast: _Broadcast = request.app["broadcast"]
    every = request.query.get("tasks", "") == "all"
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    queue: asyncio.Queue[bytes] = asyncio.Queue(_SSE_BACKLOG)
    broadcast.join(queue, every)
    try:
        await response.write(b": synctask events\n\n")  # the stream is open: clients may act now
        await response.write(broadcast.snapshot())
        if broadcast.history and not every:
            await response.write(_chunk(list(broadcast.history)))
        while True:
            await response.write(await queue.get())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        broadcast.leave(queue, every)
    return response


_SSE_BACKLOG = 1_000  # batches a slow subscriber may fall behind before it loses the oldest
_HISTORY = 200  # the last events (failures, freezes, plan changes) a new subscriber is sent
_ROUTINE = frozenset({"started", "done"})  # task events only ?tasks=all subscribers get
PROGRESS_EVERY = 0.5  # seconds between progress snapshots while something changes


class _Broadcast:
    """The executor's events for every SSE subscriber: gathered over a loop turn, encoded once,
    and handed to each subscriber as one chunk (a slow one loses its oldest chunks, never
    slows the engine). Routine task events cost one check when no subscriber wants them."""

    def __init__(self, executor: SyncTaskExecutor, freezes: dict[str, str]) -> None:
        self.executor = executor
        self.freezes = freezes  # the last reason each scope froze (kept by ``_Recent``)
        self.subscribers: list[asyncio.Queue[bytes]] = []
        self._every: list[asyncio.Queue[bytes]] = []  # ?tasks=all
        self._pending: list[Event] = []
        self.history: deque[dict[str, Any]] = deque(maxlen=_HISTORY)  # what a new subscriber sees first
        self._changed = False
        self._ticker: asyncio.Task[None] | None = None

    def join(self, queue: asyncio.Queue[bytes], every: bool) -> None:
        (self._every if every else self.subscribers).append(queue)
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def leave(self, queue: asyncio.Queue[bytes], every: bool) -> None:
        (self._every if every else self.subscribers).remove(queue)
        if not self.subscribers and not self._every and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def __call__(self, event: Event) -> None:
        if type(event) is TaskEvent and event.kind in _ROUTINE:
            self._changed = True
            if not self._every:
                return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(event)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._changed = True
        if self._every:
            _put(self._every, _chunk([_as_dict(e) for e in batch]))
        picked = [_as_dict(e) for e in batch if not (type(e) is TaskEvent and e.kind in _ROUTINE)]
        self.history.extend(picked)
        if self.subscribers and picked:
            _put(self.subscribers, _chunk(picked))

    def snapshot(self) -> bytes:
        """Every plan's and every limit's state now, as one ``progress`` event."""
        progress = {"type": "progress", "at": time.time(), "workers": self.executor.workers,
                    "plans": [_plan_view(self.executor, plan.name) for plan in self.executor.catalog.plans.values()],
                    "scopes": _scopes_view(self.executor, self.freezes)}
        return _chunk([progress])

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            if self._changed or self.executor.in_flight():
                self._changed = False
                _put([*self.subscribers, *self._every], self.snapshot())


def _chunk(batch: list[dict[str, Any]]) -> bytes:
    """One server-sent event: its ``data:`` line is the JSON array of ``batch``."""
    return b"data: " + json.dumps(batch, default=str).encode() + b"\n\n"


def _put(queues: list[asyncio.Queue[bytes]], chunk: bytes) -> None:
    """Hand ``chunk`` to each subscriber; a full one loses its oldest chunk, the engine never waits."""
    for queue in queues:
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(chunk)


def _as_dict(event: Event) -> dict[str, Any]:
    data = {"type": _TYPE[type(event)], **vars(event)}
    if SECRETS and isinstance(data.get("message"), str):
        data["message"] = SECRETS(data["message"])
    return data


_TYPE: dict[type, str] = {cls: cls.__name__.removesuffix("Event").lower()
         for cls in (TaskEvent, PlanEvent, FreezeEvent, SkipEvent, StreamEvent)}

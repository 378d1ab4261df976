"""The simulator's aiohttp server: profiles, limits counted the vendors' way, faults, admin stats."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from aiohttp import web

from .data import DAILY_FIELDS, changing_records, daily_row, kline
from .data import unit as _unit
from .faults import FaultDice, Faults

__all__ = ["Simulator", "SimulatorConfig", "PROFILES"]

PROFILES = ("tushare", "binance", "rest", "ws", "hidden")

TUSHARE_MINUTE_MSG = "抱歉，您每分钟最多访问该接口{n}次，权限的具体详情访问：https://tushare.pro/document/1?doc_id=108。"
TUSHARE_DAILY_MSG = "抱歉，您每天最多访问该接口{n}次，权限的具体详情访问：https://tushare.pro/document/1?doc_id=108。"
TUSHARE_TOKEN_MSG = "您的token不对，请确认。"
TUSHARE_API_MSG = "请指定正确的接口名"

_INTERVALS_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "1d": 86_400_000}


@dataclass
class SimulatorConfig:
    """What the simulated vendor allows. Windows are in vendor time; ``scale`` speeds it up."""

    profile: str = "tushare"
    scale: float = 1.0
    seed: int = 7
    faults: Faults = field(default_factory=Faults)
    tokens: tuple[str, ...] = ("demo-token",)
    tushare_per_minute: int = 200
    tushare_per_day: int = 100_000
    tushare_apis: tuple[str, ...] = ("daily",)
    binance_weight_per_minute: int = 6000
    binance_ban_seconds: float = 120.0  # also the rest profile's ban
    binance_ignore_slack: int = 20  # requests after a 429 (already in flight) before a ban
    bad_codes: tuple[str, ...] = ()  # ts_codes / symbols the vendor rejects as invalid
    rest_per_minute: int = 600
    rest_items_per_day: int = 35
    rest_sliding: bool = False  # count rest_per_minute over a sliding minute instead of the clock's
    rest_rate_headers: bool = True  # send RateLimit / RateLimit-Policy headers
    rest_ban_after: int = 0  # requests sent while told to wait before a 403 ban (0: never banned)
    records_start: float = 1_704_067_200.0  # the vendor's clock when it starts: 2024-01-01T00:00:00Z
    records_initial: int = 40  # /v1/records: records there at the start
    records_every: float = 60.0  # vendor seconds between new records
    records_update_every: float = 300.0  # vendor seconds between updates of every third record
    ws_per_second: float = 200.0  # quote messages per (vendor) second
    ws_drop_every: int = 0  # close the connection abruptly after this many messages (0: never)
    # hidden: GET /v1/hidden?i=N under limits it never states: (rate, per vendor-seconds, clock-aligned);
    # an answer over one is a 429 with Retry-After alone; 20 of those in 10 s get a 60 s ban (403)
    hidden_limits: tuple[tuple[int, float, bool], ...] = ((50, 1.0, False),)
    hidden_stated: bool = False  # the hidden profile states its limits after all (IETF RateLimit headers)
    hidden_per_key: bool = False  # count the hidden limits (and bans) per API key: the bearer token or ?key=


@dataclass
class Stats:
    served: int = 0
    rows: int = 0
    bans: int = 0  # times a client was banned
    subscriptions: list[int] = field(default_factory=list)  # ws: the sequence number each began at
    violations: list[dict[str, Any]] = field(default_factory=list)
    by_api: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_key: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # hidden, per key: requests served
    faults: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    asked_since: list[dict[str, Any]] = field(default_factory=list)  # /v1/records: each first page's question

    def as_dict(self) -> dict[str, Any]:
        return {"served": self.served, "rows": self.rows, "bans": self.bans, "subscriptions": self.subscriptions,
                "violations": self.violations, "asked_since": self.asked_since,
                "by_api": dict(self.by_api), "by_key": dict(self.by_key), "faults": dict(self.faults)}


class Simulator:
    """Run with ``async with Simulator(config) as sim:``; ``sim.url`` is where it listens."""

    def __init__(self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 profiles: Mapping[str, SimulatorConfig] | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.host = host
        self.port = port
        self._started = time.time()  # the vendor clock's start (records change from then on)
        self.stats = Stats()
        self._dice = FaultDice(self.config.faults, self.config.seed)
        self._minute_log: dict[str, deque[float]] = defaultdict(deque)
        self._day_count: dict[tuple[str, int], int] = defaultdict(int)
        self._weight: dict[int, int] = defaultdict(int)
        self._limited_until = 0.0
        self._banned_until = 0.0
        self._key_banned: dict[str, float] = {}  # hidden: a key banned until (the only key, "", unless per key)
        self._revoked: set[str] = set()  # hidden, per key: keys answered 401 (POST /_admin/revoke)
        self._ignored = 0
        self._runner: web.AppRunner | None = None
        # "all": each profile under its own prefix (/tushare, /binance, /rest, /ws) with its own
        # state; ``profiles`` gives each its own config (the demo's vendors), else they share one.
        self.children: dict[str, Simulator] = {}
        if profiles is not None:
            self.config = replace(self.config, profile="all")
            self.children = {name: Simulator(replace(cfg, profile=name)) for name, cfg in profiles.items()}
        elif self.config.profile == "all":
            self.children = {name: Simulator(replace(self.config, profile=name)) for name in PROFILES}

    # --- time -----------------------------------------------------------------------------
    @property
    def minute(self) -> float:
        return 60.0 / self.config.scale

    @property
    def day(self) -> float:
        return 86400.0 / self.config.scale

    # --- lifecycle ------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_admin/stats", self._admin)
        app.router.add_post("/_admin/reset", self._reset)
        app.router.add_post("/_admin/revoke", self._revoke)
        if self.config.profile == "all":
            for name, child in self.children.items():
                if name == "tushare":  # Tushare's API is its root: POST http://api.tushare.pro
                    app.router.add_post("/tushare", child._tushare)
                app.add_subapp(f"/{name}", child.app())
        elif self.config.profile == "tushare":
            app.router.add_post("/{tail:.*}", self._tushare)
        elif self.config.profile == "binance":
            app.router.add_get("/api/v3/{endpoint}", self._binance)
        elif self.config.profile == "rest":
            app.router.add_get("/v1/items", self._rest)
            app.router.add_get("/v1/records", self._records)
        elif self.config.profile == "ws":
            app.router.add_get("/ws", self._ws)
        elif self.config.profile == "hidden":
            app.router.add_get("/v1/hidden", self._hidden)
        else:
            raise ValueError(f"unknown simulator profile {self.config.profile!r}; "
                             "use tushare, binance, rest, ws, hidden or all")
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def advance(self, seconds: float) -> None:
        """Move the vendor's clock ``seconds`` (vendor time) ahead: records made and changed
        meanwhile appear at once (tests and demos of cursor sync)."""
        self._started -= seconds / self.config.scale
        for child in self.children.values():
            child.advance(seconds)

    # --- admin ----------------------------------------------------------------------------
    async def _admin(self, request: web.Request) -> web.Response:
        if self.children:
            return web.json_response({name: child.stats.as_dict() for name, child in self.children.items()})
        return web.json_response(self.stats.as_dict())

    async def _reset(self, request: web.Request) -> web.Response:
        """Forget every count, limit and ban, as if the vendor had just started (for benchmarks)."""
        self.reset()
        return web.json_response({"ok": True})

    async def _revoke(self, request: web.Request) -> web.Response:
        """``?key=K``: from now on the key is answered 401 (a key revoked while a client uses it)."""
        key = request.query.get("key", "")
        self._revoked.add(key)
        for child in self.children.values():
            child._revoked.add(key)
        return web.json_response({"ok": True})

    def reset(self) -> None:
        self.stats = Stats()
        self._minute_log.clear()
        self._day_count.clear()
        self._weight.clear()
        self._limited_until = self._banned_until = 0.0
        self._key_banned.clear()
        self._revoked.clear()
        self._ignored = 0
        for child in self.children.values():
            child.reset()

    @property
    def violations(self) -> list[dict[str, Any]]:
        """Every violation seen, by this profile or (for "all") any of them."""
        if self.children:
            return [v for child in self.children.values() for v in child.stats.violations]
        return self.stats.violations

    def _violation(self, kind: str, api: str, now: float, key: str | None = None) -> None:
        self.stats.violations.append({"kind": kind, "api": api, "at": now, **({"key": key} if key else {})})

    # --- faults ---------------------------------------------------------------------------
    async def _stamp(self) -> float:
        """The instant the vendor counts a request: when it reads it, or (``stamp`` fault) a
        jittered while later, as a loaded vendor whose limiter sits behind a queue does."""
        delay = self._dice.stamp_delay()
        if delay:
            await asyncio.sleep(delay)
        return time.time()

    async def _fault(self, request: web.Request, headers: Mapping[str, str] | None = None,
                     ) -> web.StreamResponse | str | None:
        """Latency, then maybe a fault; an error answer carries ``headers`` (a gateway's rate headers)."""
        delay = self._dice.latency()
        if delay:
            await asyncio.sleep(delay)
        fault = self._dice.pick()
        if fault is None:
            return None
        self.stats.faults[fault] += 1
        if fault == "drop":
            transport = request.transport
            if transport is not None:
                transport.abort()  # the client sees the connection reset
            return web.Response(status=599)
        if fault == "error":
            return web.Response(status=503, text="Service Unavailable", headers=headers)
        return "malformed"

    # --- tushare --------------------------------------------------------------------------
    async def _tushare(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"code": 40001, "msg": "请求体不是有效的JSON", "data": None})
        now = await self._stamp()
        self.stats.served += 1
        api = str(body.get("api_name", ""))
        self.stats.by_api[api] += 1
        # Limits count every request received, as the vendor's do, before anything can fail.
        window = self._minute_log[api]
        while window and window[0] <= now - self.minute:
            window.popleft()
        window.append(now)
        day_key = (api, math.floor(now / self.day))
        self._day_count[day_key] += 1
        fault = await self._fault(request)
        if isinstance(fault, web.StreamResponse):
            return fault
        if body.get("token") not in self.config.tokens:
            return _tushare(40101, TUSHARE_TOKEN_MSG)
        if api not in self.config.tushare_apis:
            return _tushare(-2001, TUSHARE_API_MSG)
        if len(window) > self.config.tushare_per_minute:
            self._violation("per_minute", api, now)
            return _tushare(40203, TUSHARE_MINUTE_MSG.format(n=self.config.tushare_per_minute))
        if self._day_count[day_key] > self.config.tushare_per_day:
            self._violation("per_day", api, now)
            return _tushare(40203, TUSHARE_DAILY_MSG.format(n=self.config.tushare_per_day))
        params = body.get("params") or {}
        codes = [c for c in str(params.get("ts_code", "")).split(",") if c]
        dates = [d for d in str(params.get("trade_date", "")).split(",") if d]
        if not codes or not dates:
            return _tushare(40002, "参数错误：ts_code 和 trade_date 必填")
        bad = [c for c in codes if c in self.config.bad_codes or "." not in c]
        if bad:
            return _tushare(40002, f"参数错误：无效的ts_code {bad[0]}")
        items = [daily_row(self.config.seed, c, d) for c in codes for d in dates]
        if fault == "malformed":
            truncated = '{"code": 0, "msg": "", "data": {"fields": ["ts_code"'
            return web.Response(status=200, text=truncated, content_type="application/json")
        self.stats.rows += len(items)
        return web.json_response({"request_id": f"sim-{self.stats.served}", "code": 0, "msg": "",
                                  "data": {"fields": DAILY_FIELDS, "items": items, "has_more": False}})

    # --- binance --------------------------------------------------------------------------
    async def _binance(self, request: web.Request) -> web.StreamResponse:
        now = await self._stamp()
        self.stats.served += 1
        endpoint = request.match_info["endpoint"]
        self.stats.by_api[endpoint] += 1
        # Binance: failing to back off after a 429 gets the IP banned. Requests that were already
        # on the way when the 429 left get some slack; persisting does not.
        penalty = self._penalty(now, endpoint, self.config.binance_ignore_slack)
        if penalty == "banned":
            return self._banned(now)
        if penalty == "limited":
            return web.json_response({"code": -1003, "msg": "Too many requests; back off."}, status=429,
                                     headers={"Retry-After": self._wait(now)})
        query = request.query
        limit = int(query.get("limit", "500"))
        weight = _kline_weight(limit) if endpoint == "klines" else 1
        minute_index = math.floor(now / self.minute)
        self._weight[minute_index] += weight
        used = self._weight[minute_index]
        headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
        if used > self.config.binance_weight_per_minute:
            self._violation("weight_per_minute", endpoint, now)
            self._limit_until(now, (minute_index + 1) * self.minute)
            headers["Retry-After"] = self._wait(now)
            return web.json_response({"code": -1003, "msg": "Too many requests; current limit is "
                                      f"{self.config.binance_weight_per_minute} request weight per 1 MINUTE."},
                                     status=429, headers=headers)
        fault = await self._fault(request)
        if isinstance(fault, web.StreamResponse):
            return fault
        if endpoint != "klines":
            return web.json_response({"code": -1000, "msg": f"Unknown endpoint {endpoint}."}, status=404)
        symbol = query.get("symbol", "")
        interval = _INTERVALS_MS.get(query.get("interval", ""))
        if not symbol or symbol in self.config.bad_codes:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400, headers=headers)
        if interval is None:
            return web.json_response({"code": -1120, "msg": "Invalid interval."}, status=400, headers=headers)
        start = int(query.get("startTime", "0"))
        start -= start % interval
        end = int(query.get("endTime", str(start + interval * limit - 1)))
        rows: list[list[Any]] = []
        t = start
        while t <= end and len(rows) < limit:
            rows.append(kline(self.config.seed, symbol, t, interval))
            t += interval
        if fault == "malformed":
            return web.Response(status=200, text='[[1700000000000, "1.0", "x"', content_type="application/json",
                                headers=headers)
        self.stats.rows += len(rows)
        return web.json_response(rows, headers=headers)

    # --- rest -----------------------------------------------------------------------------
    async def _records(self, request: web.Request) -> web.StreamResponse:
        """Records that are added and updated as (vendor) time passes, newest changes last:
        ``?updated_since=ISO`` (records changed at or after it), ``region``, ``page_size`` and an
        opaque ``cursor`` to the next page, which never skips a record that changes while paging.
        Counted against the same limit as ``/v1/items``."""
        answered, headers, fault = await self._admit(request, "records")
        if answered is not None:
            return answered
        query, config = request.query, self.config
        since = query.get("updated_since", "")
        try:
            since_at = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
        except ValueError:
            return web.json_response({"error": f"updated_since {since!r} is not an ISO 8601 time"}, status=400)
        if since_at is not None and since_at.tzinfo is None:
            return web.json_response({"error": "updated_since needs a time zone (such as Z)"}, status=400)
        vendor_now = config.records_start + (time.time() - self._started) * config.scale
        rows = changing_records(config.seed, config.records_start, vendor_now, initial=config.records_initial,
                                every=config.records_every, update_every=config.records_update_every)
        if since_at is not None:
            rows = [r for r in rows if datetime.fromisoformat(r["updated_at"].replace("Z", "+00:00")) >= since_at]
        if query.get("region"):
            rows = [r for r in rows if r["region"] == query["region"]]
        rows.sort(key=lambda r: (r["updated_at"], r["id"]))
        after = query.get("cursor")
        if after:
            stamp, _, ident = after.partition("|")
            rows = [r for r in rows if (r["updated_at"], r["id"]) > (stamp, int(ident or -1))]
        else:
            self.stats.asked_since.append({"updated_since": since or None, "region": query.get("region")})
        size = int(query.get("page_size", "50"))
        page, more = rows[:size], len(rows) > size
        self.stats.rows += len(page)
        meta = {"next_cursor": f"{page[-1]['updated_at']}|{page[-1]['id']}" if more else None}
        return web.json_response({"data": {"records": page}, "meta": meta}, headers=headers)

    async def _admit(self, request: web.Request, api: str
                     ) -> tuple[web.StreamResponse | None, dict[str, str], str | None]:
        """A rest-profile request counted: a refusal or a fault's answer, else None with the
        RateLimit headers and the fault to apply to the answer (a malformed body)."""
        now = await self._stamp()
        self.stats.served += 1
        self.stats.by_api[api] += 1
        refused, headers = self._count(now, api)
        if refused is not None:
            return refused, headers, None
        fault = await self._fault(request, headers)
        if isinstance(fault, web.StreamResponse):
            return fault, headers, None
        return None, headers, fault

    def _count(self, now: float, api: str) -> tuple[web.Response | None, dict[str, str]]:
        """The rest profile's limit, as ``/v1/items`` counts it: a refusal (429, 403) or the
        RateLimit headers of an admitted request."""
        config = self.config
        penalty = self._penalty(now, api, config.rest_ban_after or None)
        if penalty == "banned":
            return web.json_response({"error": "banned: too many requests after 429"}, status=403), {}
        if penalty == "limited":
            return web.json_response({"error": "rate limited; honour Retry-After"}, status=429,
                                     headers={"Retry-After": self._wait(now)}), {}
        limit = config.rest_per_minute
        if config.rest_sliding:
            window = self._minute_log["items"]
            while window and window[0] <= now - self.minute:
                window.popleft()
            window.append(now)
            used = len(window)
            reset_at = window[used - limit] + self.minute if used >= limit else now
        else:
            minute_index = math.floor(now / self.minute)
            self._weight[minute_index] += 1
            used = self._weight[minute_index]
            reset_at = (minute_index + 1) * self.minute
        reset = max(1, math.ceil(reset_at - now))
        headers: dict[str, str] = {}
        if config.rest_rate_headers:
            headers = {"RateLimit-Policy": f"{limit};w={max(1, round(self.minute))}",
                       "RateLimit": f"limit={limit}, remaining={max(limit - used, 0)}, reset={reset}"}
        if used > limit:
            self._violation("per_minute", api, now)
            self._limit_until(now, reset_at)
            headers["Retry-After"] = str(reset)
            return web.json_response({"error": "rate limited"}, status=429, headers=headers), headers
        return None, headers

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        """Paginated items (page, offset or cursor; a Link header too) with IETF RateLimit headers.

        The limit counts per clock minute, or per sliding minute with ``rest_sliding``. A client
        that keeps sending while told to wait is banned (403) after ``rest_ban_after`` requests.
        """
        answered, headers, fault = await self._admit(request, "items")
        if answered is not None:
            return answered
        query = request.query
        day = query.get("day")
        if not day:
            return web.json_response({"error": "day is required"}, status=400, headers=headers)
        size = int(query.get("page_size", "10"))
        if "cursor" in query:
            offset = int(query["cursor"].removeprefix("c"))
        elif "offset" in query:
            offset = int(query["offset"])
        else:
            offset = (int(query.get("page", "1")) - 1) * size
        total = self.config.rest_items_per_day
        items = [{"id": f"{day}-{i}", "day": day, "value": round(1000 * _unit(self.config.seed, day, i), 3)}
                 for i in range(offset, min(offset + size, total))]
        more = offset + size < total
        if more:
            page = offset // size + 2
            headers["Link"] = f'<{request.path}?day={day}&page={page}&page_size={size}>; rel="next"'
        if fault == "malformed":
            return web.Response(status=200, text='{"data": {"items": [{"id": ', content_type="application/json",
                                headers=headers)
        self.stats.rows += len(items)
        meta = {"next_cursor": f"c{offset + size}" if more else None}
        return web.json_response({"data": {"items": items}, "meta": meta}, headers=headers)

    # --- hidden ---------------------------------------------------------------------------
    async def _hidden(self, request: web.Request) -> web.Response:
        """One row per request under limits it never states (unless ``hidden_stated``: then in
        RateLimit headers): over one, a 429 with Retry-After (whole seconds) and nothing else; a
        client that keeps pushing (20 refusals in 10 s) is banned for a minute."""
        now = time.time()
        key = _api_key(request) if self.config.hidden_per_key else ""
        if key in self._revoked:
            return web.json_response({"error": "invalid API key: it was revoked"}, status=401)
        if now < self._key_banned.get(key, 0.0):
            self._violation("while_banned", "hidden", now, key)
            return web.json_response({"error": "banned"}, status=403)
        log = self._minute_log[f"hidden:{key}"]  # admitted requests, oldest first
        longest = max(per for _, per, _ in self.config.hidden_limits) / self.config.scale
        while log and log[0] <= now - longest:
            log.popleft()
        room_at, fullest = now, (math.inf, 0, 0.0)  # (room left, its limit's index, its reset)
        for index, (rate, per, clock) in enumerate(self.config.hidden_limits):
            span = per / self.config.scale
            if clock:
                start = math.floor(now / span) * span
                used = sum(1 for t in log if t >= start)
                reset = start + span - now
                if used >= rate:
                    room_at = max(room_at, start + span)
            else:
                inside = [t for t in log if t > now - span]
                used = len(inside)
                reset = inside[0] + span - now if inside else span
                if used >= rate:
                    room_at = max(room_at, inside[-rate] + span)
            fullest = min(fullest, (rate - used, index, reset))
        headers = self._hidden_policy() if self.config.hidden_stated else {}
        if room_at > now:
            self._violation("over_hidden_limit", "hidden", now, key)
            refusals = self._minute_log[f"hidden_refused:{key}"]
            refusals.append(now)
            while refusals and refusals[0] <= now - 10:
                refusals.popleft()
            if len(refusals) >= 20:
                self._key_banned[key] = now + 60
                self.stats.bans += 1
            wait = str(max(1, math.ceil(room_at - now)))
            if headers:
                headers["RateLimit"] = f'"l{fullest[1]}";r=0;t={wait}'
            headers["Retry-After"] = wait
            return web.json_response({"error": "too many requests"}, status=429, headers=headers)
        log.append(now)
        self.stats.served += 1
        self.stats.rows += 1
        self.stats.by_api["hidden"] += 1
        if self.config.hidden_per_key:
            self.stats.by_key[key] += 1
        if headers:  # what this answer used, in the count of the fullest limit
            left, index, reset = fullest
            headers["RateLimit"] = f'"l{index}";r={max(int(left) - 1, 0)};t={math.ceil(reset)}'
        return web.json_response({"data": [{"i": request.query.get("i")}]}, headers=headers)

    def _hidden_policy(self) -> dict[str, str]:
        """The current IETF draft's policy header: every limit, named, its window in real seconds."""
        return {"RateLimit-Policy": ", ".join(f'"l{i}";q={rate};w={per / self.config.scale:g}'
                                              for i, (rate, per, _) in enumerate(self.config.hidden_limits))}

    # --- ws -------------------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        """A quote stream: subscribe with symbols and an optional from_seq; messages carry a
        global sequence number, so a client that reconnects can ask to continue after its last."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            hello = await ws.receive_json(timeout=10)
        except (TimeoutError, TypeError, ValueError):
            await ws.close(code=1003, message=b"expected a subscribe message")
            return ws
        symbols = [str(s) for s in hello.get("symbols", [])] if isinstance(hello, dict) else []
        if not symbols:
            await ws.send_json({"error": "subscribe needs symbols"})
            await ws.close(code=1008)
            return ws
        seq = int(hello.get("from_seq") or 0)
        interval = 1.0 / (self.config.ws_per_second * self.config.scale)
        self.stats.by_api["ws_connections"] += 1
        self.stats.subscriptions.append(seq)
        # Read while sending, as a real server does, so a client's close frame is answered.
        reader = asyncio.create_task(_drain(ws))
        try:
            await self._send_quotes(ws, request, symbols, seq, interval, reader)
        except ConnectionResetError:
            pass  # the client went away
        finally:
            reader.cancel()
        return ws

    async def _send_quotes(self, ws: web.WebSocketResponse, request: web.Request, symbols: list[str], seq: int,
                           interval: float, reader: asyncio.Task[None]) -> None:
        sent = 0
        while not ws.closed and not reader.done():
            symbol = symbols[seq % len(symbols)]
            price = round(100 * (1 + _unit(self.config.seed, symbol, seq) / 50), 4)
            await ws.send_json({"seq": seq, "symbol": symbol, "price": price})
            self.stats.served += 1
            self.stats.rows += 1
            seq += 1
            sent += 1
            if self.config.ws_drop_every and sent >= self.config.ws_drop_every:
                self.stats.faults["drop"] += 1
                if request.transport is not None:
                    request.transport.abort()
                break
            await asyncio.sleep(interval)

    # --- 429s and bans (binance, rest) ------------------------------------------------------
    def _limit_until(self, now: float, until: float) -> None:
        """Answer 429 until ``until``; requests sent meanwhile count toward a ban."""
        if now >= self._limited_until:
            self._limited_until = until
            self._ignored = 0

    def _penalty(self, now: float, api: str, ban_after: int | None) -> str | None:
        """"banned", "limited" (told to wait and still sending: a violation, and a ban after
        ``ban_after`` of them; None never bans), or None when the client is in good standing."""
        if now < self._banned_until:
            self._violation("while_banned", api, now)
            return "banned"
        if now < self._limited_until:
            self._violation("ignored_retry_after", api, now)
            self._ignored += 1
            if ban_after is not None and self._ignored > ban_after:
                self.stats.bans += 1
                self._banned_until = now + self.config.binance_ban_seconds / self.config.scale
                return "banned"
            return "limited"
        return None

    def _wait(self, now: float) -> str:
        """Retry-After for a client that is told to wait: whole seconds, at least one."""
        return str(max(1, math.ceil(self._limited_until - now)))

    def _banned(self, now: float) -> web.Response:
        left = self._banned_until - now
        until_ms = int(self._banned_until * 1000)
        return web.json_response(
            {"code": -1003, "msg": f"Way too many requests; IP(127.0.0.1) banned until {until_ms}. "
                                   "Please use the websocket for live updates to avoid bans."},
            status=418, headers={"Retry-After": str(max(1, math.ceil(left)))})


async def _drain(ws: web.WebSocketResponse) -> None:
    """Receive until the client closes (aiohttp answers the close frame while receiving)."""
    async for _ in ws:
        pass


def _tushare(code: int, msg: str) -> web.Response:
    return web.json_response({"request_id": "sim", "code": code, "msg": msg, "data": None})


def _kline_weight(limit: int) -> int:
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def _api_key(request: web.Request) -> str:
    """The key a request is made with: its bearer token, else its ``key`` or ``token`` parameter."""
    said = request.headers.get("Authorization", "")
    if said.lower().startswith("bearer "):
        return said[7:].strip()
    return request.query.get("key") or request.query.get("token") or ""

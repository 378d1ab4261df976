"""Rate-limit fidelity against the simulator: synctask vs the client a user writes by hand.

A REST vendor (the simulator, in its own process) allows 50 requests per sliding second, answers
with 5..40 ms of latency jitter, counts each request 0..50 ms after reading it (``--stamp``: a
loaded vendor whose limiter sits behind a queue), fails 3% of requests with a 503 and drops 2% of
connections (``--drop``), answers 429 (Retry-After) above its limit, and bans for 60 s (403) a
client that keeps sending more than 20 requests while told to wait. It sends no rate-limit
headers (``--headers``: it does): the limit is what its documentation says. ``--load`` keeps both
cores busy with two spinning processes meanwhile, as a shared machine does.

Three clients fetch the same 3,000 items, one after another, each against a freshly reset vendor:

- synctask: a plan with ``limits = [{ rate = 50, per = "1s" }]`` and retries;
- baseline at the limit: aiohttp + aiolimiter ``AsyncLimiter(50, 1)`` + tenacity retries;
- baseline at half the limit: the same with ``AsyncLimiter(25, 1)``, the usual cure.

For each: wall time ÷ (requests ÷ limit), counting every request the vendor served (retries of
503s use the allowance too) and, beside it, ÷ (items ÷ limit); the requests over the limit the
vendor saw; items fetched; whether it was banned. For synctask also the bound it promises:
1 + (mean round trip ÷ window) + 0.02, with the mean round trip it measured (admission to answer),
and whether the vendor served exactly as many requests as synctask admitted (nothing re-sent).

    python bench/rate_fidelity.py                  # 3,000 items: about 6 minutes
    python bench/rate_fidelity.py --items 600      # quicker
    python bench/rate_fidelity.py --items 1000 --runs 10 --load --no-baseline   # the promise, under load
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from synctask import SyncTaskExecutor, parse_plan_text
from synctask.simulator import Faults, Simulator, SimulatorConfig

LIMIT = 50  # requests per sliding second
BAN_AFTER = 20
BAN_SECONDS = 60.0


def vendor_config(headers: bool = False, stamp: float = 0.050, drop: float = 0.02) -> SimulatorConfig:
    # scale=60: the rest profile's "minute" lasts one real second.
    return SimulatorConfig("rest", scale=60, rest_per_minute=LIMIT, rest_sliding=True, rest_rate_headers=headers,
                           rest_items_per_day=1, rest_ban_after=BAN_AFTER, binance_ban_seconds=BAN_SECONDS * 60,
                           faults=Faults(latency_min=0.005, latency_max=0.040, error_rate=0.03, drop_rate=drop,
                                         stamp_min=0.0, stamp_max=stamp))


def spin() -> None:
    """A process that keeps one core busy until it is terminated."""
    while True:
        pass


def serve(port_queue: multiprocessing.Queue, headers: bool, stamp: float, drop: float) -> None:  # type: ignore[type-arg]
    async def main() -> None:
        async with Simulator(vendor_config(headers, stamp, drop)) as sim:
            port_queue.put(sim.port)
            await asyncio.Event().wait()

    asyncio.run(main())


def admin(url: str, path: str, method: str = "GET") -> dict:
    request = urllib.request.Request(f"{url}/_admin/{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


@dataclass
class Result:
    client: str
    seconds: float
    served: int
    fetched: int
    violations: int
    banned: bool
    round_trip: float | None = None  # synctask: mean seconds from admission to the answer
    admitted: int | None = None  # synctask: requests the limiter admitted

    def line(self, items: int) -> str:
        per_request = self.seconds / (self.served / LIMIT)
        per_item = self.seconds / (items / LIMIT)
        ban = "BANNED" if self.banned else "not banned"
        text = (f"{self.client:<28} {self.seconds:7.1f} s  {per_request:6.3f}  {per_item:6.3f}  {self.served:6,}  "
                f"{self.violations:6,}  {self.fetched:6,}/{items:,}  {ban}")
        if self.round_trip is not None:
            bound = 1 + self.round_trip / 1.0 + 0.02
            verdict = "within" if per_request <= bound else "ABOVE"
            resent = "" if self.admitted == self.served else f"  admitted {self.admitted:,} != served"
            text += f"  rtt {self.round_trip * 1000:4.0f} ms, bound {bound:.3f}: {verdict}{resent}"
        return text


async def run_synctask(url: str, items: int, margin: str) -> tuple[float, int, float, int]:
    plan = f"""
[vendors.api]
connector = "rest"
base_url = "{url}"
limits = [{{ rate = {LIMIT}, per = "1s" }}]
margin = "{margin}"

[datasets.items]
vendor = "api"
options = {{ path = "/v1/items", query = {{ day = "{{i}}", page_size = "1" }}, records = "data.items" }}

[[plans]]
name = "items"
dataset = "items"
params = {{ i = {{ from = 1, to = {items} }} }}
retry = {{ attempts = 8, backoff = "0.1s..5s" }}
timeout = "10s"
"""
    with tempfile.TemporaryDirectory() as folder:
        executor = SyncTaskExecutor(workers=16 if RAY is None else 8, base_dir=Path(folder), ray=RAY)
        executor.load(parse_plan_text(plan, "bench.toml", {}))
        trips: list[float] = []
        admitted = getattr(executor.scheduler, "answered", None)  # None: a synctask from before it

        def answered(task, at):  # admission to the answer's first byte, the span a request holds
            if task.answered is None:
                trips.append(at - task.admitted)
            admitted(task, at)

        if admitted is not None:
            executor.scheduler.answered = answered  # type: ignore[method-assign]
        started = time.monotonic()
        summary = await executor.run()
        took = time.monotonic() - started
        sent = executor.scheduler.stats("items").dispatched
        executor.close()
    return took, summary.plans["items"]["done"], sum(trips) / max(len(trips), 1), sent


async def run_baseline(url: str, items: int, rate: float) -> tuple[float, int]:
    """What people write: a shared AsyncLimiter, tenacity around each request, gather them all."""
    limiter = AsyncLimiter(rate, 1)

    async def fetch(session: aiohttp.ClientSession, i: int) -> object:
        async for attempt in AsyncRetrying(stop=stop_after_attempt(8), wait=wait_exponential(multiplier=0.1, max=5),
                                           retry=retry_if_exception_type(aiohttp.ClientError), reraise=True):
            with attempt:
                async with limiter:
                    async with session.get(f"{url}/v1/items", params={"day": str(i), "page_size": "1"}) as answer:
                        answer.raise_for_status()
                        return await answer.json()
        return None

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(fetch(session, i) for i in range(1, items + 1)), return_exceptions=True)
    took = time.monotonic() - started
    return took, sum(1 for r in results if not isinstance(r, BaseException))


def measure(url: str, client: str, items: int, run: object) -> Result:
    admin(url, "reset", "POST")
    time.sleep(1.1)  # a full window after the last client
    if UVLOOP and client.startswith("synctask"):  # as `synctask run` runs it
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            outcome = runner.run(run)  # type: ignore[arg-type]
    else:
        outcome = asyncio.run(run)  # type: ignore[arg-type]
    stats = admin(url, "stats")
    result = Result(client, outcome[0], stats["served"], outcome[1], len(stats["violations"]), stats["bans"] > 0)
    if len(outcome) > 2:
        result.round_trip, result.admitted = outcome[2], outcome[3]
    return result


RAY: str | None = None  # the cluster's address with --ray
UVLOOP = False  # --uvloop: synctask on uvloop, as `synctask run` runs it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--margins", default="0ms,10ms", help="synctask vendor margins to try, comma separated")
    parser.add_argument("--no-baseline", action="store_true", help="synctask only")
    parser.add_argument("--headers", action="store_true",
                        help="the vendor sends RateLimit / RateLimit-Policy headers (whole-second resets)")
    parser.add_argument("--stamp", type=float, default=50.0, help="the vendor's stamp delay, 0..N ms")
    parser.add_argument("--drop", type=float, default=0.02, help="share of connections the vendor drops")
    parser.add_argument("--runs", type=int, default=1, help="repeat each synctask margin this many times")
    parser.add_argument("--load", action="store_true", help="keep both cores busy meanwhile")
    parser.add_argument("--ray", action="store_true", help="synctask's tasks run on a local two-node Ray cluster")
    parser.add_argument("--uvloop", action="store_true", help="synctask on uvloop, as `synctask run` runs it")
    args = parser.parse_args()

    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(2 if args.load else 0)]
    for spinner in spinners:
        spinner.start()
    ports: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    server = multiprocessing.Process(target=serve, args=(ports, args.headers, args.stamp / 1000, args.drop),
                                     daemon=True)
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=30)}"
    global RAY, UVLOOP
    UVLOOP = args.uvloop
    cluster = contextlib.ExitStack()
    if args.ray:  # after forking the vendor: it must not inherit Ray
        from ray_cluster import two_nodes

        RAY = cluster.enter_context(two_nodes())
    # A warm-up nobody is measured on: a cold server process answers its first bursts tens of
    # milliseconds late, which would count against whichever client went first.
    measure(url, "warm-up", 200, run_synctask(url, 200, "10ms"))
    try:
        results = [measure(url, f"synctask (margin {m})", args.items, run_synctask(url, args.items, m))
                   for m in args.margins.split(",") for _ in range(args.runs)]
        if not args.no_baseline:
            results.append(measure(url, f"aiolimiter+tenacity @{LIMIT}/s", args.items,
                                   run_baseline(url, args.items, LIMIT)))
            results.append(measure(url, f"aiolimiter+tenacity @{LIMIT // 2}/s", args.items,
                                   run_baseline(url, args.items, LIMIT / 2)))
    finally:
        cluster.close()
        server.terminate()
        for spinner in spinners:
            spinner.terminate()
    print(f"\n{args.items:,} items; vendor: {LIMIT} per sliding second, 5-40 ms latency, stamps 0-{args.stamp:g} ms "
          f"late, 3% 503, {args.drop:.0%} dropped, ban after {BAN_AFTER} requests ignoring a 429"
          + (", RateLimit headers" if args.headers else "") + ("; both cores busy" if args.load else "")
          + ("; synctask on 2 Ray nodes (8 slots each)" if args.ray else ""))
    print(f"{'client':<28} {'time':>9}  {'÷ideal':>6}  {'÷items':>6}  {'served':>6}  {'over':>6}  "
          f"{'fetched':>12}  ban")
    print("  (÷ideal: time ÷ (requests served ÷ limit); ÷items: time ÷ (items ÷ limit))")
    for result in results:
        print(result.line(args.items))


if __name__ == "__main__":
    main()

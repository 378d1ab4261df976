"""Limits nobody wrote down: synctask (``limits = "learn"``) against botocore's adaptive
``ClientRateLimiter`` (a CUBIC token bucket, 16 threads), on the simulator's hidden profile in
its own process (a 429 with Retry-After alone; 20 refusals in 10 s ban the client for a minute).

For each vendor: violations (answers over its limit, and any while banned), seconds until the
pace first reaches 90% of the true limit (over the vendor's window), and the whole run ÷ the
ideal (requests ÷ the limit's rate); synctask twice, the second run starting from what the first
learned (kept in the state). Rounds alternate the clients. Vendors: ``sliding`` (50 per sliding
second), ``ten`` (100 per 10 s), ``minute`` (600 per clock minute), ``headers`` (50 per second,
stated in the current IETF draft's RateLimit headers), ``daily`` (50 per second and 2,000 a day:
the run cannot finish; it stops after 60 s and counts what went over the day's cap).

    python bench/learned_limits.py [--requests 3000] [--rounds 1] [--busy] [--vendors sliding,ten]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

VENDORS = {  # name: (--hidden limits, stated in headers, the true limit in requests per second, its window, deadline)
    "sliding": ("50 per 1s", False, 50.0, 1.0, None),
    "ten": ("100 per 10s", False, 10.0, 10.0, None),
    "minute": ("600 per 1m clock", False, 10.0, 60.0, None),
    "headers": ("50 per 1s", True, 50.0, 1.0, None),
    "daily": ("50 per 1s; 2000 per 1d", False, 50.0, 1.0, 60.0),
}

PLANS = """
[vendors.quiet]
connector = "rest"
base_url = "{url}"
limits = "learn"

[datasets.rows]
vendor = "quiet"
sink = {{ kind = "sqlite", path = "rows.db", key = ["i"] }}
options = {{ path = "/v1/hidden", query = {{ i = "{{i}}" }}, records = "data" }}

[[plans]]
name = "rows"
dataset = "rows"
params = {{ i = {{ from = {first}, to = {last} }} }}
"""


class Vendor:
    """The simulator in its own process, and a watcher of its pace."""

    def __init__(self, hidden: str, stated: bool) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "synctask.cli", "simulate", "--profile", "hidden",
                                      "--port", "0", "--hidden", hidden, *(["--state-limits"] if stated else [])],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = line.split(" on ")[1].split()[0]

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/_admin/stats", timeout=10) as answer:
            return json.loads(answer.read())

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url + "/_admin/reset", method="POST"), timeout=10).read()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def watch(vendor: Vendor, rate: float, window: float, stop: threading.Event, out: dict) -> None:
    """When the vendor's served count over ``window`` first reached 90% of the limit."""
    started, seen = time.monotonic(), []
    while not stop.is_set():
        now = time.monotonic()
        seen.append((now, vendor.stats()["served"]))
        while seen and seen[0][0] < now - window:
            seen.pop(0)
        if "reached" not in out and len(seen) > 1 and now - started >= window * 0.5:
            pace = (seen[-1][1] - seen[0][1]) / max(seen[-1][0] - seen[0][0], 1e-9)
            if pace >= 0.9 * rate:
                out["reached"] = now - started
        time.sleep(min(0.1, window / 20))


def measured(vendor: Vendor, rate: float, window: float, requests: int, client) -> dict:
    vendor.reset()
    stop, out = threading.Event(), {}
    watcher = threading.Thread(target=watch, args=(vendor, rate, window, stop, out), daemon=True)
    started = time.monotonic()
    watcher.start()
    client()
    took = time.monotonic() - started
    stop.set()
    watcher.join()
    stats = vendor.stats()
    return {"violations": len(stats["violations"]), "bans": stats["bans"], "reached": out.get("reached"),
            "ratio": took / (requests / rate), "served": stats["served"]}


def synctask_client(url: str, folder: Path, first: int, requests: int, deadline: float | None = None):
    def run() -> None:
        from synctask import SyncTaskExecutor, parse_plan_text

        async def go() -> None:
            ex = SyncTaskExecutor(workers=16, state=folder / "state.db", base_dir=folder)
            ex.load(parse_plan_text(PLANS.format(url=url, first=first, last=first + requests - 1), "plans.toml", {}))
            if deadline is not None:
                asyncio.get_running_loop().call_later(deadline, ex.shutdown)
            await ex.run()
            ex.close()

        asyncio.run(go())
    return run


def botocore_client(url: str, requests: int, deadline: float | None = None, threads: int = 16):
    """botocore's ClientRateLimiter as its adaptive retry mode wires it (CUBIC, token bucket,
    rate clocker), 16 threads; a throttled request is tried again after its backoff."""
    from botocore.retries import adaptive, bucket, throttling

    def run() -> None:
        clock = bucket.Clock()
        limiter = adaptive.ClientRateLimiter(
            rate_adjustor=throttling.CubicCalculator(starting_max_rate=0, start_time=clock.current_time()),
            rate_clocker=adaptive.RateClocker(clock), token_bucket=bucket.TokenBucket(max_rate=1, clock=clock),
            throttling_detector=_Throttled(), clock=clock)
        todo: queue.Queue[tuple[int, int]] = queue.Queue()
        for i in range(requests):
            todo.put((i, 0))
        done = [0]
        lock = threading.Lock()
        ends = time.monotonic() + deadline if deadline is not None else float("inf")

        def worker() -> None:
            while time.monotonic() < ends:
                with lock:
                    if done[0] >= requests:
                        return
                try:
                    i, attempt = todo.get(timeout=0.2)
                except queue.Empty:
                    continue
                limiter.on_sending_request(None)
                try:
                    with urllib.request.urlopen(f"{url}/v1/hidden?i={i}", timeout=30) as answer:
                        answer.read()
                    status = 200
                except urllib.error.HTTPError as exc:
                    status = exc.code
                limiter.on_receiving_response(status=status)
                if status == 200:
                    with lock:
                        done[0] += 1
                else:  # standard mode's backoff: random up to 2^attempt * base, capped at 20 s
                    time.sleep(min(random.random() * 0.05 * 2 ** attempt, 20.0))
                    todo.put((i, attempt + 1))

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    return run


class _Throttled:
    def is_throttling_error(self, status: int = 200, **kwargs: object) -> bool:
        return status in (429, 403)


def busy() -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--busy", action="store_true", help="keep every core busy meanwhile")
    parser.add_argument("--vendors", default="sliding,ten")
    parser.add_argument("--clients", default="synctask,botocore")
    args = parser.parse_args()
    loaders = busy() if args.busy else []
    try:
        for name in args.vendors.split(","):
            hidden, stated, rate, window, deadline = VENDORS[name]
            vendor = Vendor(hidden, stated)
            try:
                for round_ in range(args.rounds):
                    for client in args.clients.split(","):
                        if client == "synctask":
                            with tempfile.TemporaryDirectory() as folder:
                                first = measured(vendor, rate, window, args.requests,
                                                 synctask_client(vendor.url, Path(folder), 1, args.requests,
                                                                 deadline))
                                again = measured(vendor, rate, window, args.requests,
                                                 synctask_client(vendor.url, Path(folder), args.requests + 1,
                                                                 args.requests, deadline))
                            print(f"{name} ({hidden}) round {round_ + 1} synctask: {_said(first)}; "
                                  f"second run: {_said(again)}", flush=True)
                        else:
                            result = measured(vendor, rate, window, args.requests,
                                              botocore_client(vendor.url, args.requests, deadline))
                            print(f"{name} ({hidden}) round {round_ + 1} botocore: {_said(result)}", flush=True)
            finally:
                vendor.close()
    finally:
        for proc in loaders:
            proc.kill()


def _said(r: dict) -> str:
    reached = "never" if r["reached"] is None else f"{r['reached']:.1f} s"
    return (f"{r['violations']} violations ({r['bans']} bans), 90% of the limit after {reached}, "
            f"{r['ratio']:.2f}x ideal, {r['served']} served")


if __name__ == "__main__":
    main()

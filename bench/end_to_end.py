"""End to end: a plan of N REST requests through ``synctask run``, against the simulator.

The simulator runs in its own process with a limit far above what one machine sends (its
``rest`` profile, one item per request, no faults); ``synctask run`` runs as a whole process
(start-up, plan file, the SQLite state, a SQLite sink with a key) and is timed from outside.
Printed: requests per second (wall and per CPU-second of the synctask process), its peak RSS,
rows written, and the vendor's count of requests over its limit (0).

    python bench/end_to_end.py                  # 1,000,000 requests (several minutes)
    python bench/end_to_end.py --tasks 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from synctask.simulator import Simulator, SimulatorConfig

PLAN = """
[vendors.api]
connector = "rest"
base_url = "{url}"
limits = [{{ rate = {rate}, per = "1s" }}]

[datasets.items]
vendor = "api"
sink = {{ kind = "sqlite", path = "items.db", table = "items", key = ["id"] }}
options = {{ path = "/v1/items", query = {{ day = "{{i}}", page_size = "1" }}, records = "data.items" }}

[[plans]]
name = "items"
dataset = "items"
params = {{ i = {{ from = 1, to = {tasks} }} }}
retry = {{ attempts = 5, backoff = "0.1s..2s" }}
"""


def serve(port_queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    config = SimulatorConfig("rest", rest_per_minute=1_000_000_000, rest_items_per_day=1, rest_rate_headers=False)

    async def main() -> None:
        async with Simulator(config) as sim:
            port_queue.put(sim.port)
            await asyncio.Event().wait()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=100_000, help="the plan's limit, per second")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--no-sink", action="store_true", help="rows are dropped (the sink's share of the cost)")
    args = parser.parse_args()
    ports: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    server = multiprocessing.Process(target=serve, args=(ports,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=30)}"
    try:
        with tempfile.TemporaryDirectory() as folder:
            plan = Path(folder) / "plans.toml"
            text = PLAN.format(url=url, rate=args.rate, tasks=args.tasks)
            if args.no_sink:
                text = "\n".join(line for line in text.splitlines() if not line.startswith("sink ="))
            plan.write_text(text)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "synctask.cli", "run", str(plan), "--plain",
                                   "--workers", str(args.workers)], capture_output=True, text=True)
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                raise SystemExit(f"synctask run failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                                 f"{done.stderr[-2000:]}")
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            rows = 0
            if not args.no_sink:
                with sqlite3.connect(Path(folder) / "items.db") as db:
                    rows = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        with urllib.request.urlopen(f"{url}/_admin/stats", timeout=10) as answer:
            stats = json.loads(answer.read())
    finally:
        server.terminate()
    print(f"synctask run: {args.tasks:,} requests to the simulator, {args.workers} workers, limit {args.rate:,}/s")
    print(f"  {wall:.1f} s wall, {cpu:.1f} CPU-s: {args.tasks / wall:,.0f} requests/s "
          f"({args.tasks / cpu:,.0f} per CPU-second of synctask)")
    print(f"  peak RSS {after.ru_maxrss / 1024:.0f} MiB; {rows:,} rows in the sink; vendor served "
          f"{stats['served']:,}, over its limit {len(stats['violations'])}")


if __name__ == "__main__":
    main()

"""End to end: synctask beside a careful hand-written aiohttp client, on the same requests.

The simulator runs in its own process with its limit out of the way (its ``rest`` profile: cursor
pages of ``--page`` rows, no RateLimit headers, no faults). Each round runs, as whole processes
one after the other (their order alternating from round to round):

* ``synctask run`` of a plan that pages through ``--requests / 100`` days of 100 pages each
  (every page a task, a follow-up of the one before), into a SQLite or JSONL sink, with its
  SQLite state, at ``--workers`` at once;
* the hand-written client a user would write instead: one aiohttp session, a semaphore of the
  same width over the same pages, rows upserted into SQLite with ``executemany`` in batches of
  1,000 (or appended to a JSONL file), no limits, no retries, no state.

Printed per workers and sink: requests per CPU-second of each client process alone (min..max over
the rounds), the ratio of synctask's to the hand-written client's within each round and their
median (goal: >= 0.8; a shared machine's pace drifts by a third over minutes, so each round's
two runs are compared with each other, not with other rounds'), wall time, peak RSS, and the
vendor's count of requests over its limit. A markdown table at the end is what the README shows.

    python bench/end_to_end.py                                  # 50,000 requests, 16/64/256, both sinks, 3 rounds
    python bench/end_to_end.py --requests 20000 --workers 16 --sinks jsonl --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from synctask.simulator import Simulator, SimulatorConfig

PAGES_PER_DAY = 100

PLAN = """
[vendors.api]
connector = "rest"
base_url = "{url}"
limits = [{{ rate = 1000000, per = "1s" }}]

[datasets.items]
vendor = "api"
sink = {sink}
[datasets.items.options]
path = "/v1/items"
query = {{ day = "{{d}}", page_size = "{page}" }}
records = "data.items"
pagination = {{ kind = "cursor", param = "cursor", path = "meta.next_cursor" }}

[[plans]]
name = "items"
dataset = "items"
params = {{ d = {{ from = 1, to = {days} }} }}
"""

SINKS = {"sqlite": '{ kind = "sqlite", path = "items.db", table = "items", key = ["id"] }',
         "jsonl": '{ kind = "jsonl", path = "items.jsonl", key = ["id"] }'}


def serve(port_queue: Any, page: int) -> None:
    config = SimulatorConfig("rest", rest_per_minute=1_000_000_000, rest_items_per_day=page * PAGES_PER_DAY,
                             rest_rate_headers=False)

    async def main() -> None:
        async with Simulator(config) as sim:
            port_queue.put(sim.port)
            await asyncio.Event().wait()

    asyncio.run(main())


# --- the hand-written client (run as its own process: ``--hand``) -----------------------------
async def hand_written(url: str, workers: int, sink: str, folder: Path, days: int, page: int) -> int:
    import sqlite3

    import aiohttp

    pending: list[tuple[Any, ...]] = []
    written = 0
    db = out = None
    if sink == "sqlite":
        db = sqlite3.connect(folder / "hand.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS items(id TEXT PRIMARY KEY, day TEXT, value REAL)")
    else:
        out = (folder / "hand.jsonl").open("a", encoding="utf-8")

    def flush() -> None:
        nonlocal written
        if db is not None and pending:
            db.executemany("INSERT OR REPLACE INTO items(id, day, value) VALUES (?, ?, ?)", pending)
            db.commit()
            written += len(pending)
            pending.clear()

    room = asyncio.Semaphore(workers)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers)) as session:
        async def one_day(day: int) -> None:
            nonlocal written
            cursor = None
            while True:
                query = {"day": str(day), "page_size": str(page)}
                if cursor:
                    query["cursor"] = cursor
                async with room, session.get(f"{url}/v1/items", params=query) as answer:
                    answer.raise_for_status()
                    data = await answer.json()
                rows = data["data"]["items"]
                if out is not None:
                    out.write("".join(json.dumps(row) + "\n" for row in rows))
                    out.flush()
                    written += len(rows)
                else:
                    pending.extend((row["id"], row["day"], row["value"]) for row in rows)
                    if len(pending) >= 1000:
                        flush()
                cursor = data["meta"]["next_cursor"]
                if not cursor:
                    return

        await asyncio.gather(*(one_day(day) for day in range(1, days + 1)))
    flush()
    if out is not None:
        out.close()
    return written


# --- the rounds ---------------------------------------------------------------------------------
def timed(argv: list[str], cwd: Path) -> tuple[float, float, float, str]:
    """Run a process; its wall time, CPU seconds and peak RSS (MiB) alone, and its output."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    said = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed ({proc.returncode}):\n{said[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, said


def rows_in(folder: Path, sink: str, hand: bool) -> int:
    import sqlite3

    if sink == "sqlite":
        with sqlite3.connect(folder / ("hand.db" if hand else "items.db")) as db:
            return int(db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
    with (folder / ("hand.jsonl" if hand else "items.jsonl")).open() as lines:
        return sum(1 for _ in lines)


def one_round(url: str, workers: int, sink: str, days: int, page: int, hand_first: bool) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for who in (("hand", "synctask") if hand_first else ("synctask", "hand")):
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            if who == "synctask":
                (folder / "plans.toml").write_text(PLAN.format(url=url, sink=SINKS[sink], page=page, days=days))
                argv = [sys.executable, "-m", "synctask.cli", "run", "plans.toml", "--plain", "--workers", str(workers)]
            else:
                argv = [sys.executable, __file__, "--hand", url, str(workers), sink, str(days), str(page)]
            wall, cpu, rss, _ = timed(argv, folder)
            found[who] = {"wall": wall, "cpu": cpu, "rss": rss, "rows": rows_in(folder, sink, who == "hand")}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--page", type=int, default=10, help="rows per page")
    parser.add_argument("--workers", default="16,64,256")
    parser.add_argument("--sinks", default="sqlite,jsonl")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    days = max(1, args.requests // PAGES_PER_DAY)
    requests = days * PAGES_PER_DAY
    ports: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(ports, args.page), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=30)}"
    table = []
    try:
        for workers in map(int, args.workers.split(",")):
            for sink in args.sinks.split(","):
                rounds = [one_round(url, workers, sink, days, args.page, hand_first=k % 2 == 1)
                          for k in range(args.rounds)]
                ours = [requests / r["synctask"]["cpu"] for r in rounds]
                theirs = [requests / r["hand"]["cpu"] for r in rounds]
                # Each round's two runs are minutes apart at most; the machine's pace drifts more
                # between rounds, so the ratio is taken within each round, and its median shown.
                ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
                ratio = statistics.median(ratios)
                rows = {r[who]["rows"] for r in rounds for who in ("synctask", "hand")}
                wall = {who: statistics.median(r[who]["wall"] for r in rounds) for who in ("synctask", "hand")}
                peak = {who: max(r[who]["rss"] for r in rounds) for who in ("synctask", "hand")}
                print(f"{workers} workers, {sink}: synctask {min(ours):,.0f}..{max(ours):,.0f} requests per CPU-s "
                      f"({wall['synctask']:.1f} s wall, peak {peak['synctask']:.0f} MiB); hand-written "
                      f"{min(theirs):,.0f}..{max(theirs):,.0f} ({wall['hand']:.1f} s, {peak['hand']:.0f} MiB); "
                      f"ratio {ratio:.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)}); rows {sorted(rows)}",
                      flush=True)
                table.append((workers, sink, ours, theirs, ratios))
        with urllib.request.urlopen(f"{url}/_admin/stats", timeout=10) as answer:
            stats = json.loads(answer.read())
    finally:
        server.terminate()
    print(f"\n{requests:,} requests ({days} days x {PAGES_PER_DAY} cursor pages of {args.page} rows), "
          f"{args.rounds} rounds; vendor: {len(stats['violations'])} over its limit\n")
    print("| workers | sink | synctask requests per CPU-second | hand-written | ratio (median, rounds) |")
    print("| --- | --- | --- | --- | --- |")
    for workers, sink, ours, theirs, ratios in table:
        print(f"| {workers} | {sink} | {min(ours):,.0f}-{max(ours):,.0f} | {min(theirs):,.0f}-{max(theirs):,.0f} "
              f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--hand":
        _, _, url, workers, sink, days, page = sys.argv
        written = asyncio.run(hand_written(url, int(workers), sink, Path.cwd(), int(days), int(page)))
        print(f"{written} rows")
    else:
        main()

"""The JSONL sink's memory against the rows it has written (issue 27: at most 50 MB above its
start for 10,000,000 rows), and its pace: rows written per second, and the closing compaction.

Writes ``--rows`` rows (``--batch`` per write, as tasks hand them over) into a fresh file, then
``--again`` of them once more (keys written twice: the close compacts). Prints the process's
resident memory at the start, its peak and at the end, rows per second, and the close's time.

    python bench/jsonl_memory.py [--rows 10000000] [--batch 1000] [--again 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path

from synctask.sinks.jsonl import JsonlSink


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(rows: int, batch: int, again: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.jsonl"
        sink = JsonlSink(path, ["id"])
        await sink.write([{"id": -1}])  # opens the file and its index
        start = rss_mib()
        began = time.perf_counter()
        for first in range(0, rows, batch):
            await sink.write([{"id": i, "day": "2024-01-02", "value": i * 0.5, "note": "some text of a row"}
                              for i in range(first, min(first + batch, rows))])
        await sink.write([{"id": i, "day": "2024-01-03", "value": 0.0} for i in range(again)])
        wrote = time.perf_counter() - began
        before_close = rss_mib()
        closing = time.perf_counter()
        await sink.close()
        closed = time.perf_counter() - closing
        size = path.stat().st_size
        lines = sum(1 for _ in path.open())
    print(f"rows {rows:,} (+{again:,} again) in batches of {batch:,}: {rows / wrote:,.0f} rows/s, "
          f"close (compaction) {closed:.1f} s; file {size / 2**20:,.0f} MiB, {lines:,} lines")
    print(f"memory: start {start:.1f} MiB, before close {before_close:.1f} MiB, peak {peak_mib():.1f} MiB "
          f"(peak - start: {peak_mib() - start:.1f} MiB; goal <= 50)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--again", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.batch, args.again))

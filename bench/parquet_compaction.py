"""Parquet compaction at a run's end: peak memory and time for a large partition.

A partition holds one big file of N rows (an earlier run, already compacted) and 200 small files
from this run, 10% of whose keys rewrite existing rows. Compaction keeps the last version of each
key in one file. Each method runs in its own process, so its peak RSS is its own:

- ``duckdb``: what the Parquet sink does (streams through DuckDB within 512 MB, pyarrow writes);
- ``python``: what it did before (every row into a dict, then one table).

    python bench/parquet_compaction.py              # 2,000,000 rows
    python bench/parquet_compaction.py --rows 500000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_partition(directory: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True)
    big = pa.table({"ts_code": [f"{i % 5000:06d}.SZ" for i in range(rows)],
                    "trade_date": [f"2{i // 5000:07d}" for i in range(rows)],
                    "open": [float(i % 997) for i in range(rows)],
                    "close": [float(i % 991) for i in range(rows)],
                    "vol": list(range(rows))})
    pq.write_table(big, directory / "part-old.parquet")
    step = 200
    for f in range(200):  # small files from this run: new keys and rewrites of old ones
        keys = range(f * step, f * step + step)
        pq.write_table(pa.table({"ts_code": [f"{i % 5000:06d}.SZ" for i in keys],
                                 "trade_date": [f"2{i // 5000:07d}" if i % 10 == 0 else f"3{i:07d}" for i in keys],
                                 "open": [1.0] * step, "close": [2.0] * step, "vol": list(keys)}),
                       directory / f"part-new-{f:03d}.parquet")


def compact_python(directory: Path) -> None:
    """The sink's former compaction, for comparison."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(directory.glob("*.parquet"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    latest: dict[tuple[str, ...], dict] = {}
    for file in files:
        for row in pq.read_table(file).to_pylist():
            latest[(str(row["ts_code"]), str(row["trade_date"]))] = row
    pq.write_table(pa.Table.from_pylist(list(latest.values())), directory / "part-compacted.parquet")
    for file in files:
        file.unlink()


def child(method: str, directory: Path) -> None:
    started = time.perf_counter()
    if method == "duckdb":
        from synctask.sinks.parquet import ParquetSink

        ParquetSink(directory, ["ts_code", "trade_date"])._compact(directory)
    else:
        compact_python(directory)
    took = time.perf_counter() - started
    import pyarrow.parquet as pq

    (only,) = list(directory.glob("*.parquet"))
    rows = pq.read_metadata(only).num_rows
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{method:<8} {took:7.2f} s  peak RSS {peak:7.1f} MB  {rows:,} rows out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--make", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    if args.make:
        make_partition(Path(args.make), args.rows)
        return
    print(f"one file of {args.rows:,} rows + 200 files of 200 rows (10% rewrite old keys)")
    for method in ("duckdb", "python"):
        with tempfile.TemporaryDirectory() as folder:
            directory = Path(folder) / "daily"
            # Both steps in fresh processes: Linux carries a parent's peak RSS into its children.
            subprocess.run([sys.executable, __file__, "--make", str(directory), "--rows", str(args.rows)], check=True)
            subprocess.run([sys.executable, __file__, "--child", method, str(directory)], check=True)


if __name__ == "__main__":
    main()

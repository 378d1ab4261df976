"""Peak memory of `synctask run` for one large REST answer, against max_answer_mb.

A vendor that answers one request with a big JSON document (a bulk export, a day of ticks) must
not take synctask's memory to many times the answer's size. This serves one answer of --mb
megabytes (rows of five small fields, the common worst case for Python objects) from a separate
process, runs `synctask run` on a plan whose max_answer_mb is --cap, and prints the run's peak
resident memory, its ratio to the cap, and the rows written.

    python bench/large_answer.py --mb 250 --cap 300
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = '''
import sys
from aiohttp import web
path = sys.argv[1]
async def big(request):
    return web.FileResponse(path, headers={"Content-Type": "application/json"})
app = web.Application()
app.router.add_get("/big", big)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=lambda *a: print("ready", flush=True))
'''

PLAN = '''
[vendors.bulk]
connector = "rest"
base_url = "http://127.0.0.1:{port}"

[datasets.rows]
vendor = "bulk"
sink = {{ kind = "sqlite", path = "rows.db", key = ["id"] }}
options = {{ path = "/big", records = "data.items", max_answer_mb = {cap} }}

[[plans]]
name = "bulk"
dataset = "rows"
timeout = "10m"
'''


def make_answer(path: Path, megabytes: float) -> int:
    """A JSON answer of about ``megabytes`` MB; the number of rows in it."""
    target = int(megabytes * 1024 * 1024)
    rows = 0
    with path.open("w") as out:
        out.write('{"meta": {"next_cursor": null}, "data": {"items": [')
        written = 0
        while written < target:
            line = json.dumps({"id": rows, "code": f"{rows:06d}.SZ", "close": 10.25 + rows % 100,
                               "volume": rows * 7, "flag": rows % 2 == 0})
            out.write(("," if rows else "") + line)
            written += len(line) + 1
            rows += 1
        out.write("]}}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="size of the answer (MB)")
    parser.add_argument("--cap", type=float, default=120.0, help="the dataset's max_answer_mb")
    parser.add_argument("--port", type=int, default=18765)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="synctask-large-"))
    answer = folder / "answer.json"
    rows = make_answer(answer, args.mb)
    (folder / "plans.toml").write_text(PLAN.format(port=args.port, cap=args.cap))
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(answer), str(args.port)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None and "ready" in server.stdout.readline()
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "synctask.cli", "run", "plans.toml", "--plain"], cwd=folder,
                                capture_output=True, text=True)
        took = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    finally:
        server.terminate()
        server.wait()
    written = 0
    if (folder / "rows.db").exists():
        with sqlite3.connect(folder / "rows.db") as db:
            written = db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
    size = answer.stat().st_size / 1048576
    print(f"answer {size:,.1f} MB ({rows:,} rows), max_answer_mb {args.cap:g}: exit {result.returncode}, "
          f"{took:.1f} s, peak {peak_mb:,.0f} MB = {peak_mb / args.cap:.2f}x the cap "
          f"({peak_mb / size:.2f}x the answer), {written:,} rows written")
    if result.returncode != 0:
        print(result.stdout[-2000:], result.stderr[-2000:], file=sys.stderr)
    os.system(f"rm -rf {folder}")


if __name__ == "__main__":
    main()

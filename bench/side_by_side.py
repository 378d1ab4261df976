"""Two versions of synctask (or synctask and the hand-written client) at the same time, against one
simulator: the CPU per request of each, and their ratio per pair of runs.

On a shared machine one process's CPU per request moves by 20% from one minute to the next, so
runs taken one after the other compare the machine's moods as much as the code. Run at the same
time, both see the same machine: the same version against itself gives 0.95-1.01. Each side is a
source tree (its ``src`` goes first on the path: ``git worktree add /tmp/old HEAD~3`` makes one),
``.`` for this checkout, or ``hand`` for the hand-written client of ``end_to_end.py``. CPU is
counted from after the imports to the end of the run (start-up is the same for both sides).

    python bench/side_by_side.py /tmp/old . --sink sqlite --workers 16 --pairs 5
    python bench/side_by_side.py hand . --sink jsonl --workers 16
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one_side(url: str, sink: str, workers: int, days: int) -> None:
    """Run as a process of its own: one `synctask run` (or the hand-written client) in this process."""
    sys.path.insert(0, str(HERE))
    from end_to_end import PLAN, SINKS, hand_written

    folder = Path(tempfile.mkdtemp())
    if os.environ.get("SIDE") == "hand":
        import asyncio

        import aiohttp  # noqa: F401  (imported before the count starts, as synctask's are)

        started = resource.getrusage(resource.RUSAGE_SELF)
        asyncio.run(hand_written(url, workers, sink, folder, days, 10))
    else:
        import synctask.cli as cli

        (folder / "plans.toml").write_text(PLAN.format(url=url, sink=SINKS[sink], page=10, days=days))
        os.chdir(folder)
        sys.argv = ["synctask", "run", "plans.toml", "--plain", "--workers", str(workers)]
        started = resource.getrusage(resource.RUSAGE_SELF)
        out, sys.stdout = sys.stdout, open(os.devnull, "w")
        try:
            cli.main()
        except SystemExit as exit_:
            if exit_.code:
                raise
        finally:
            sys.stdout = out
    ended = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ended.ru_utime - started.ru_utime + ended.ru_stime - started.ru_stime
    print(f"{1e6 * cpu / (days * 100):.1f} us per request", flush=True)


def start(side: str, url: str, args: argparse.Namespace) -> subprocess.Popen[str]:
    env = {**os.environ, "SIDE": side}
    if side not in (".", "hand"):
        env["PYTHONPATH"] = str(Path(side).resolve() / "src")
    return subprocess.Popen([sys.executable, __file__, "--side", url, args.sink, str(args.workers), str(args.days)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cost(proc: subprocess.Popen[str]) -> float:
    out, err = proc.communicate()
    found = re.search(r"([\d.]+) us per request", out)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"a side failed ({proc.returncode}):\n{err[-3000:]}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", help="a source tree, '.' or 'hand'")
    parser.add_argument("b", help="a source tree, '.' or 'hand'")
    parser.add_argument("--sink", default="sqlite", choices=("sqlite", "jsonl"))
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--days", type=int, default=100, help="100 pages of 10 rows each")
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from end_to_end import serve

    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(ports, 10), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=30)}"
    costs_a, costs_b, ratios = [], [], []
    try:
        for _ in range(args.pairs):
            started = time.perf_counter()
            side_a, side_b = start(args.a, url, args), start(args.b, url, args)
            a, b = cost(side_a), cost(side_b)
            costs_a.append(a)
            costs_b.append(b)
            ratios.append(b / a)
            print(f"A {a:.0f} us, B {b:.0f} us per request: B/A {b / a:.3f} ({time.perf_counter() - started:.1f} s)",
                  flush=True)
    finally:
        server.terminate()
    print(f"\n{args.sink}, {args.workers} workers, {args.days * 100:,} requests a run, {args.pairs} pairs: "
          f"A {statistics.median(costs_a):.0f} us, B {statistics.median(costs_b):.0f} us per request (medians); "
          f"B/A median {statistics.median(ratios):.3f}, {min(ratios):.3f}..{max(ratios):.3f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        _, _, url, sink, workers, days = sys.argv
        one_side(url, sink, int(workers), int(days))
    else:
        main()

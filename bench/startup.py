"""Start-up: wall and CPU seconds of ``synctask --help`` and ``synctask check`` on each example.

Each command runs as a whole process (interpreter start-up and imports included), several
times; min/median/max are printed. Goals: --help < 0.3 s, check < 0.5 s.

    python bench/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   env={**os.environ, "TUSHARE_TOKEN": os.environ.get("TUSHARE_TOKEN", "x")})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    synctask = [sys.executable, "-m", "synctask.cli"]
    commands = {"synctask --help": [*synctask, "--help"]}
    for example in sorted((ROOT / "examples").glob("*.toml")):
        commands[f"synctask check examples/{example.name}"] = [*synctask, "check", str(example)]
    print(f"{'command':42} {'wall s min/median/max':>24} {'cpu s median':>13}")
    for name, command in commands.items():
        timed(command)  # warm the file cache
        runs = [timed(command) for _ in range(args.runs)]
        walls = sorted(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:42} {walls[0]:7.3f} {statistics.median(walls):7.3f} {walls[-1]:7.3f}  {cpu:12.3f}")


if __name__ == "__main__":
    main()

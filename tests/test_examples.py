"""Every example, end to end in real processes: `synctask simulate` in one, `synctask run` in another.

Each example runs as written except for the simulator's port. Afterwards the data is complete,
each row is there once, the simulator saw no request over its limits, and output that is not a
terminal holds no escape codes. Ctrl-C and kill -9 in the middle, then a re-run, leave complete
data with no duplicate.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"
ENV = {"TUSHARE_TOKEN": "demo-token", "ITEMS_API_TOKEN": "t0k3n-not-printed"}


@contextmanager
def simulate(profile: str, *extra: str) -> Iterator[str]:
    """`synctask simulate` in its own process on a free port; yields its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "synctask.cli", "simulate", "--profile", profile, "--port", "0",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert " on http://127.0.0.1:" in line, line + proc.stderr.read()
        yield line.split(" on ")[1].split()[0]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # waits, and closes the pipes


def stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_admin/stats", timeout=5) as answer:
        return json.loads(answer.read())


def copy_example(name: str, url: str, folder: Path) -> Path:
    text = (EXAMPLES / name).read_text().replace("http://127.0.0.1:9000", url)
    assert url in text
    path = folder / name
    path.write_text(text)
    return path


def run(plan_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synctask.cli", "run", str(plan_file), *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **ENV})


def start(plan_file: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "synctask.cli", "run", str(plan_file), "--plain", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})


def parquet_counts(pattern: Path, key: str) -> tuple[int, int]:
    row = duckdb.connect().execute(f"SELECT COUNT(*), COUNT(DISTINCT {key}) FROM '{pattern}'").fetchone()
    assert row is not None
    return row[0], row[1]


def check_clean(result: subprocess.CompletedProcess[str], *plans: str) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b[" not in result.stdout + result.stderr  # not a terminal: no escape codes
    assert "Traceback" not in result.stderr
    assert ENV["ITEMS_API_TOKEN"] not in result.stdout + result.stderr
    for plan in plans:
        assert f"{plan}: completed" in result.stdout


def test_tushare_example(tmp_path):
    with simulate("tushare") as url:
        result = run(copy_example("tushare.toml", url, tmp_path))
        check_clean(result, "daily-backfill")
        assert stats(url)["violations"] == []
    assert parquet_counts(tmp_path / "data/daily/*.parquet", "ts_code || trade_date") == (182, 182)


def test_binance_example(tmp_path):
    with simulate("binance") as url:
        result = run(copy_example("binance.toml", url, tmp_path))
        check_clean(result, "klines-2024")
        assert stats(url)["violations"] == []
    # 19 requests of 480 hourly candles per symbol, partitioned by symbol
    assert parquet_counts(tmp_path / "data/klines/**/*.parquet", "symbol || open_time") == (17568, 17568)
    assert sorted(p.name for p in (tmp_path / "data/klines").iterdir()) == ["symbol=BTCUSDT", "symbol=ETHUSDT"]


def test_rest_example(tmp_path):
    with simulate("rest") as url:
        result = run(copy_example("rest.toml", url, tmp_path))
        check_clean(result, "items-january")
        assert stats(url)["violations"] == []
        assert stats(url)["served"] == 31 * 4  # 35 items a day, 10 a page: every page once
    db = sqlite3.connect(tmp_path / "data/items.db")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM items").fetchone() == (31 * 35, 31 * 35)


def test_websocket_example(tmp_path):
    with simulate("ws") as url:
        result = run(copy_example("websocket.toml", url, tmp_path))
        check_clean(result, "quotes")
    seqs = [json.loads(line)["seq"] for line in (tmp_path / "data/quotes.jsonl").read_text().splitlines()]
    assert sorted(seqs) == list(range(1000))


def test_python_api_example(tmp_path):
    script = EXAMPLES / "python_api.py"
    for _ in range(2):  # the second run skips every task the first finished
        result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
    assert "backfill: 0 done, 62 skipped" in result.stdout
    assert "sum of squares 1..100 = 338350" in result.stdout
    assert "job failed as expected: job divide: 1 of 3 mini-tasks failed" in result.stdout
    db = sqlite3.connect(tmp_path / "prices.db")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT symbol || day) FROM daily").fetchone() == (62, 62)


def test_json_events_for_scripts(tmp_path):
    with simulate("tushare") as url:
        plan_file = copy_example("tushare.toml", url, tmp_path)
        result = run(plan_file, "--json")
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]  # every line is JSON
        again = [json.loads(line) for line in run(plan_file, "--json").stdout.splitlines()]
    kinds = {line["type"] for line in lines}
    assert {"plan", "task", "summary"} <= kinds
    done = [line for line in lines if line["type"] == "task" and line["kind"] == "done"]
    assert len(done) == 182 and all(line["plan"] == "daily-backfill" for line in done)
    assert lines[-1]["type"] == "summary" and lines[-1]["plans"]["daily-backfill"]["done"] == 182
    assert again[-1]["plans"]["daily-backfill"]["skipped"] == 182


@pytest.mark.parametrize("how", ["ctrl-c", "kill -9"])
def test_interrupting_a_run_then_running_again_completes_the_data_once(how, tmp_path):
    # Each answer takes 60..120 ms and 4 workers run: the 182 requests take about 4 s.
    with simulate("tushare", "--faults", "latency=60ms..120ms") as url:
        plan_file = copy_example("tushare.toml", url, tmp_path)
        proc = start(plan_file, "--workers", "4")
        deadline = time.monotonic() + 60  # in the middle: once it is sending (a busy machine starts it slowly)
        while stats(url)["served"] < 30 and proc.poll() is None:
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        served_before = stats(url)["served"]
        if how == "ctrl-c":
            assert proc.returncode == 130, err
            assert f"Resume with: synctask run {plan_file}" in err
        else:
            assert proc.returncode == -signal.SIGKILL
        assert 0 < served_before < 182, "interrupted in the middle"
        result = run(plan_file, "--plain")
        check_clean(result, "daily-backfill")
        refetched = stats(url)["served"] - 182
        assert stats(url)["violations"] == []
    assert parquet_counts(tmp_path / "data/daily/*.parquet", "ts_code || trade_date") == (182, 182)
    # Only what was not recorded done is fetched again: at most the requests in flight and the
    # answers of the last unflushed moment (0.2 s) before the interrupt.
    assert 0 <= refetched <= 12, refetched
    assert len(list((tmp_path / "data/daily").glob("*.parquet"))) == 1  # compacted into one file


def test_incremental_example(tmp_path):
    # A vendor minute each 10 s: between the two runs (seconds apart, more on a busy machine) a
    # few records come and change, far fewer than the first run fetched.
    with simulate("rest", "--scale", "6") as url:
        plan_file = copy_example("incremental.toml", url, tmp_path)
        first = run(plan_file, "--json")
        check_clean(first)
        served = stats(url)["served"]
        second = run(plan_file, "--json")
        check_clean(second)
        seen = stats(url)
        assert seen["violations"] == []
    rows_first = json.loads(first.stdout.splitlines()[-1])["plans"]["records"]["rows"]
    rows_second = json.loads(second.stdout.splitlines()[-1])["plans"]["records"]["rows"]
    assert rows_first >= 40 and rows_second < rows_first / 2  # only what changed (and the lag's rows)
    assert seen["served"] - served <= served  # no more requests than the first run's
    asked = seen["asked_since"]
    assert [a["updated_since"] for a in asked[:2]] == ["2023-06-01T00:00:00Z"] * 2  # initial, each region
    assert all(a["updated_since"] > "2023-12-31" for a in asked[2:])  # then since each region's cursor
    db = sqlite3.connect(tmp_path / "data/records.db")
    total, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM records").fetchone()
    assert total == distinct >= 40  # every record once
    shown = subprocess.run([sys.executable, "-m", "synctask.cli", "history", "records", "--state",
                            str(tmp_path / ".synctask/state.db"), "--json"], capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0 and len(json.loads(shown.stdout)["runs"]) == 2, shown.stderr

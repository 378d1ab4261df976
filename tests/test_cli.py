"""The command, in real subprocesses: output, exit statuses, no tracebacks, no secrets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "tushare.toml"


def synctask(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "TUSHARE_TOKEN"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "synctask.cli", *args],
        capture_output=True, text=True, env=full_env, timeout=60,
    )


def test_check_prints_plans_task_counts_schedules_and_limits():
    result = synctask("check", str(EXAMPLE), env={"TUSHARE_TOKEN": "very-secret-value"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "plan daily-backfill" in out
    assert "tasks     182" in out
    assert "manual, runs when started" in out
    assert "dataset: 200 per 1m, 100000 per 1d" in out
    assert "vendor tushare: 500 per 1m" in out
    assert "very-secret-value" not in out + result.stderr


def test_check_shows_the_next_due_time_of_a_scheduled_plan(tmp_path):
    text = EXAMPLE.read_text().replace('schedule = "manual"', 'schedule = "cron 0 18 * * 1-5 Asia/Shanghai"')
    path = tmp_path / "plans.toml"
    path.write_text(text)
    result = synctask("check", str(path), env={"TUSHARE_TOKEN": "x"})
    assert result.returncode == 0, result.stderr
    assert "next due 20" in result.stdout and "18:00+08:00" in result.stdout


def test_bad_plan_file_exits_2_with_the_place_and_no_traceback(tmp_path):
    path = tmp_path / "plans.toml"
    path.write_text(EXAMPLE.read_text().replace("{ rate = 200,", "{ rat = 200,"))
    result = synctask("check", str(path), env={"TUSHARE_TOKEN": "x"})
    assert result.returncode == 2
    assert "datasets.daily.limits[0]: unknown key 'rat' (did you mean 'rate'?)" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_missing_secret_is_a_warning_in_check_and_exit_2_in_run(tmp_path):
    result = synctask("check", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "TUSHARE_TOKEN is not set" in result.stderr
    result = synctask("run", str(EXAMPLE), "--state", str(tmp_path / "state.db"))
    assert result.returncode == 2
    assert "TUSHARE_TOKEN is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_and_unknown_plan_exit_2():
    assert synctask("check", "/nonexistent.toml").returncode == 2
    result = synctask("check", str(EXAMPLE), "--plan", "daily-backfil", env={"TUSHARE_TOKEN": "x"})
    assert result.returncode == 2
    assert "did you mean 'daily-backfill'" in result.stderr


def test_unknown_command_exits_2():
    result = synctask("chek")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_version():
    result = synctask("--version")
    assert result.returncode == 0 and result.stdout.startswith("synctask ")


def test_demo_syncs_four_simulated_vendors_into_parquet_and_a_rerun_skips_everything(tmp_path):
    import duckdb

    def demo() -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "TUSHARE_TOKEN"}
        return subprocess.run([sys.executable, "-m", "synctask.cli", "demo", "--plain"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=180)

    result = demo()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b[" not in out  # plain output has no escape codes
    assert (tmp_path / "synctask-demo.toml").exists()  # the sample plan file, in the current folder
    for plan in ("tushare-daily", "binance-klines", "rest-items", "ws-quotes"):
        assert f"{plan}: completed" in out
    for vendor in ("vendor:tushare", "vendor:binance", r"vendor:items-api \(simulated rest\)"):  # as progress says
        assert re.search(rf"  {vendor}: \d+ requests served; none over its limits", out), out
    assert "the stream's connection was cut; reconnected (once so far) and asked to go on from message" in out
    assert "ws-quotes: streaming, " in out and "0/1 done" not in out  # a stream says what it does
    assert re.search(r"rest-items: froze (once|twice|\d+ times)", out)  # the RateLimit header: frozen before any 429
    assert re.search(r"retried (once|twice|[3-9]\d* times)", out)

    def counts() -> dict[str, tuple[int, int]]:
        keys = {"daily": "ts_code || trade_date", "klines": "symbol || open_time", "items": "id", "quotes": "seq"}
        found, db = {}, duckdb.connect()
        for dataset, key in keys.items():
            files = f"{tmp_path}/synctask-demo/{dataset}/**/*.parquet"
            found[dataset] = db.execute(f"SELECT COUNT(*), COUNT(DISTINCT {key}) FROM '{files}'").fetchone()
        return found

    expected = {"daily": (534, 534), "klines": (21960, 21960), "items": (1575, 1575), "quotes": (1200, 1200)}
    assert counts() == expected
    assert "600519.SH  89" in out  # the DuckDB query it printed, run over the Parquet files

    again = demo()
    assert again.returncode == 0, again.stderr
    assert re.search(r"tushare-daily\s+completed\s+0\s+534\s+0", again.stdout)  # all skipped
    assert counts() == expected  # nothing duplicated


def test_run_with_a_bad_plan_name_or_workers_exits_2(tmp_path):
    result = synctask("run", str(EXAMPLE), "--plan", "nope", env={"TUSHARE_TOKEN": "x"})
    assert result.returncode == 2 and "no plan named 'nope'" in result.stderr
    result = synctask("run", str(EXAMPLE), "--workers", "0", env={"TUSHARE_TOKEN": "x"})
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_run_of_a_sink_a_plan_file_cannot_build_says_so_and_exits_2(tmp_path):
    path = tmp_path / "plans.toml"
    path.write_text(EXAMPLE.read_text().replace('kind = "parquet"', 'kind = "callback"'))
    result = synctask("run", str(path), env={"TUSHARE_TOKEN": "x"})
    assert result.returncode == 2
    assert "a callback sink is given from Python" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".synctask").exists(), "a plan that fails to load leaves no state behind"


def test_simulate_with_a_bad_profile_or_faults_exits_2():
    result = synctask("simulate", "--profile", "nasdaq")
    assert result.returncode == 2 and "unknown profile 'nasdaq'" in result.stderr
    result = synctask("simulate", "--faults", "lag=1")
    assert result.returncode == 2 and "unknown fault 'lag'" in result.stderr


def test_check_says_that_a_paginated_plan_grows_by_its_pages():
    example = Path(__file__).parent.parent / "examples" / "rest.toml"
    result = synctask("check", str(example), env={"ITEMS_API_TOKEN": "t"})
    assert result.returncode == 0, result.stderr
    assert "tasks     31, plus one for each further page found" in result.stdout


def test_check_probe_fetches_the_first_page_and_shows_what_the_records_path_found(tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "synctask.cli", "simulate", "--profile", "rest", "--port",
                               str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        example = (Path(__file__).parent.parent / "examples" / "rest.toml").read_text()
        path = tmp_path / "rest.toml"
        path.write_text(example.replace("127.0.0.1:9000", f"127.0.0.1:{port}"))
        result = synctask("check", str(path), "--probe", env={"ITEMS_API_TOKEN": "x"})
        assert result.returncode == 0, result.stderr
        assert 'probe items-january: the first task, {"day": "2024-01-01"}' in result.stdout
        assert "rows      10 at 'data.items'" in result.stdout and "columns   day, id, value" in result.stdout
        assert 'next      {"day": "2024-01-01", "cursor": "c10"}' in result.stdout
        path.write_text(path.read_text().replace('records = "data.items"', 'records = "data.rows"'))
        result = synctask("check", str(path), "--probe", env={"ITEMS_API_TOKEN": "x"})
        assert result.returncode == 1
        assert "at data the answer has items and no 'rows'; fix datasets.items.options.records" in result.stderr
        assert not (tmp_path / "data").exists() and not (tmp_path / ".synctask").exists(), "a probe writes nothing"
    finally:
        server.kill()
        server.communicate()


def test_help_shows_names_not_python_types():
    result = synctask("run", "--help", env={"COLUMNS": "100"})
    assert result.returncode == 0
    assert "PLANS.toml" in result.stdout and "{plan_file}" not in result.stdout
    assert [line for line in result.stdout.splitlines() if "<bool>" in line and "--help" not in line] == []
    assert "``" not in synctask("--help", env={"COLUMNS": "100"}).stdout


@pytest.mark.parametrize("example", sorted(p.name for p in (Path(__file__).parent.parent / "examples").glob("*.toml")))
def test_check_passes_every_example_before_its_secrets_are_exported(example):
    """A new user checks an example first: a token not exported yet is a warning, nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("TOKEN")}
    path = Path(__file__).parent.parent / "examples" / example
    result = subprocess.run([sys.executable, "-m", "synctask.cli", "check", str(path)], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stderr


def test_ray_without_ray_installed_says_how_to_install_it(tmp_path):
    plans = tmp_path / "plans.toml"
    plans.write_text('[vendors.v]\nconnector = "python:json:dumps"\n\n[datasets.d]\nvendor = "v"\n'
                     'api = "python:json:dumps"\n\n[[plans]]\nname = "p"\ndataset = "d"\nparams = { obj = [1] }\n')
    hide_ray = "import sys; sys.modules['ray'] = None; from synctask.cli import main; sys.argv[0] = 'synctask'; main()"
    result = subprocess.run([sys.executable, "-c", hide_ray, "run", str(plans), "--ray", "auto"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "pip install 'synctask[ray]'" in result.stderr and "Traceback" not in result.stderr

"""The command, in real subprocesses: output, exit statuses, no tracebacks, no secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "plans.toml"


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


def test_missing_secret_exits_2_naming_the_variable():
    result = synctask("check", str(EXAMPLE))
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

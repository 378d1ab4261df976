"""What people read: the live table and the summary fit an 80-column terminal, nothing cut short."""

from __future__ import annotations

import time
from types import SimpleNamespace

from rich.console import Console

from synctask.display import ProgressDisplay, summary_table
from synctask.events import FreezeEvent, PlanEvent, TaskEvent
from synctask.executor import RunSummary
from synctask.progress import _SLICE, PACE_WINDOW, Progress

PACE_SLICES = int(PACE_WINDOW / _SLICE)

PLANS = ["tushare-daily", "binance-klines", "rest-items", "ws-quotes"]


def busy_progress(now: float) -> Progress:
    progress = Progress()
    for name in PLANS:
        progress.observe(PlanEvent(now - 30, name, "running", f"{name}:1", total=123_456))
        for n in range(50):
            progress.observe(TaskEvent(now - 5 + n / 10, name, "done", f"t{n}", rows=21_960))
        for _ in range(12):
            progress.observe(TaskEvent(now - 1, name, "retry", "t", message="503"))
    progress.observe(FreezeEvent(now, "binance-klines", "vendor:binance", now + 42, "429", True))
    return progress


def rendered(renderable) -> list[str]:
    console = Console(width=80, record=True, force_terminal=False)
    console.print(renderable)
    return console.export_text().splitlines()


def test_the_live_table_fits_80_columns_with_a_frozen_plan():
    now = time.time()
    display = ProgressDisplay(SimpleNamespace(progress=busy_progress(now)), Console(width=80), plain=False)
    lines = rendered(display.table())
    assert all(len(line) <= 80 for line in lines)
    assert not any("…" in line for line in lines), "\n".join(lines)
    assert "frozen 42s" in "\n".join(lines) and "1.1M" in "\n".join(lines)


def test_live_counts_stay_narrow():
    from synctask.display import format_count

    assert [format_count(n) for n in (0, 99_999, 100_000, 123_456, 1_098_000, 12_345_678_901)] == [
        "0", "99,999", "100k", "123k", "1.1M", "12.3B"]


def test_plain_lines_say_until_when_a_plan_is_frozen():
    now = time.time()
    display = ProgressDisplay(SimpleNamespace(progress=busy_progress(now)), Console(width=80), plain=True)
    line = next(line for line in display.lines() if line.startswith("binance-klines"))
    assert "frozen until " in line and "\x1b[" not in line


def test_the_summary_fits_80_columns():
    summary = RunSummary(plans={name: {"state": "completed", "done": 123_456, "skipped": 1_234_567, "failed": 12,
                                       "rows": 12_345_678, "retries": 123, "freezes": 45} for name in PLANS})
    lines = rendered(summary_table(summary))
    assert all(len(line) <= 80 for line in lines) and not any("…" in line for line in lines), "\n".join(lines)


def test_a_stream_plan_shows_messages_per_second_and_no_made_up_eta():
    from synctask.events import StreamEvent

    now = time.time()
    progress = Progress()
    progress.observe(PlanEvent(now - 10, "quotes", "running", "quotes:1", total=1))
    progress.observe(TaskEvent(now - 10, "quotes", "started", "t"))
    for k in range(10):
        progress.observe(StreamEvent(now - 9 + k, "quotes", "t", 50, 50))
    p = progress.snapshot("quotes", now)
    assert p.rate == 50.0 and p.eta is None and p.rows == 500


def test_what_is_going_on_is_said_once_in_plain_lines_and_on_one_line_under_the_table():
    now = time.time()
    progress = Progress()
    progress.observe(PlanEvent(now - 10, "daily", "running", "daily:1", total=182))
    message = ("the connection to the vendor failed: ClientConnectorError: Cannot connect to host 127.0.0.1:9; "
               "synctask will retry in 1.90s (attempt 2 of 5); check the network or the vendor's status page")
    progress.observe(TaskEvent(now - 1, "daily", "retry", "t", message=message))
    display = ProgressDisplay(SimpleNamespace(progress=progress), Console(width=80), plain=True)
    first, again = display.lines(), display.lines()
    assert first[1] == f"  {message}" and len(again) == 1  # said when it changes, not every time
    lines = rendered(ProgressDisplay(SimpleNamespace(progress=progress), Console(width=80), plain=False).table())
    assert lines[-1].startswith("daily: the connection to the vendor failed") and lines[-1].endswith("…")
    assert all(len(line) <= 80 for line in lines)


def test_progress_memory_stays_flat_however_many_tasks_finish():
    progress = Progress()
    progress.observe(PlanEvent(0.0, "p", "running", "p:1", total=2_000_000))
    for i in range(200_000):
        progress.observe(TaskEvent(i / 10_000, "p", "done", "t"))  # 10,000 per second for 20 s
    p = progress.snapshot("p", 20.0)
    assert len(p._finished._slices) <= PACE_SLICES + 2
    assert 9_900 <= p.rate <= 10_100 and p.done == 200_000


def test_a_young_runs_eta_leans_on_its_limits_and_an_ended_runs_rate_is_its_average():
    now = 1_000_000.0
    progress = Progress()
    # 6,600 tasks under a limit of 10 a second: 11 minutes, whatever the first second's pace says
    progress.set_limit_time("p", lambda tasks, at: tasks / 10)
    progress.observe(PlanEvent(now, "p", "running", "p:1", total=6_600))
    for k in range(3):  # a slow first second: 3 tasks (the pace alone would say 36 minutes)
        progress.observe(TaskEvent(now + 0.3 * k, "p", "done", f"t{k}"))
    eta = progress.snapshot("p", now + 1.0).eta
    assert 660 <= eta < 900, eta  # 11 minutes and a little, not 36
    for k in range(3, 203):  # ten seconds on, the pace is in: the longer of the pace's and the limits' wins
        progress.observe(TaskEvent(now + 1 + k * 0.05, "p", "done", f"t{k}"))
    assert progress.snapshot("p", now + 11.0).eta == max(6_397 / 10, 6_397 / progress.snapshot("p", now + 11).rate)
    progress.observe(PlanEvent(now + 20, "p", "completed", "p:1"))
    average = progress.snapshot("p", now + 20).rate
    assert average == progress.snapshot("p", now + 500).rate == 203 / 20  # it does not keep falling

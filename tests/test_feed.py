"""The event lines the dashboard and `synctask events` read: folded, with ids that only grow,
resumable from any id without a duplicate."""

from __future__ import annotations

from synctask.events import FreezeEvent, PlanEvent, SkipEvent, TaskEvent
from synctask.server.stream import Feed

LIMITED = "the vendor rate-limited the request (HTTP 429): slow down; synctask froze vendor:v for 2s"


def freeze_burst(feed: Feed, at: float, answers: int, scope: str = "vendor:v") -> list:
    """One 429 freezes the scope; the answers already in flight come back 429 too."""
    items = []
    for k in range(answers):
        items.append(feed.take(TaskEvent(at + k * 0.01, "p", "requeued", f"t{k}", LIMITED, outcome="rate_limited")))
        items.append(feed.take(FreezeEvent(at + k * 0.01, "p", scope, at + 2, LIMITED, new=k == 0)))
    return [item for item in items if item is not None]


def test_one_line_per_freeze_counting_the_answers_it_held_back():
    feed = Feed(clock=lambda: 1000.0)
    items = freeze_burst(feed, 10.0, 41)
    assert len({item["line"] for item in items}) == 1  # 41 answers, 1 line
    assert list(feed.lines.values())[0]["held"] == 41
    freeze_burst(feed, 20.0, 3)  # a second freeze: its own line
    assert [line["held"] for line in feed.lines.values()] == [41, 3]


def test_a_plans_retries_share_one_updating_line_until_a_minute_passes_without_one():
    feed = Feed(clock=lambda: 1000.0)
    for k in range(12):
        feed.take(TaskEvent(100.0 + k, "p", "retry", f"t{k}", "the vendor answered with a server error (HTTP 503)"))
    feed.take(TaskEvent(105.0, "q", "retry", "u", "the request timed out"))
    assert [(line["plan"], line["count"]) for line in feed.lines.values()] == [("p", 12), ("q", 1)]
    feed.take(TaskEvent(100.0 + 11 + 61, "p", "retry", "t", "the vendor answered with a server error (HTTP 503)"))
    assert [(line["plan"], line["count"]) for line in feed.lines.values()] == [("p", 12), ("q", 1), ("p", 1)]


def test_routine_and_quiet_events_make_no_line_and_failures_and_plan_changes_do():
    feed = Feed(clock=lambda: 1000.0)
    assert feed.take(TaskEvent(1.0, "p", "started", "t")) is None
    assert feed.take(TaskEvent(1.0, "p", "done", "t")) is None
    assert feed.take(TaskEvent(1.0, "p", "requeued", "t", outcome="cancelled")) is None
    assert feed.take(SkipEvent(1.0, "p", 5)) is None
    assert feed.take(TaskEvent(1.0, "p", "failed", "t", "rejected")) is not None
    assert feed.take(PlanEvent(1.0, "p", "paused")) is not None
    assert [line["type"] for line in feed.lines.values()] == ["task", "plan"]


def test_resuming_from_any_id_gives_each_changed_line_once_and_ids_grow_across_restarts():
    feed = Feed(clock=lambda: 1000.0)
    feed.take(PlanEvent(1.0, "p", "running"))
    items = freeze_burst(feed, 2.0, 2)
    seen = max(item["id"] for item in feed.since(None))
    freeze_burst(feed, 2.5, 0)
    feed.take(TaskEvent(3.0, "p", "retry", "t", "server error"))
    more = feed.since(seen)
    assert [item["type"] for item in more] == ["retries"]
    # the freeze line changes again (one more answer): a resume from before sees it once, updated
    feed.take(FreezeEvent(3.1, "p", "vendor:v", 5.0, LIMITED, new=False))
    again = feed.since(seen)
    assert [item["type"] for item in again] == ["retries", "freeze"] and again[1]["held"] == 3
    assert len({item["line"] for item in again}) == len(again)
    assert items[0]["line"] == again[1]["line"]
    later = Feed(clock=lambda: 1001.0)  # the daemon restarted a second later
    assert later.last_id > max(item["id"] for item in feed.since(None))


def test_only_the_newest_lines_are_kept():
    feed = Feed(keep=5, clock=lambda: 1000.0)
    for k in range(12):
        feed.take(TaskEvent(float(k), "p", "failed", f"t{k}", "rejected"))
    assert [line["task_id"] for line in feed.lines.values()] == ["t7", "t8", "t9", "t10", "t11"]


def test_the_last_hour_is_kept_in_fixed_memory_step_by_step():
    from synctask.limits import Limiter
    from synctask.server.series import STEPS, Series
    from synctask.windows import Quota

    limiter = Limiter()
    limiter.configure("vendor:v", [Quota(10, 1.0)])
    series = Series(limiter)
    t0 = 36_000.0
    for k in range(5):
        series(TaskEvent(t0 + k, "p", "done", f"t{k}", outcome="ok"))
    series(TaskEvent(t0 + 1, "p", "retry", "x", outcome="server"))
    series(TaskEvent(t0 + 2, "p", "requeued", "y", outcome="rate_limited"))
    series(TaskEvent(t0 + 2, "p", "requeued", "z", outcome="cancelled"))  # a control op: no answer
    series(TaskEvent(t0 + 2, "p", "started", "w"))
    series(FreezeEvent(t0 + 2, "p", "vendor:v", t0 + 5, "limited"))
    gate = limiter.gate(["vendor:v"])
    for _ in range(5):
        gate.try_acquire(1, t0 + 3)
    series.sample(t0 + 3)
    now = series.export(t0 + 5)
    assert len(now["requests"]) == STEPS
    assert (now["requests"][-1], now["errors"][-1], now["limited"][-1], now["freezes"][-1]) == (7, 1, 1, 1)
    assert now["usage"]["vendor:v"][-1] == 0.5
    an_hour_later = series.export(t0 + STEPS * 10)
    assert sum(an_hour_later["requests"]) == 0 and an_hour_later["usage"]["vendor:v"][-1] == 0.0
    series(TaskEvent(t0 + STEPS * 10, "p", "done", "late", outcome="ok"))  # reuses the slot, old counts gone
    assert series.export(t0 + STEPS * 10)["requests"][-1] == 1

"""The limiter: exact admission instants, no window ever over its quota, the allowance used fully."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synctask import Concurrency, Limiter, LimitError, Quota
from synctask.limits import DAY


def over_limit_windows(sends: list[tuple[float, int]], quota: Quota) -> int:
    """How many windows of ``quota`` hold more than its rate (sends sorted by time)."""
    if quota.clock:
        per_window: dict[int, int] = defaultdict(int)
        for t, w in sends:
            per_window[math.floor(t / quota.per)] += w
        return sum(1 for total in per_window.values() if total > quota.rate)
    times = [t for t, _ in sends]
    prefix = [0]
    for _, w in sends:
        prefix.append(prefix[-1] + w)
    bad = 0
    for t, _ in sends:
        # The window (t - per, t]: the worst window ending at a send.
        end = bisect_right(times, t)
        start = bisect_right(times, t - quota.per)
        if prefix[end] - prefix[start] > quota.rate:
            bad += 1
    return bad


def test_sliding_window_admits_rate_then_waits_exactly_one_window():
    limiter = Limiter()
    limiter.configure("s", [Quota(3, 10.0)])
    gate = limiter.gate(["s"])
    assert [gate.send(1, 0.0) for _ in range(3)] == [None, None, None]
    assert gate.send(1, 0.0) == 10.0
    assert gate.send(1, 9.999) == 10.0
    assert gate.send(1, 10.0) is None


def test_sliding_window_frees_weight_in_send_order():
    limiter = Limiter()
    limiter.configure("s", [Quota(10, 1.0)])
    gate = limiter.gate(["s"], max_weight=6)
    assert gate.send(4, 0.0) is None
    assert gate.send(4, 0.5) is None
    # 8 used; a weight of 6 needs 4 freed: the first send leaves at 1.0.
    assert gate.earliest(6, 0.6) == 1.0
    # a weight of 10 needs both gone: 1.5.
    limiter2 = Limiter()
    limiter2.configure("s", [Quota(10, 1.0)])
    gate2 = limiter2.gate(["s"], max_weight=10)
    gate2.send(4, 0.0)
    gate2.send(4, 0.5)
    assert gate2.earliest(10, 0.6) == 1.5


def test_clock_window_resets_on_the_boundary():
    limiter = Limiter()
    limiter.configure("c", [Quota(2, 60.0, clock=True)])
    gate = limiter.gate(["c"])
    assert gate.send(1, 59.0) is None
    assert gate.send(1, 59.5) is None
    assert gate.send(1, 59.9) == 60.0
    assert gate.send(1, 60.0) is None  # a new minute: full quota again


def test_daily_clock_window_resets_at_local_midnight():
    limiter = Limiter()
    limiter.configure("d", [Quota(1, 86400.0, clock=True, tz="Asia/Shanghai")])
    gate = limiter.gate(["d"])
    # 2026-11-25 12:00 UTC is 20:00 in Shanghai; the next local midnight is 16:00 UTC.
    noon_utc = 1795608000.0
    assert gate.send(1, noon_utc) is None
    assert gate.send(1, noon_utc + 1) == noon_utc + 4 * 3600


def test_scopes_are_reserved_together_or_not_at_all():
    limiter = Limiter()
    limiter.configure("vendor", [Quota(1, 10.0)])
    limiter.configure("dataset", [Quota(5, 10.0)])
    both = limiter.gate(["vendor", "dataset"])
    only_dataset = limiter.gate(["dataset"])
    assert both.send(1, 0.0) is None
    assert both.send(1, 1.0) == 10.0  # the vendor blocks ...
    assert limiter.usage("dataset", 1.0)[0][1] == 1  # ... and the dataset was not charged
    for _ in range(4):
        assert only_dataset.send(1, 1.0) is None
    assert only_dataset.send(1, 1.0) == 10.0


def test_concurrency_cap_waits_for_a_release_not_for_time():
    limiter = Limiter()
    limiter.configure("c", [Concurrency(2)])
    gate = limiter.gate(["c"])
    assert gate.send(1, 0.0) is None
    assert gate.send(1, 0.0) is None
    assert gate.send(1, 0.0) == math.inf
    gate.release()
    assert gate.send(1, 0.0) is None


def test_freeze_blocks_until_its_end_then_limits_apply_again():
    limiter = Limiter()
    limiter.configure("s", [Quota(1, 1.0)])
    gate = limiter.gate(["s"])
    limiter.freeze("s", 30.0)
    assert gate.send(1, 0.0) == 30.0
    assert limiter.frozen_until("s", 10.0) == 30.0
    assert gate.send(1, 30.0) is None
    assert limiter.frozen_until("s", 30.0) is None
    limiter.freeze("s", 5.0)  # an earlier freeze never shortens a longer one
    limiter.freeze("s", 40.0)
    limiter.freeze("s", 35.0)
    assert gate.earliest(1, 31.0) == 40.0


def test_observe_raises_our_count_to_the_vendors_never_lowers_it():
    limiter = Limiter()
    limiter.configure("b", [Quota(1200, 60.0, clock=True)])
    gate = limiter.gate(["b"])
    gate.send(1, 0.0)
    limiter.observe("b", 1199, 1.0, per=60.0)
    assert gate.send(1, 1.0) is None
    assert gate.send(1, 1.0) == 60.0
    limiter.observe("b", 10, 2.0)  # lower than ours: ignored
    assert limiter.usage("b", 2.0)[0][1] == 1200


def test_observe_on_a_sliding_window_counts_the_difference_now():
    limiter = Limiter()
    limiter.configure("s", [Quota(10, 10.0)])
    gate = limiter.gate(["s"])
    gate.send(1, 0.0)
    limiter.observe("s", 10, 5.0)
    assert gate.earliest(1, 5.0) == 10.0  # our own send leaves first
    gate.send(1, 10.0)
    assert gate.earliest(1, 10.0) == 15.0  # then the observed weight at 5.0


def test_observe_says_whether_our_own_quota_over_that_window_now_holds_the_vendor_back():
    limiter = Limiter()
    limiter.configure("v", [Quota(10, 1.0), Quota(1000, 3600.0)])
    assert limiter.observe("v", 10, 0.0, per=1.0) is True  # full at the vendor's count: we wait as it does
    assert limiter.observe("v", 10, 0.0, per=60.0) is False  # no quota over that window
    assert limiter.observe("v", 10, 0.0) is False  # window unknown: a freeze must do
    more = Limiter()
    more.configure("v", [Quota(20, 1.0)])  # configured more generously than the vendor's 10
    assert more.observe("v", 10, 0.0, per=1.0) is False


def test_a_request_in_flight_across_a_clock_boundary_counts_in_both_windows():
    limiter = Limiter()
    limiter.configure("b", [Quota(10, 60.0, clock=True)])
    gate = limiter.gate(["b"])
    for _ in range(10):
        assert gate.try_acquire(1, 59.99) is None
    for _ in range(9):
        gate.settle(1, 59.995)  # answered before the minute turned
    # One is still on its way when the minute turns: the vendor may stamp it in the new minute.
    granted = sum(gate.send(1, 60.02) is None for _ in range(12))
    assert granted == 9
    gate.settle(1, 60.05)  # its answer, late: it stays counted once in the new minute
    assert limiter.usage("b", 60.06)[0][1] == 10
    assert gate.send(1, 120.0) is None  # the next minute starts empty


def test_an_answer_after_the_boundary_is_counted_in_the_new_window_even_if_nobody_asked_meanwhile():
    limiter = Limiter()
    limiter.configure("b", [Quota(2, 60.0, clock=True)])
    gate = limiter.gate(["b"])
    assert gate.try_acquire(1, 59.9) is None
    gate.settle(1, 60.2)
    assert limiter.usage("b", 60.3)[0][1] == 1


def test_weight_above_a_quota_is_refused_when_the_gate_is_made():
    limiter = Limiter()
    limiter.configure("s", [Quota(5, 1.0)])
    with pytest.raises(LimitError, match="weight 6 can never fit"):
        limiter.gate(["s"], max_weight=6)


def test_reconfiguring_keeps_usage_of_unchanged_limits():
    limiter = Limiter()
    limiter.configure("s", [Quota(2, 10.0), Quota(100, 86400.0)])
    gate = limiter.gate(["s"])
    gate.send(1, 0.0)
    gate.send(1, 0.0)
    limiter.configure("s", [Quota(2, 10.0), Concurrency(3)])
    assert limiter.gate(["s"]).earliest(1, 1.0) == 10.0


def test_long_window_usage_survives_export_and_restore():
    first = Limiter()
    first.configure("d", [Quota(100, 86400.0), Quota(50, 86400.0, clock=True), Quota(5, 1.0)])
    gate = first.gate(["d"])
    for i in range(40):
        assert gate.send(1, 1000.0 + i * 2) is None
    records = first.export_usage(2000.0)
    assert {r["per"] for r in records} == {86400.0}  # the 1 s window holds nothing by now

    second = Limiter()
    second.configure("d", [Quota(100, 86400.0), Quota(50, 86400.0, clock=True), Quota(5, 1.0)])
    assert second.restore_usage(records, 2000.0) == 2
    usage = {str(limit): used for limit, used in second.usage("d", 2000.0)}
    assert usage["100 per 1d"] == 40
    assert usage["50 per 1d (clock-aligned)"] == 40
    gate2 = second.gate(["d"])
    for i in range(10):
        assert gate2.send(1, 2000.0 + i) is None
    assert gate2.send(1, 2010.0) == 86400.0  # the daily clock window is full until midnight


def test_restored_sliding_entries_never_expire_earlier_than_the_originals():
    first = Limiter()
    first.configure("d", [Quota(1, 86400.0)])
    first.gate(["d"]).send(1, 100.25)
    second = Limiter()
    second.configure("d", [Quota(1, 86400.0)])
    second.restore_usage(first.export_usage(200.0), 200.0)
    assert second.gate(["d"]).earliest(1, 200.0) >= 100.25 + 86400.0


def test_the_last_minutes_sends_survive_a_restart_to_the_instant():
    first = Limiter()
    first.configure("m", [Quota(3, 60.0)])
    gate = first.gate(["m"])
    for t in (100.25, 100.5, 130.75):
        assert gate.send(1, t) is None
    second = Limiter()
    second.configure("m", [Quota(3, 60.0)])
    assert second.restore_usage(first.export_usage(131.0), 131.0) == 1
    # exact instants, not rounded up: the next send may go when the first one leaves the window
    assert second.gate(["m"]).earliest(1, 131.0) == 160.25


# --- properties ------------------------------------------------------------------------

quotas = st.builds(
    Quota,
    rate=st.integers(1, 20),
    per=st.sampled_from([0.5, 1.0, 3.0, 10.0]),
    clock=st.booleans(),
)


@given(
    limits=st.dictionaries(st.sampled_from(["vendor", "dataset", "node"]), st.lists(quotas, min_size=1, max_size=3),
                           min_size=1),
    tasks=st.lists(
        st.tuples(st.integers(1, 4), st.sets(st.sampled_from(["vendor", "dataset", "node"]), min_size=1),
                  st.floats(0, 2.0)),
        min_size=1, max_size=120,
    ),
)
def test_no_window_ever_holds_more_than_its_quota(limits, tasks):
    """Greedy callers send each task at the instant the limiter names; no window overflows."""
    limiter = Limiter()
    for scope, qs in limits.items():
        limiter.configure(scope, qs)
    sends: dict[str, list[tuple[float, int]]] = defaultdict(list)
    now = 0.0
    for weight, scopes, pause in tasks:
        scopes = sorted(scopes)
        cap = min((q.rate for s in scopes for q in limits.get(s, [])), default=weight)
        weight = min(weight, cap)
        gate = limiter.gate(scopes, weight)
        now += pause
        when = gate.send(weight, now)
        if when is not None:
            assert when > now
            now = when
            assert gate.send(weight, now) is None, "admission must hold at the named instant"
        for scope in scopes:
            sends[scope].append((now, weight))
    for scope, qs in limits.items():
        for quota in qs:
            assert over_limit_windows(sends[scope], quota) == 0, (scope, quota)


@given(
    rate=st.integers(500, 2000),  # weights up to 5 leave under 1% unusable
    per=st.sampled_from([1.0, 10.0, 60.0]),
    weights=st.lists(st.integers(1, 5), min_size=1, max_size=20),
    clock=st.booleans(),
)
def test_long_runs_use_the_allowance_to_within_one_percent(rate, per, weights, clock):
    limiter = Limiter()
    quota = Quota(rate, per, clock=clock)
    limiter.configure("s", [quota])
    gate = limiter.gate(["s"], max_weight=5)
    now, sent, windows = 0.0, 0, 100
    horizon = windows * per
    i = 0
    while True:
        w = weights[i % len(weights)]
        i += 1
        when = gate.send(w, now)
        if when is not None:
            now = when
            if now >= horizon:
                break
            assert gate.send(w, now) is None
        sent += w
    assert sent <= rate * windows + rate  # never above (the first window starts full)
    assert sent >= 0.99 * rate * windows


def test_ten_thousand_tasks_take_the_theoretical_minimum():
    """10,000 tasks under 1,000 per 10 s: the last one goes at exactly 90 s."""
    limiter = Limiter()
    limiter.configure("s", [Quota(1000, 10.0)])
    gate = limiter.gate(["s"])
    now = 0.0
    sends = []
    for _ in range(10_000):
        when = gate.send(1, now)
        if when is not None:
            now = when
            assert gate.send(1, now) is None
        sends.append((now, 1))
    assert now == 90.0
    assert over_limit_windows(sends, Quota(1000, 10.0)) == 0


@given(
    rates=st.dictionaries(st.sampled_from("abcd"), st.integers(1, 5), min_size=1),
    attempts=st.lists(st.tuples(st.sets(st.sampled_from("abcd"), min_size=1), st.integers(1, 3),
                                st.sampled_from([0.0, 0.3, 1.0])), min_size=1, max_size=60),
)
def test_a_task_on_several_scopes_is_counted_on_all_or_none(rates, attempts):
    limiter = Limiter()
    for scope, rate in rates.items():
        limiter.configure(scope, [Quota(rate, 1.0)])
    now = 0.0
    for scopes, weight, step in attempts:
        now += step
        scopes = sorted(scopes)
        weight = min([weight] + [rates[s] for s in scopes if s in rates])
        gate = limiter.gate(scopes, weight)
        before = {s: sum(u for _, u in limiter.usage(s, now)) for s in scopes}
        admitted = gate.send(weight, now) is None
        after = {s: sum(u for _, u in limiter.usage(s, now)) for s in scopes}
        expected = weight if admitted else 0
        assert all(after[s] - before[s] == (expected if s in rates else 0) for s in scopes)


def test_a_request_counts_until_its_answer_began_plus_the_window():
    limiter = Limiter()
    limiter.configure("s", [Quota(3, 1.0)])
    gate = limiter.gate(["s"])
    for _ in range(3):
        assert gate.try_acquire(1, 0.0) is None
    assert gate.earliest(1, 5.0) == math.inf  # all three still on their way: wait for an answer
    gate.settle(1, 0.02)
    gate.settle(1, 0.02)
    gate.settle(1, 0.4)  # a slow answer: the vendor may have stamped it as late as 0.4
    assert gate.earliest(1, 0.5) == pytest.approx(1.02)
    assert gate.send(1, 1.02) is None and gate.send(1, 1.02) is None
    assert gate.earliest(1, 1.02) == pytest.approx(1.4)


def test_answers_out_of_order_keep_the_log_sorted():
    limiter = Limiter()
    limiter.configure("s", [Quota(3, 1.0)])
    gate = limiter.gate(["s"])
    for t in (0.0, 0.1, 0.2):
        assert gate.try_acquire(1, t) is None
    gate.settle(1, 0.5)
    gate.settle(1, 0.25)
    gate.settle(1, 0.3)
    assert gate.earliest(1, 0.6) == pytest.approx(1.25)
    assert gate.send(1, 1.25) is None
    assert gate.earliest(1, 1.25) == pytest.approx(1.3)


def test_usage_exported_while_requests_are_in_flight_counts_them():
    limiter = Limiter()
    limiter.configure("s", [Quota(2, 60.0)])
    gate = limiter.gate(["s"])
    assert gate.try_acquire(1, 10.0) is None and gate.try_acquire(1, 10.0) is None
    records = limiter.export_usage(11.0)
    again = Limiter()
    again.configure("s", [Quota(2, 60.0)])
    again.restore_usage(records, 12.0)
    assert again.gate(["s"]).earliest(1, 12.0) == pytest.approx(71.0)


@given(
    trips=st.lists(st.tuples(st.floats(0, 0.3), st.floats(0, 0.3)), min_size=1, max_size=80),
    rate=st.integers(1, 6),
    per=st.sampled_from([0.5, 1.0]),
    clock=st.booleans(),
)
def test_the_vendor_never_counts_more_than_the_quota_wherever_it_stamps(trips, rate, per, clock):
    """Each request reaches the vendor some time after admission and is stamped there; its answer
    comes back some time later. Settled at its answer, no window of the vendor's stamps ever holds
    more than the rate, however late the stamp within that span."""
    limiter = Limiter()
    quota = Quota(rate, per, clock=clock)
    limiter.configure("s", [quota])
    gate = limiter.gate(["s"])
    now, stamps, answers = 0.0, [], []  # answers: the instants in-flight requests settle

    def settle_until(t):
        for at in sorted(a for a in answers if a <= t):
            gate.settle(1, at)
            answers.remove(at)

    for to_vendor, back in trips:
        settle_until(now)
        while (when := gate.try_acquire(1, now)) is not None:
            nxt = min([when] + answers)  # wake for an answer or for the named instant
            now = max(now, nxt)
            settle_until(now)
        stamps.append((now + to_vendor, 1))
        answers.append(now + to_vendor + back)
    assert over_limit_windows(sorted(stamps), quota) == 0


def test_each_window_is_described_as_a_person_says_it():
    from synctask.limits import WindowUsage

    limiter = Limiter()
    day = Quota(100_000, DAY, clock=True, tz="Asia/Shanghai")
    limiter.configure("vendor:ts", [Quota(50, 1.0), day, Quota(1200, 60.0, clock=True)])
    now = 1_767_312_000.0 + 3600  # 2026-01-02 01:00 UTC, 09:00 in Shanghai
    gate = limiter.gate(["vendor:ts"], 1)
    for _ in range(48):
        assert gate.try_acquire(1, now) is None
    texts = [w.describe() for w in limiter.windows("vendor:ts", now)]
    assert texts[0] == "48 of 50 in the last 1s"
    assert texts[1] == "48 of 100,000 today, resets 00:00 Asia/Shanghai"
    assert texts[2] == "48 of 1,200 this 1m window, resets 01:01:00 UTC"
    assert WindowUsage(Concurrency(5), 3, None).describe() == "3 of 5 in flight"
    assert WindowUsage(Quota(10, 7 * DAY, clock=True), 3, 1_767_744_000.0).describe() == (
        "3 of 10 this 1w, resets 2026-01-07 00:00 UTC")


def test_time_for_lets_what_is_left_go_at_once_and_the_rest_at_each_windows_rate():
    limiter = Limiter()
    limiter.configure("s", [Quota(10, 1.0)])
    limiter.configure("c", [Quota(100, DAY, clock=True)])
    gate = limiter.gate(["s", "c"], 1)
    for _ in range(10):
        assert gate.try_acquire(1, 0.0) is None
    assert limiter.time_for(["s"], 25, 0.0) == 2.5  # the sliding window is full: 25 at 10 per second
    assert limiter.time_for(["c"], 90, 0.0) == 0.0  # the day has room for them
    assert limiter.time_for(["c"], 120, 3600.0) == DAY - 3600.0  # 90 today, 30 after midnight
    assert limiter.time_for(["c"], 300, 0.0) == 3 * DAY  # 90 today, 100 and 100, then 10 as day 4 begins
    assert limiter.time_for(["s", "c"], 25, 0.0) == 2.5 and limiter.time_for(["nothing"], 5, 0.0) == 0.0


def test_a_lease_caps_what_a_scope_admits_until_the_next_save():
    from synctask import Limiter, Quota

    lim = Limiter()
    lim.configure("vendor:v", [Quota(1000, 1.0)])
    lim.configure("vendor:daily", [Quota(100_000, 86400.0)])
    lim.configure("vendor:slow", [Quota(10, 1.0)])
    assert lim.next_allowances(3.0) == {"vendor:v": 10, "vendor:daily": 10, "vendor:slow": 10}  # a floor at first
    lim.lease(3.0, {"vendor:v": 100, "vendor:slow": 100})
    gate, slow = lim.gate(["vendor:v"]), lim.gate(["vendor:slow"])
    for _ in range(80):
        assert gate.send(1, 1.0) is None
    for at in range(25):
        slow.send(1, float(at) / 10)
    allowances = lim.next_allowances(3.0)
    assert allowances["vendor:v"] == 160  # twice what it used under the last lease
    assert allowances["vendor:slow"] == 40  # never more than its window allows in the lease
    lim.lease(13.0, {"vendor:v": 5})
    assert [gate.send(1, 10.0) for _ in range(5)] == [None] * 5
    assert gate.try_acquire(1, 10.0) == math.inf  # the lease is spent: wait for the next save
    lim.lease(16.0, {"vendor:v": 5})
    assert gate.try_acquire(1, 11.0) is None
    assert gate.try_acquire(1, 16.0) == math.inf  # a lease that ran out admits nothing


def test_a_restart_counts_what_its_predecessor_may_have_sent_after_its_last_save():
    from synctask import Limiter, Quota

    def limiter():
        lim = Limiter()
        lim.configure("vendor:v", [Quota(50, 1.0)])
        lim.configure("vendor:c", [Quota(50, 1.0, clock=True)])
        return lim

    first = limiter()
    allowances = {"vendor:v": 100, "vendor:c": 100}
    records = [*first.export_usage(100.0), first.lease_record(103.0, allowances)]
    # Killed; a new process restarts at 100.5: whatever was sent is stamped by 101.5 at the latest.
    second = limiter()
    second.restore_usage(records, 100.5)
    sliding, clock = second.gate(["vendor:v"]), second.gate(["vendor:c"])
    assert sliding.try_acquire(1, 100.6) == pytest.approx(102.5)  # 100.5 + 1 s cushion + the window
    assert clock.try_acquire(1, 100.6) == 101.0  # this clock second is full,
    assert clock.try_acquire(1, 101.0) == 102.0  # and so is the next: a send may be stamped in it too
    assert clock.try_acquire(1, 102.0) is None
    # A process that ended cleanly promised nothing more: a restart may go at once.
    third = limiter()
    third.restore_usage([*first.export_usage(100.0), first.lease_record(100.0, {})], 100.5)
    assert third.gate(["vendor:v"]).try_acquire(1, 100.6) is None


def test_crash_restart_against_a_strict_vendor_stays_under_its_limit():
    """kill -9 of `synctask run` at a random instant, then the same command at once, against the
    simulator in its own process (50 per sliding second, and per clock second): 0 over."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).parent.parent / "bench" / "crash_restart.py"
    shown = subprocess.run([sys.executable, str(bench), "--trials", "1", "--windows", "sliding,clock", "--json"],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    results = json.loads(shown.stdout.strip().splitlines()[-1])
    for window, runs in results.items():
        assert all(run["violations"] == 0 for run in runs), (window, runs)
        assert all(run["served"] > 100 for run in runs), (window, runs)  # it did send, before and after

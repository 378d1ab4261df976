"""Learning limits nobody wrote down, on a fake clock: a strict vendor whose limit is hidden
(sliding 50 per 1s, 100 per 10s, a clock minute), one that states it in headers, and one that
lowers its limit mid-run. The real limiter admits what the learner says; the vendor counts
every request over its limit."""

from __future__ import annotations

import heapq
import math
import random

import pytest

from synctask.learning import Learned, LimitLearner, parse_rate
from synctask.limits import Limiter
from synctask.windows import Concurrency, Quota

SCOPE = "vendor:v"


class HiddenVendor:
    """Counts arrivals; refuses one over its limit with a Retry-After in whole seconds."""

    def __init__(self, rate: int, per: float, clock: bool = False) -> None:
        self.rate, self.per, self.clock = rate, per, clock
        self.admitted: list[float] = []
        self.refused = 0

    def arrive(self, t: float) -> float | None:
        """None: served; else the Retry-After it answers."""
        if self.clock:
            start = math.floor(t / self.per) * self.per
            inside = [a for a in self.admitted[-self.rate - 1:] if a >= start]
            if len(inside) >= self.rate:
                self.refused += 1
                return float(math.ceil(start + self.per - t))
        else:
            inside = [a for a in self.admitted[-self.rate - 1:] if a > t - self.per]
            if len(inside) >= self.rate:
                self.refused += 1
                return float(max(math.ceil(inside[-self.rate] + self.per - t), 1))
        self.admitted.append(t)
        return None


def run(vendor: HiddenVendor, learner: LimitLearner, seconds: float, latency: float | random.Random = 0.03,
        in_flight: int = 4, stated: tuple[int, float] | None = None, start: float = 0.0) -> dict[str, float]:
    """Send as fast as the learner lets, from ``start`` for ``seconds`` of fake time; what happened."""
    limiter = Limiter()
    limiter.configure(SCOPE, learner.limits())
    gate = limiter.gate([SCOPE])
    now, answers, flying, next_try = start, [], 0, start
    seconds += start
    reached = None

    def relimit(at: float) -> None:
        nonlocal gate
        limiter.configure(SCOPE, learner.limits())
        for quota in learner.limits():
            if isinstance(quota, Quota):
                limiter.observe(SCOPE, learner.recent(quota.per, at), at, quota.per)
        gate = limiter.gate([SCOPE])

    relimit(start)  # what was sent before (an earlier run's usage, kept in the state) counts
    while now < seconds:
        while flying < in_flight and next_try <= now:
            wake = gate.try_acquire(1, now)
            if wake is not None:
                next_try = wake
                break
            ticket = learner.sent(now)
            flying += 1
            took = latency.uniform(0.01, 0.25) if isinstance(latency, random.Random) else latency
            heapq.heappush(answers, (now + took, now, ticket))
        if reached is None:
            window = vendor.per
            done = sum(1 for a in vendor.admitted[-vendor.rate:] if a > now - window)
            if done >= 0.9 * vendor.rate:
                reached = now
        soonest = answers[0][0] if answers else math.inf
        step = min(soonest, next_try if next_try > now else math.inf, seconds)
        if step == math.inf:
            break
        now = max(step, now)
        while answers and answers[0][0] <= now:
            next_try = min(next_try, now)  # an answer frees room (settled, a slot back): ask again
            answered, sent, ticket = heapq.heappop(answers)
            flying -= 1
            gate.settle(1, answered)
            gate.release()
            retry_after = vendor.arrive(sent + (answered - sent) / 2)
            if retry_after is not None:
                limiter.freeze(SCOPE, answered + retry_after)
                if learner.refused(answered, sent, retry_after, "HTTP 429", ticket):
                    relimit(answered)
            elif stated is not None and learner.stated(stated[0], stated[1], answered, "the RateLimit-Policy header"):
                relimit(answered)
            elif learner.clean(answered, sent):
                relimit(answered)
    ideal = vendor.rate / vendor.per
    served = sum(1 for a in vendor.admitted if a >= start)
    return {"violations": vendor.refused, "reached": reached - start if reached is not None else math.inf,
            "pace": served / (seconds - start) / ideal}


@pytest.mark.parametrize(("rate", "per", "clock"), [
    (50, 1.0, False), (100, 10.0, False), (600, 60.0, True), (20, 1.0, False), (7, 1.0, False), (300, 60.0, False),
    (1000, 3600.0, False)])
def test_a_hidden_limit_is_learned_exactly_with_few_refusals(rate, per, clock):
    vendor = HiddenVendor(rate, per, clock)
    learner = LimitLearner()
    result = run(vendor, learner, seconds=120.0)
    [learned] = learner.limits()
    assert (learned.rate, learned.per) == (rate, per), learner.describe()
    assert not learned.clock or clock  # a clock window may read as sliding (the safe side), never the reverse
    assert result["violations"] <= 5, result  # the first overshoot's requests in flight, then none
    assert result["reached"] <= 13.0, result  # 90% of the true limit
    late = vendor.refused
    again = run(vendor, LimitLearner(learned=list(learner.learned.values())), seconds=120.0, start=200.0 + per)
    assert vendor.refused == late and again["pace"] >= 0.95, again  # the next run: at the limit from the start


def test_a_stated_limit_is_adopted_from_the_first_answer_with_no_refusal():
    vendor = HiddenVendor(50, 1.0)
    learner = LimitLearner()
    result = run(vendor, learner, seconds=30.0, stated=(50, 1.0))
    assert result["violations"] == 0 and learner.limits() == [Quota(50, 1.0)]
    assert "learned: 50 per 1s (from the RateLimit-Policy header)" in learner.describe()
    assert result["pace"] >= 0.9


def test_a_vendor_that_lowers_its_limit_is_followed_down():
    vendor = HiddenVendor(50, 1.0)
    learner = LimitLearner()
    run(vendor, learner, seconds=60.0)
    assert learner.limits() == [Quota(50, 1.0)]
    vendor.rate = 30
    before = vendor.refused
    run(vendor, learner, seconds=60.0, start=60.0)
    assert learner.limits()[0].rate <= 30 and vendor.refused - before <= 8


def test_a_cap_bounds_what_is_learned_and_a_rate_reads_as_people_write_it():
    learner = LimitLearner(cap=parse_rate("20 per 1s"))
    learner.stated(50, 1.0, 0.0, "the RateLimit-Policy header")
    assert learner.limits() == [Quota(20, 1.0)]
    assert parse_rate("100/10s") == Quota(100, 10.0)
    with pytest.raises(ValueError, match="like '50 per 1s'"):
        parse_rate("fast")


@pytest.mark.parametrize(("rate", "per"), [(50, 1.0), (100, 10.0)])
def test_noisy_latency_still_learns_a_safe_limit(rate, per):
    vendor = HiddenVendor(rate, per)
    learner = LimitLearner()
    result = run(vendor, learner, seconds=120.0, latency=random.Random(7), in_flight=8)
    [learned] = learner.limits()
    assert learned.per == per and 0.85 * rate <= learned.rate <= rate, learner.describe()
    assert result["violations"] <= 10, result
    late = vendor.refused
    run(vendor, learner, seconds=60.0, latency=random.Random(8), in_flight=8, start=120.0)
    assert vendor.refused - late <= 1


def test_a_vendor_that_raises_its_stated_limit_is_followed_up():
    vendor = HiddenVendor(50, 1.0)
    learner = LimitLearner()
    run(vendor, learner, seconds=20.0, stated=(50, 1.0))
    vendor.rate = 80
    result = run(vendor, learner, seconds=20.0, stated=(80, 1.0), start=20.0, in_flight=8)
    assert learner.limits() == [Quota(80, 1.0)] and result["violations"] == 0


@pytest.mark.parametrize(("rate", "per", "latency"), [(50, 1.0, 0.01), (50, 1.0, 0.1), (100, 10.0, 0.03),
                                                      (600, 60.0, 0.05), (1000, 3600.0, 0.03)])
def test_the_probe_keeps_only_what_its_pace_needs_in_flight_so_64_workers_overshoot_little(rate, per, latency):
    """64 workers ready at once: a probe that let them all go would put dozens over at the first
    overshoot. It starts with one in flight and lets in what its pace needs at the latency seen."""
    learner = LimitLearner()
    assert learner.limits() == [Quota(2, 1.0), Concurrency(1)]
    vendor = HiddenVendor(rate, per)
    result = run(vendor, learner, seconds=60.0, latency=latency, in_flight=64)
    assert [(q.rate, q.per) for q in learner.limits()] == [(rate, per)], learner.describe()
    assert result["violations"] <= 5, result
    assert result["reached"] <= 3.0, result  # doubling each time its room is used, not each second


def test_the_probe_lets_more_in_flight_as_answers_slow_down():
    learner = LimitLearner(start=Quota(40, 1.0))
    now = 0.0
    for _ in range(20):  # answers take 0.2 s: 40 a second needs 8 in flight, 12 with the slack
        learner.sent(now)
        learner.clean(now + 0.2, now)
        now += 0.025
    assert learner.in_flight() == 12 and learner.limits()[-1] == Concurrency(12)
    assert "probing at 40 per 1s, 12 in flight" in learner.describe()


def test_a_vendor_that_raises_a_limit_it_never_states_is_found_out_by_trying_a_little_more():
    vendor = HiddenVendor(10, 1.0)
    learner = LimitLearner()
    run(vendor, learner, seconds=100.0)
    assert learner.limits() == [Quota(10, 1.0)]
    vendor.rate = 20
    before = vendor.refused
    run(vendor, learner, seconds=3000.0, start=100.0)
    assert learner.limits() == [Quota(20, 1.0)], learner.describe()  # 11, 13, 18, then 32: refused at 20
    assert vendor.refused - before <= 2, vendor.refused - before
    assert [r["rate"] for r in learner.records()] == [20]


def test_tries_of_more_on_a_vendor_that_never_raises_cost_a_refusal_each_and_grow_rare():
    vendor = HiddenVendor(10, 1.0)
    learner = LimitLearner()
    run(vendor, learner, seconds=100.0)
    before = vendor.refused
    run(vendor, learner, seconds=6 * 3600.0, start=100.0)
    tries = vendor.refused - before
    assert 1 <= tries <= 5, tries  # after 10 min, then 20, 40, 80, 160: five in six hours at most
    assert learner.limits() == [Quota(10, 1.0)] and [r["rate"] for r in learner.records()] == [10]
    kept = LimitLearner(learned=[Learned.from_record(r) for r in learner.records()])
    assert kept.limits() == [Quota(10, 1.0)]


@pytest.mark.parametrize("latency", [0.3, 0.5, 0.8])
def test_a_slow_vendor_does_not_stall_the_probe(latency):
    """The limiter counts a request until its answer plus the window: with answers 0.3-0.8 s
    away, a 1-s probe never fills 80% of a second. It still grows, finds the limit exactly (the
    vendor's wait read from any instant between send and answer), and runs at what the limiter
    allows at that latency."""
    vendor = HiddenVendor(20, 1.0)
    learner = LimitLearner()
    result = run(vendor, learner, seconds=120.0, latency=latency, in_flight=64)
    assert [(q.rate, q.per) for q in learner.limits()] == [(20, 1.0)], learner.describe()
    assert result["pace"] >= 0.9 / (1.0 + latency), result
    assert result["violations"] <= 10, result  # the overshoot's requests in flight: about rate x latency


def ray_order(relocate: bool, slow: float) -> LimitLearner:
    """24 requests admitted 40 ms apart, half sent at once by one node, half ``slow`` seconds
    later by a busy one; a strict 12 per sliding second counts them as they reach it. Every
    answer is in before the refusals are explained (``Learners`` waits for that on Ray)."""
    vendor, learner = HiddenVendor(12, 1.0), LimitLearner()
    admitted = [i * 0.04 for i in range(24)]
    reached = [at + (0.05 if i % 2 == 0 else slow) for i, at in enumerate(admitted)]
    tickets = [learner.sent(at) for at in admitted]
    order = sorted(range(24), key=lambda i: reached[i])
    waits = {i: vendor.arrive(reached[i]) for i in order}
    for i in order:
        if relocate:
            learner.reached(admitted[i], reached[i])
        if waits[i] is None:
            learner.clean(reached[i] + 0.01, admitted[i])
    refused = sorted((reached[i] if relocate else admitted[i], i) for i in order if waits[i] is not None)
    assert refused
    for _, i in refused:
        if relocate:
            learner.refused(2.0, reached[i], waits[i], "HTTP 429", admitted=admitted[i])
        else:
            learner.refused(2.0, admitted[i], waits[i], "HTTP 429", tickets[i])
    return learner


@pytest.mark.parametrize("slow", [0.3, 0.6, 0.9])
def test_requests_that_reach_the_vendor_in_another_order_are_read_in_the_vendor_order(slow):
    """On Ray a node may send a request seconds after the master admitted it: counted at its
    admission, the refused one seems to find fewer before it than the vendor did."""
    assert ray_order(relocate=True, slow=slow).limits() == [Quota(12, 1.0)]
    [misread] = ray_order(relocate=False, slow=slow).limits()  # (what admission times alone say)
    assert isinstance(misread, Quota) and misread.rate < 12


def test_a_clock_window_is_learned_only_when_the_wait_tells_it_from_a_sliding_one():
    """Sends a refusal can be explained by in a clock second but not a sliding one (noisy send
    times can do that): with a wait of 1 s either fits, and the sliding window, which holds
    under both, is learned; a clock minute's wait (the room left to its boundary) tells it."""
    learner = LimitLearner()
    for i in range(9):
        learner.sent(0.86 + i * 0.004)  # just out of the refused request's sliding second
    for i in range(10):
        learner.sent(1.0 + i * 0.09)
    ticket = learner.sent(1.9)
    assert learner.explain(1.9, 1.9, 1.0, ticket) == (1.0, 10, False)
    assert learner.refused(1.9, 1.9, 1.0, "HTTP 429", ticket) and learner.limits() == [Quota(10, 1.0)]

    minute = LimitLearner()
    for second in range(5, 15):
        minute.sent(float(second))
    ticket = minute.sent(50.0)
    assert minute.explain(50.0, 50.0, 10.0, ticket) == (60.0, 10, True)  # room back at 60 s, as said


def test_a_wait_in_whole_seconds_that_fits_several_windows_within_a_second_teaches_the_shortest():
    """Sends out of order (as from several Ray nodes): no window explains the refusal within its
    wait, and the wait (3 s, whole seconds) fits both a sliding second and a ten-second window
    within a second of each other. The shortest is learned: a ten-second window that happened to
    fit would be learned as a far slower limit (seen on Ray: "37 per 10s" for 40 per 1s)."""
    sends = [8.92, 10.001, 12.793, 16.349, 16.449, 17.214, 17.429, 17.903, 18.098, 18.222, 18.34, 18.483, 18.492,
             18.5, 18.532, 18.54, 18.543, 18.598, 18.634, 18.836, 18.844, 18.887, 18.898]
    learner = LimitLearner()
    for at in sends:
        learner.sent(at)
    ticket = learner.sent(19.16)
    window, _, _ = learner.explain(19.16, 19.992, 3.0, ticket)
    assert window == 1.0

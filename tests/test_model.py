"""Model: derived task ids, the transition tables, secrets that never print."""

from datetime import date

import pytest

from synctask import IllegalTransition, PlanState, Secret, SyncTask, TaskState, task_id
from synctask.model import PLAN_TRANSITIONS, TASK_TRANSITIONS, transition


def test_task_id_is_derived_from_plan_and_params_in_any_key_order():
    a = task_id("daily", {"code": "A", "day": date(2024, 1, 1)})
    b = task_id("daily", {"day": date(2024, 1, 1), "code": "A"})
    assert a == b and a.startswith("daily:")
    assert a != task_id("daily", {"code": "B", "day": date(2024, 1, 1)})
    assert a != task_id("other", {"code": "A", "day": date(2024, 1, 1)})


def test_task_id_is_stable_across_releases():
    # Pinned: a change here would make every user's finished work look unfinished.
    assert task_id("p", {"i": 1}) == "p:" + __import__("hashlib").blake2b(b'{"i":1}', digest_size=10).hexdigest()


def test_terminal_task_states_have_no_way_out():
    for state in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED):
        assert TASK_TRANSITIONS[state] == frozenset()


def test_illegal_transitions_raise_with_both_states():
    task = SyncTask("p", {"i": 1})
    task.move(TaskState.RUNNING)
    task.move(TaskState.DONE)
    with pytest.raises(IllegalTransition, match="cannot go from 'done' to 'running'"):
        task.move(TaskState.RUNNING)


def test_every_state_has_a_row_in_its_table():
    assert set(TASK_TRANSITIONS) == set(TaskState)
    assert set(PLAN_TRANSITIONS) == set(PlanState)
    assert transition("plan", PlanState.PAUSED, PlanState.RUNNING) is PlanState.RUNNING


def test_secret_shows_stars_in_every_spelling():
    secret = Secret("tok-123", "env X")
    for text in (str(secret), repr(secret), f"{secret}", f"{secret!r}", "%s" % secret, str([secret])):
        assert "tok-123" not in text
    assert secret.reveal() == "tok-123"


def test_task_ids_are_the_ids_state_files_already_hold():
    """Ids are stored: the fast encoding must give exactly the text the plain encoder gives."""
    import hashlib
    import json
    from datetime import datetime

    def reference(plan, params):
        blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=lambda v: v.isoformat()
                          if isinstance(v, (date, datetime)) else str(v))
        return f"{plan}:{hashlib.blake2b(blob.encode(), digest_size=10).hexdigest()}"

    cases = [{"i": 1}, {"symbol": "ÄPFEL", "day": date(2024, 1, 1), "x": 1.5, "n": None, "b": True},
             {"nested": {"b": [1, 2], "a": "z"}, "when": datetime(2024, 1, 1, 9, 30)}, {}]
    for params in cases:
        assert task_id("p", params) == reference("p", params)
    assert task_id("daily", {"code": "A", "day": date(2024, 1, 1)}) == "daily:" + hashlib.blake2b(
        b'{"code":"A","day":"2024-01-01"}', digest_size=10).hexdigest()

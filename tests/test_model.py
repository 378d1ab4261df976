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

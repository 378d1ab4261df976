"""Parameter grids: lazy ranges and products, templates on the logical time."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synctask import ParamGrid

LOGICAL = datetime(2026, 11, 25, 18, 30, tzinfo=UTC)


def test_lists_and_a_date_range_make_a_cartesian_product_first_key_outermost():
    grid = ParamGrid.from_spec({
        "code": ["A", "B"],
        "day": {"from": "2024-01-30", "to": "2024-02-02", "step": "1d"},
    }).bind(LOGICAL)
    assert len(grid) == 8
    rows = list(grid)
    assert rows[0] == {"code": "A", "day": date(2024, 1, 30)}
    assert rows[3] == {"code": "A", "day": date(2024, 2, 2)}
    assert rows[4]["code"] == "B"


def test_range_with_weekly_step_and_format_sends_strings():
    grid = ParamGrid.from_spec({"d": {"from": "2024-01-01", "to": "2024-01-31", "step": "1w", "format": "%Y%m%d"}})
    assert [r["d"] for r in grid.bind(LOGICAL)] == ["20240101", "20240108", "20240115", "20240122", "20240129"]


def test_datetime_range_by_hours_and_integer_range():
    grid = ParamGrid.from_spec({
        "t": {"from": "2024-01-01T00:00", "to": "2024-01-01T03:00", "step": "1h"},
        "page": {"from": 1, "to": 3},
    }).bind(LOGICAL)
    assert len(grid) == 12
    assert list(grid)[-1] == {"t": datetime(2024, 1, 1, 3), "page": 3}


def test_toml_native_dates_work_as_range_endpoints():
    grid = ParamGrid.from_spec({"d": {"from": date(2024, 1, 1), "to": date(2024, 1, 3)}}).bind(LOGICAL)
    assert len(grid) == 3


def test_templates_resolve_on_the_logical_time():
    grid = ParamGrid.from_spec({
        "trade_date": "{yesterday:%Y%m%d}",
        "since": "{now-1h}",
        "label": "run for {today}",
        "window": {"from": "{today-2d}", "to": "{yesterday}"},
    }).bind(LOGICAL)
    rows = list(grid)
    assert [r["window"] for r in rows] == [date(2026, 11, 23), date(2026, 11, 24)]
    assert rows[0]["trade_date"] == "20261124"
    assert rows[0]["since"] == datetime(2026, 11, 25, 17, 30, tzinfo=UTC)
    assert rows[0]["label"] == "run for 2026-11-25"


def test_unknown_template_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="unknown template '{yestrday}'.*today"):
        ParamGrid.from_spec({"d": "{yestrday}"})


@pytest.mark.parametrize("spec, message", [
    ({"d": []}, "empty list"),
    ({"d": {"from": "2024-01-01"}}, "from and to required"),
    ({"d": {"from": "2024-01-01", "to": "soon"}}, "range endpoint"),
    ({"d": {"from": 1, "to": 5, "step": 0}}, "at least 1"),
    ({"d": {"from": "2024-01-01", "to": "2024-02-01", "step": "1h"}}, "whole days"),
])
def test_bad_grid_values_say_what_is_expected(spec, message):
    with pytest.raises(ValueError, match=message):
        ParamGrid.from_spec(spec).bind(LOGICAL)


def test_ten_million_combinations_cost_nothing_until_iterated():
    grid = ParamGrid.from_spec({"a": {"from": 1, "to": 10_000}, "b": {"from": 1, "to": 1_000}}).bind(LOGICAL)
    assert len(grid) == 10_000_000
    assert next(iter(grid.iter_from(9_999_999))) == {"a": 10_000, "b": 1_000}


@given(sizes=st.lists(st.integers(1, 4), min_size=0, max_size=4), data=st.data())
def test_iteration_from_any_position_matches_itertools_product(sizes, data):
    spec = {f"k{i}": list(range(n)) for i, n in enumerate(sizes)}
    grid = ParamGrid.from_spec(spec).bind(LOGICAL)
    expected = [dict(zip(spec, combo)) for combo in itertools.product(*spec.values())]
    start = data.draw(st.integers(0, len(expected)))
    assert len(grid) == len(expected)
    assert list(grid.iter_from(start)) == expected[start:]

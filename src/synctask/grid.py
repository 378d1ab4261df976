"""Parameter grids: the cartesian product of each parameter's values, expanded lazily.

A plan's ``params`` maps each name to one of:

* a scalar: ``adjust = "qfq"``;
* a list: ``ts_code = ["000001.SZ", "600000.SH"]``;
* a range, inclusive: ``{ from = "2024-01-01", to = "2024-03-31", step = "1d" }`` over dates,
  datetimes (``step = "1h"``) or integers (``step = 1``), with an optional ``format`` (strftime)
  to send strings;
* a template on the run's logical time: ``"{yesterday}"``, ``"{today-7d:%Y%m%d}"``, ``"{now-1h}"``.
  Names: ``now``, ``today``, ``yesterday``, ``tomorrow``; an offset ``+N``/``-N`` with a unit
  (s, m, h, d, w); a strftime format after ``:``. Templates may be range endpoints.

Nothing is materialised: ranges are index arithmetic and the product is an odometer, so a grid of
ten million combinations costs a few objects, and ``len()`` is a multiplication.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Union

from .units import UNITS, parse_duration

__all__ = ["ParamGrid", "BoundGrid", "Range", "Template", "TemplateError"]

_TEMPLATE = re.compile(
    r"\{(?P<name>now|today|yesterday|tomorrow)"
    r"(?:(?P<sign>[+-])(?P<amount>\d+)(?P<unit>ms|s|m|h|d|w))?"
    r"(?::(?P<fmt>[^{}]*))?\}"
)
_ANY_BRACE = re.compile(r"\{[^{}]*\}")


class TemplateError(ValueError):
    """A ``{...}`` in a parameter that is not a known template."""


@dataclass(frozen=True)
class Template:
    """A string with ``{today-1d:%Y%m%d}``-style placeholders, resolved on a run's logical time."""

    text: str

    def __post_init__(self) -> None:
        for brace in _ANY_BRACE.finditer(self.text):
            if not _TEMPLATE.fullmatch(brace.group(0)):
                raise TemplateError(
                    f"unknown template {brace.group(0)!r}; use now, today, yesterday or tomorrow, "
                    "with an optional offset and format, e.g. '{today-7d:%Y%m%d}'"
                )

    @staticmethod
    def is_template(text: str) -> bool:
        return _ANY_BRACE.search(text) is not None

    def resolve(self, logical_time: datetime) -> Any:
        """The value at ``logical_time``: a date/datetime when the text is one bare placeholder,
        else the text with each placeholder formatted."""
        whole = _TEMPLATE.fullmatch(self.text)
        if whole and whole.group("fmt") is None:
            return _evaluate(whole, logical_time)
        return _TEMPLATE.sub(lambda m: _format(m, logical_time), self.text)


def _evaluate(match: re.Match[str], logical_time: datetime) -> date | datetime:
    name = match.group("name")
    base: date | datetime
    if name == "now":
        base = logical_time
    else:
        shift = {"today": 0, "yesterday": -1, "tomorrow": 1}[name]
        base = logical_time.date() + timedelta(days=shift)
    if match.group("amount"):
        seconds = int(match.group("amount")) * UNITS[match.group("unit")]
        delta = timedelta(seconds=seconds if match.group("sign") == "+" else -seconds)
        if isinstance(base, datetime):
            base = base + delta
        else:
            base = base + timedelta(days=math.floor(delta.total_seconds() / 86400))
    return base


def _format(match: re.Match[str], logical_time: datetime) -> str:
    value = _evaluate(match, logical_time)
    fmt = match.group("fmt")
    return value.strftime(fmt) if fmt else value.isoformat()


Endpoint = Union[int, date, datetime, Template]


@dataclass(frozen=True)
class Range:
    """An inclusive range ``start..end`` by ``step`` over ints, dates or datetimes."""

    start: Endpoint
    end: Endpoint
    step: float | int  # seconds for dates and datetimes, a count for ints
    format: str | None = None

    def bind(self, logical_time: datetime) -> _RangeSeq:
        start = self.start.resolve(logical_time) if isinstance(self.start, Template) else self.start
        end = self.end.resolve(logical_time) if isinstance(self.end, Template) else self.end
        return _RangeSeq.make(start, end, self.step, self.format)


class _RangeSeq(Sequence[Any]):
    """A range as a lazy sequence: ``seq[i]`` is computed, nothing is stored."""

    __slots__ = ("start", "step", "size", "fmt", "kind")

    def __init__(self, start: Any, step: Any, size: int, fmt: str | None, kind: str) -> None:
        self.start, self.step, self.size, self.fmt, self.kind = start, step, size, fmt, kind

    @classmethod
    def make(cls, start: Any, end: Any, step: float | int, fmt: str | None) -> _RangeSeq:
        for value in (start, end):
            if isinstance(value, bool) or not isinstance(value, (int, date)):
                raise ValueError(f"a range's from and to must be dates, datetimes or integers, got {value!r} "
                                 "(a template endpoint takes no format: '{today-1d}', with the range's format key "
                                 "for how values are written)")
        if isinstance(start, int) != isinstance(end, int):
            raise ValueError(f"a range's from and to must both be dates, datetimes or integers, got "
                             f"{_kind(start)} {start} and {_kind(end)} {end}")
        if isinstance(start, int) and isinstance(end, int):
            step = int(step)
            count = max((end - start) // step + 1, 0)
            return cls(start, step, count, fmt, "int")
        if isinstance(start, datetime) or isinstance(end, datetime):
            start, end = _as_datetime(start), _as_datetime(end)
            count = max(math.floor((end - start).total_seconds() / step + 1e-9) + 1, 0)
            return cls(start, timedelta(seconds=step), count, fmt, "datetime")
        days = step / 86400
        if days != int(days) or days < 1:
            raise ValueError(f"a range of dates needs a step of whole days, got {step:g}s")
        count = max((end - start).days // int(days) + 1, 0)
        return cls(start, timedelta(days=int(days)), count, fmt, "date")

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        if not -self.size <= index < self.size:
            raise IndexError(index)
        if index < 0:
            index += self.size
        value = self.start + self.step * index
        return value.strftime(self.fmt) if self.fmt and self.kind != "int" else value


def _kind(value: Any) -> str:
    if isinstance(value, datetime):
        return "the datetime"
    if isinstance(value, date):
        return "the date"
    return "the integer" if isinstance(value, int) else "the value"


def _as_datetime(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day)


Dimension = Union[list[Any], Range, Template, Any]


class ParamGrid:
    """A plan's parameter grid, unbound: templates wait for a run's logical time."""

    def __init__(self, dims: Mapping[str, Dimension]) -> None:
        self.dims = dict(dims)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ParamGrid:
        """Parse plan-file values (lists, ``{from, to, step, format}`` tables, template strings)."""
        dims: dict[str, Dimension] = {}
        for name, value in spec.items():
            dims[name] = _dimension(name, value)
        return cls(dims)

    def bind(self, logical_time: datetime | None = None) -> BoundGrid:
        """Resolve templates for a run whose logical time is ``logical_time`` (default: now, UTC)."""
        when = logical_time or datetime.now(UTC)
        keys: list[str] = []
        seqs: list[Sequence[Any]] = []
        for name, dim in self.dims.items():
            keys.append(name)
            if isinstance(dim, Range):
                seqs.append(dim.bind(when))
            elif isinstance(dim, Template):
                seqs.append((dim.resolve(when),))
            elif isinstance(dim, list):
                seqs.append([v.resolve(when) if isinstance(v, Template) else v for v in dim])
            else:
                seqs.append((dim,))
        return BoundGrid(keys, seqs)

    @property
    def rolling(self) -> list[str]:
        """The ranges whose end follows the logical time (``to = "{today}"``): each run's grid
        reaches further, and what an earlier run fetched is there again."""
        return [name for name, dim in self.dims.items() if isinstance(dim, Range) and isinstance(dim.end, Template)]

    @property
    def uses_templates(self) -> bool:
        def has(d: Any) -> bool:
            if isinstance(d, Template):
                return True
            if isinstance(d, Range):
                return isinstance(d.start, Template) or isinstance(d.end, Template)
            return isinstance(d, list) and any(isinstance(v, Template) for v in d)

        return any(has(d) for d in self.dims.values())


def _dimension(name: str, value: Any) -> Dimension:
    if isinstance(value, list):
        if not value:
            raise ValueError("an empty list gives no tasks; remove the parameter or add values")
        return [_scalar(v) for v in value]
    if isinstance(value, Mapping):
        unknown = set(value) - {"from", "to", "step", "format"}
        if unknown or "from" not in value or "to" not in value:
            raise ValueError(
                "a range is a table { from = ..., to = ..., step = ..., format = ... } "
                f"(from and to required), got keys {sorted(value)}"
            )
        start, end = _endpoint(value["from"]), _endpoint(value["to"])
        is_int = isinstance(start, int) and isinstance(end, int)
        raw_step = value.get("step", 1 if is_int else "1d")
        if is_int:
            if not isinstance(raw_step, int) or isinstance(raw_step, bool) or raw_step < 1:
                raise ValueError(f"an integer range needs a whole step of at least 1, got {raw_step!r}")
            step: float | int = raw_step
        else:
            step = parse_duration(raw_step)
            if step <= 0:
                raise ValueError(f"step must be positive, got {raw_step!r}")
        return Range(start, end, step, value.get("format"))
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, str) and Template.is_template(value):
        return Template(value)
    return value


def _endpoint(value: Any) -> Endpoint:
    if isinstance(value, bool):
        raise ValueError(f"a range endpoint cannot be a boolean, got {value!r}")
    if isinstance(value, (int, date)):
        return value
    if isinstance(value, str):
        if Template.is_template(value):
            return Template(value)
        try:
            return datetime.fromisoformat(value) if "T" in value or " " in value else date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(
        f"a range endpoint is a date ('2024-01-01'), a datetime, an integer or a template "
        f"('{{today-7d}}'), got {value!r}"
    )


class BoundGrid:
    """A grid with concrete values: ``len()`` is exact, iteration yields one dict per task."""

    def __init__(self, keys: list[str], seqs: list[Sequence[Any]]) -> None:
        self.keys = keys
        self.seqs = seqs

    def __len__(self) -> int:
        return math.prod(len(s) for s in self.seqs)

    @property
    def count(self) -> int:
        """The number of tasks, exact even where ``len()`` cannot say it (beyond 2**63 - 1)."""
        return math.prod(s.size if isinstance(s, _RangeSeq) else len(s) for s in self.seqs)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iter_from(0)

    def newest(self, name: str, within: float) -> set[Any]:
        """The values of range ``name`` less than ``within`` seconds before its end (its last
        one counts as 0 s before): what a rolling range fetches again each run."""
        seq = self.seqs[self.keys.index(name)]
        if not isinstance(seq, _RangeSeq) or seq.kind == "int" or within <= 0:
            return set()
        step = seq.step.total_seconds()
        count = min(math.ceil(within / step - 1e-9), seq.size)
        return {seq[seq.size - 1 - i] for i in range(count)}

    def iter_from(self, position: int) -> Iterator[dict[str, Any]]:
        """Combinations from ``position`` on, in order (first parameter outermost)."""
        total = len(self)
        if position >= total:
            return
        keys, seqs = self.keys, self.seqs
        lengths = [len(s) for s in seqs]
        index = [0] * len(seqs)
        rest = position
        for d in range(len(seqs) - 1, -1, -1):
            rest, index[d] = divmod(rest, lengths[d])
        current = [s[i] for s, i in zip(seqs, index)]
        last = len(seqs) - 1
        if last < 0:
            yield {}
            return
        inner, inner_key = seqs[last], keys[last]
        head_keys = keys[:last]
        while True:
            # The innermost parameter runs fastest: a plain loop, no carry arithmetic.
            head = dict(zip(head_keys, current))
            for i in range(index[last], lengths[last]):
                params = head.copy()
                params[inner_key] = inner[i]
                yield params
            index[last] = 0
            d = last - 1
            while d >= 0:
                index[d] += 1
                if index[d] < lengths[d]:
                    current[d] = seqs[d][index[d]]
                    break
                index[d] = 0
                current[d] = seqs[d][0]
                d -= 1
            if d < 0:
                return

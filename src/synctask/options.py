"""Connector ``options`` checked like the rest of a plan file: each connector's keys and types.

A misspelled option used to be accepted and ignored (``record`` for ``records`` wrote whole page
bodies as rows with no key). Each connector now declares what it reads; anything else is a
problem naming the place, with a suggestion. ``python:`` connectors take free-form options.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from .errors import Problem, key_hint

__all__ = ["check_options", "template_names", "PLACEHOLDER"]

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _HttpOptions(_Options):
    max_answer_mb: StrictInt | float = 64  # an answer above this fails its task

    @field_validator("max_answer_mb")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"must be a positive number of megabytes, got {value}")
        return value


class Pagination(_Options):
    kind: Literal["page", "offset", "cursor", "link"]
    param: str | None = None
    start: StrictInt | None = None
    size: StrictInt | None = None
    path: str | None = None

    @field_validator("size")
    @classmethod
    def _size(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value


class IncrementalOptions(_Options):
    """Cursor sync (see ``incremental``): where the cursor is in a record, the parameter that asks
    since one, where the first run starts, how far back each run asks again."""

    cursor: str
    param: str
    initial: str | StrictInt | float
    lag: str | StrictInt | float = 0
    format: str | None = None
    tz: str | None = None

    @field_validator("initial")
    @classmethod
    def _initial(cls, value: Any) -> Any:
        from .incremental import instant

        try:
            instant(value)
        except (TypeError, ValueError):
            raise ValueError("must be an ISO 8601 time such as '2024-01-01T00:00:00Z' or epoch seconds") from None
        return value

    @field_validator("lag")
    @classmethod
    def _lag(cls, value: Any) -> Any:
        from .units import parse_duration

        if parse_duration(value) < 0:
            raise ValueError("must be a duration of 0 or more, such as '5m'")
        return value

    @field_validator("tz")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        if value is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError("must be a time zone name such as 'UTC' or 'Asia/Shanghai'") from None
        return value


class RestOptions(_HttpOptions):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "get", "post", "put", "patch", "delete"] = "GET"
    path: str | None = None
    query: dict[str, str | int | float | bool] = {}
    json_: Any = Field(default=None, alias="json")  # the body template of a POST
    headers: dict[str, str] = {}
    records: str = ""
    pagination: Pagination | None = None
    incremental: IncrementalOptions | None = None


class TushareOptions(_HttpOptions):
    fields: str = ""


class BinanceOptions(_HttpOptions):
    pass


class WebSocketOptions(_Options):
    path: str = "/ws"
    batch: StrictInt = 100

    @field_validator("batch")
    @classmethod
    def _batch(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1 (rows per write), got {value}")
        return value


MODELS: dict[str, type[_Options]] = {
    "rest": RestOptions,
    "tushare": TushareOptions,
    "binance": BinanceOptions,
    "websocket": WebSocketOptions,
}


def check_options(connector: str, options: Mapping[str, Any], where: str) -> list[Problem]:
    """The problems in one ``options`` table of a dataset (or vendor) using ``connector``."""
    model = MODELS.get(connector)
    if model is None or not options:
        return []
    try:
        model.model_validate(dict(options))
    except ValidationError as exc:
        return [_problem(model, error, where) for error in exc.errors()]
    return []


def _problem(model: type[_Options], error: Mapping[str, Any], where: str) -> Problem:
    loc = [str(part) for part in error["loc"] if not str(part).startswith(("function-", "str", "int"))]
    place = ".".join([where, *loc[:-1]]) if error["type"] == "extra_forbidden" else ".".join([where, *loc])
    if error["type"] == "extra_forbidden":
        key = loc[-1]
        return Problem(place, f"unknown option {key!r}{key_hint(key, _fields(model, loc[:-1]))}")
    message = str(error["msg"]).removeprefix("Value error, ")
    return Problem(place, f"{message[:1].lower()}{message[1:]}, got {error.get('input')!r}")


def _fields(model: type[BaseModel], path: list[str]) -> list[str]:
    current: Any = model
    for name in path:
        field = current.model_fields.get(name) if current is not None else None
        annotation = getattr(field, "annotation", None)
        current = next((a for a in (annotation, *getattr(annotation, "__args__", ()))
                        if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if current is None:
        return []
    return [info.alias or name for name, info in current.model_fields.items()]


def template_names(value: Any) -> set[str]:
    """Every ``{name}`` in a template value (strings inside tables and arrays too)."""
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, Mapping):
        return set().union(*(template_names(v) for v in value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(template_names(v) for v in value)) if value else set()
    return set()

"""Plan keys set without editing the plan file: ``--set vendors.tushare.base_url=URL`` on the
command line, and ``SYNCTASK__VENDORS__TUSHARE__BASE_URL=URL`` in the environment (dlt's
convention: ``__`` between the parts, names in any case). The command line wins over the
environment; both win over the file.

A value is read as TOML when it is one (``20``, ``true``, ``["a", "b"]``, ``{ rate = 5, per = "1s" }``)
and as a string otherwise. In ``[[plans]]`` a part names a plan by its ``name`` (or its index).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import PlanFileError, Problem

__all__ = ["Override", "overrides_from", "apply_overrides", "ENV_PREFIX"]

ENV_PREFIX = "SYNCTASK__"


class Override:
    """One key to set: its path in the plan document, its value, and where it came from."""

    __slots__ = ("parts", "value", "origin")

    def __init__(self, parts: Sequence[str], value: Any, origin: str) -> None:
        self.parts = tuple(parts)
        self.value = value
        self.origin = origin

    @property
    def path(self) -> str:
        return ".".join(self.parts)


def overrides_from(sets: Sequence[str] = (), env: Mapping[str, str] | None = None) -> list[Override]:
    """The overrides of the environment's ``SYNCTASK__...`` variables, then of ``--set`` (applied
    in that order: the command line wins)."""
    found: list[Override] = []
    for key, text in sorted((env or {}).items()):
        if key.upper().startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX):
            parts = [part.lower() for part in key[len(ENV_PREFIX):].split("__")]
            if all(parts):
                found.append(Override(parts, _value(text), key))
    for given in sets:
        path, equals, text = given.partition("=")
        parts = [part.strip() for part in path.split(".")]
        if not equals or not all(parts):
            raise PlanFileError("--set", [Problem(given, "write --set KEY.PATH=VALUE, for example "
                                                          "--set vendors.tushare.base_url=http://127.0.0.1:9000")])
        found.append(Override(parts, _value(text.strip()), f"--set {path.strip()}"))
    return found


def _value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Sequence[Override], source: str) -> dict[str, Any]:
    """``data`` (a plan document) with each override set in place; ``PlanFileError`` naming the
    override when its path goes through something that is not a table or names no plan."""
    problems = []
    for override in overrides:
        try:
            _set(data, override.parts, override.value)
        except LookupError as exc:
            problems.append(Problem(override.origin, str(exc)))
    if problems:
        raise PlanFileError(source, problems)
    return data


def _set(node: Any, parts: Sequence[str], value: Any) -> None:
    where: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            node_list = node
            index = _item(node_list, part, ".".join(where))
            if last:
                node_list[index] = value
                return
            node = node_list[index]
        elif isinstance(node, dict):
            key = _key(node, part)
            if last:
                node[key] = value
                return
            if key not in node:
                node[key] = {}
            node = node[key]
        else:
            raise LookupError(f"{'.'.join(where) or 'the document'} is a value, not a table: it has no {part!r}")
        where.append(part)


def _key(table: dict[str, Any], part: str) -> str:
    """The table's key that ``part`` names: itself, or one that differs only in case or - for _."""
    if part in table:
        return part
    folded = part.lower().replace("-", "_")
    for key in table:
        if key.lower().replace("-", "_") == folded:
            return key
    return part


def _item(items: list[Any], part: str, where: str) -> int:
    """The index of the array item ``part`` names: by its ``name``, else a whole-number index."""
    folded = part.lower().replace("-", "_")
    for i, item in enumerate(items):
        if isinstance(item, dict) and str(item.get("name", "")).lower().replace("-", "_") == folded:
            return i
    if part.isdigit() and int(part) < len(items):
        return int(part)
    names = [str(item.get("name")) for item in items if isinstance(item, dict) and "name" in item]
    raise LookupError(f"{where} has no item named {part!r} (known: {', '.join(names) or 'none'})")

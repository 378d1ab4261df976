"""The daemon's plans: those of its plan file and those added over the API, kept as the raw
documents they came from (a secret appears in them only as the name of its environment
variable), so they can be validated together, kept in the state file across restarts,
compared on reload, and shown without a secret.

A document is ``{"vendors": {...}, "datasets": {...}, "plans": [...]}``, read from TOML or
JSON. Plans removed over the API stay removed across restarts and reloads, until the file
changes their definition or they are added again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import MAX_DEPTH, PlanFile, check_depth, parse_plan_data, read_plan_file, read_toml
from ..errors import PlanFileError, Problem, SyncError
from ..redact import MASK, SECRETS
from ..sinks import sink_file

__all__ = ["Allowed", "Catalog", "CatalogConflict", "Diff", "read_document"]

Doc = dict[str, Any]
SETTING = "daemon.catalog"  # the key the catalog is kept under in the state store


class CatalogConflict(SyncError):
    """An addition or reload that would give one name two meanings (answered 409)."""


def read_document(text: str, source: str, content_type: str = "") -> Doc:
    """A plan document from TOML or JSON text (JSON when the type says so or it starts with
    ``{``); a syntax error is a ``PlanFileError`` naming the line and column."""
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanFileError(source, [Problem("", f"not valid JSON: {exc}")]) from None
        except RecursionError:
            raise PlanFileError(source, [Problem("", f"nested deeper than {MAX_DEPTH} levels")]) from None
        if not isinstance(raw, dict):
            raise PlanFileError(source, [Problem("", "expected a JSON object with vendors, datasets and plans")])
        check_depth(raw, source)
        return raw
    return read_toml(text, source)


def _parts(doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    vendors, datasets, plans = doc.get("vendors", {}), doc.get("datasets", {}), doc.get("plans", [])
    return (vendors if isinstance(vendors, dict) else {}, datasets if isinstance(datasets, dict) else {},
            plans if isinstance(plans, list) else [])


_SECRET_NAME = re.compile(r"auth|token|secret|passw|api[-_]?key|signature|credential", re.I)
_ONLY_TEMPLATES = re.compile(r"^(?:[A-Za-z]+ )?(?:\{[A-Za-z_][A-Za-z0-9_]*\})+$")  # "Bearer {token}"


def _masked(value: Any, name: str = "") -> Any:
    """A definition fit to show: secrets loaded from the environment masked, and any literal
    value under a credential-like key (``X-Api-Key = "..."``) replaced, templates kept."""
    if isinstance(value, dict):
        return {k: _masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, name) for v in value]
    if isinstance(value, str):
        if _SECRET_NAME.search(name) and not _ONLY_TEMPLATES.match(value):
            return MASK
        return SECRETS(value) if SECRETS else value
    return value


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class Diff:
    """What a new catalog changes: plans added, removed and changed (their definition, dataset
    or vendor differs), and datasets that must be built again or dropped."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)  # datasets whose definition or vendor changed
    dropped: list[str] = field(default_factory=list)  # datasets no longer defined

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.rebuilt or self.dropped)

    def as_dict(self) -> dict[str, list[str]]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed}


def definitions(doc: Doc) -> tuple[dict[str, str], dict[str, str]]:
    """Each plan's and each dataset's full definition as text (with its dataset and vendor), to compare."""
    vendors, datasets, plans = _parts(doc)
    data = {}
    for name, spec in datasets.items():
        vendor = spec.get("vendor") if isinstance(spec, dict) else None
        data[name] = _canon([spec, vendors.get(vendor) if isinstance(vendor, str) else None])
    out = {}
    for spec in plans:
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            dataset = spec.get("dataset")
            out[spec["name"]] = _canon([spec, data.get(dataset) if isinstance(dataset, str) else None])
    return out, data


def diff(old: Doc, new: Doc) -> Diff:
    old_plans, old_data = definitions(old)
    new_plans, new_data = definitions(new)
    out = Diff()
    out.added = [n for n in new_plans if n not in old_plans]
    out.removed = [n for n in old_plans if n not in new_plans]
    out.changed = [n for n in new_plans if n in old_plans and new_plans[n] != old_plans[n]]
    out.rebuilt = [n for n in new_data if n in old_data and new_data[n] != old_data[n]]
    out.dropped = [n for n in old_data if n not in new_data]
    return out


@dataclass(frozen=True)
class Allowed:
    """What a document added over the API may do: write only under ``data_dir``, and run no
    Python code (``python:`` connectors and tasks), unless the daemon was started with
    ``--allow-code``. The plan file is the owner's own and is not limited."""

    data_dir: Path
    allow_code: bool = False

    def problems(self, doc: Doc, base: Path) -> list[Problem]:
        vendors, datasets, _ = _parts(doc)
        found = []
        if not self.allow_code:
            for where, spec, key in [*((f"vendors.{n}", v, "connector") for n, v in vendors.items()),
                                     *((f"datasets.{n}", d, "api") for n, d in datasets.items())]:
                value = spec.get(key) if isinstance(spec, dict) else None
                if isinstance(value, str) and value.strip().startswith("python:"):
                    found.append(Problem(f"{where}.{key}", f"{value!r} runs Python code, which plans added over the "
                                         "API may not (start the daemon with --allow-code to let them, or put the "
                                         "plan in the plan file)"))
            root = self.data_dir.resolve()
            for name, spec in datasets.items():
                sink = spec.get("sink") if isinstance(spec, dict) else None
                place = sink_file(name, sink, base) if isinstance(sink, dict) else None
                if place is not None and not place.resolve().is_relative_to(root):
                    found.append(Problem(f"datasets.{name}.sink.path", f"{str(place)!r} is outside the daemon's data "
                                         f"folder {str(root)!r}; plans added over the API write only there (start "
                                         "the daemon with --data DIR or --allow-code to change that)"))
        return found


class Catalog:
    """The plan file's document plus the API's additions, minus the API's removals."""

    def __init__(self, path: str | Path, stored: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None, allowed: Allowed | None = None,
                 sets: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.env = env
        self.sets = tuple(sets)  # --set overrides, applied again at each reload
        self.allowed = allowed or Allowed(self.path.resolve().parent)
        self.file: Doc = read_plan_file(self.path, self.sets)
        stored = stored or {}
        self.added: Doc = dict(stored.get("added") or {"vendors": {}, "datasets": {}, "plans": []})
        self.removed: dict[str, str] = dict(stored.get("removed") or {})  # plan → its file definition
        self._check_names(self.file, self.added)

    def stored(self) -> dict[str, Any]:
        """What to keep in the state store (secrets are only environment-variable names here)."""
        return {"added": self.added, "removed": self.removed}

    def document(self) -> Doc:
        """The file's and the API's vendors, datasets and plans together, minus removed plans."""
        return self._combine(self.file, self.added, self.removed)

    def plans(self) -> PlanFile:
        """The whole catalog validated (raises ``PlanFileError`` with ``check``'s messages)."""
        return parse_plan_data(self.document(), str(self.path), self.env)

    def origin(self, name: str) -> str:
        """Where a plan was defined: ``file`` or ``api``."""
        return "api" if any(isinstance(p, dict) and p.get("name") == name for p in _parts(self.added)[2]) else "file"

    def definition(self, name: str) -> dict[str, Any] | None:
        """Plan ``name`` with its dataset and vendor as written (secrets only as env names)."""
        vendors, datasets, plans = _parts(self.document())
        spec = next((p for p in plans if isinstance(p, dict) and p.get("name") == name), None)
        if spec is None:
            return None
        dataset = datasets.get(str(spec.get("dataset")))
        vendor = vendors.get(str(dataset.get("vendor"))) if isinstance(dataset, dict) else None
        return _masked({"plan": spec, "dataset": dataset, "vendor": vendor})

    def add(self, doc: Doc, source: str) -> tuple[Diff, PlanFile]:
        """Validate ``doc`` as an addition (it may use the vendors and datasets already known) and
        take it in; raises ``PlanFileError`` (400) or ``CatalogConflict`` (409), changing nothing."""
        vendors, datasets, plans = _parts(doc)
        if not plans and not vendors and not datasets:
            raise PlanFileError(source, [Problem("", "the document has no vendors, datasets or plans to add")])
        refused = self.allowed.problems(doc, self.path.resolve().parent)
        if refused:
            raise PlanFileError(source, refused)
        current = self.document()
        c_vendors, c_datasets, c_plans = _parts(current)
        for kind, new, known in (("vendor", vendors, c_vendors), ("dataset", datasets, c_datasets)):
            for name, spec in new.items():
                if name in known and _canon(known[name]) != _canon(spec):
                    raise CatalogConflict(f"{kind} {name!r} is already defined differently; change it in the plan "
                                          f"file and reload, or give the new one another name")
        taken = {p.get("name") for p in c_plans if isinstance(p, dict)}
        in_file = {p.get("name") for p in _parts(self.file)[2] if isinstance(p, dict)}
        for spec in plans:
            plan_name = spec.get("name") if isinstance(spec, dict) else None
            if plan_name in taken:
                raise CatalogConflict(f"plan {plan_name!r} already exists; remove it first, or use another name")
            if plan_name in in_file:
                raise CatalogConflict(f"plan {plan_name!r} is defined in the plan file (and was removed): change it "
                                      "there and run `synctask reload`, or use another name")
        # Validate the new plans alone (their places are the document's own), seeing every known part.
        parse_plan_data({"vendors": {**c_vendors, **vendors}, "datasets": {**c_datasets, **datasets},
                         "plans": plans}, source, self.env)
        a_vendors, a_datasets, a_plans = _parts(self.added)
        added = {"vendors": {**a_vendors, **vendors}, "datasets": {**a_datasets, **datasets},
                 "plans": [*a_plans, *plans]}
        return self._take(self.file, added, self.removed)

    def remove(self, name: str) -> None:
        """Forget plan ``name``: an added plan is dropped; a file plan is remembered as removed."""
        a_vendors, a_datasets, a_plans = _parts(self.added)
        kept = [p for p in a_plans if not (isinstance(p, dict) and p.get("name") == name)]
        if len(kept) != len(a_plans):
            self.added = self._without_unused({"vendors": a_vendors, "datasets": a_datasets, "plans": kept})
            return
        definition = definitions(self.file)[0].get(name)
        if definition is not None:
            self.removed[name] = definition

    def _without_unused(self, added: Doc) -> Doc:
        """``added`` without the datasets no plan uses and the vendors no dataset uses."""
        f_vendors, f_datasets, f_plans = _parts(self.file)
        a_vendors, a_datasets, a_plans = _parts(added)
        used = {p.get("dataset") for p in [*f_plans, *a_plans] if isinstance(p, dict)}
        datasets = {n: d for n, d in a_datasets.items() if n in used}
        needed = {d.get("vendor") for d in [*f_datasets.values(), *datasets.values()] if isinstance(d, dict)}
        vendors = {n: v for n, v in a_vendors.items() if n in needed}
        return {"vendors": vendors, "datasets": datasets, "plans": a_plans}

    def reload(self) -> tuple[Diff, PlanFile]:
        """Read the plan file again and take it in whole, or raise and change nothing."""
        file = read_plan_file(self.path, self.sets)
        self._check_names(file, self.added)
        file_defs = definitions(file)[0]
        removed = {n: d for n, d in self.removed.items() if file_defs.get(n) == d}  # changed: back again
        return self._take(file, self.added, removed)

    def _take(self, file: Doc, added: Doc, removed: dict[str, str]) -> tuple[Diff, PlanFile]:
        new = self._combine(file, added, removed)
        plans = parse_plan_data(new, str(self.path), self.env)
        change = diff(self.document(), new)
        self.file, self.added, self.removed = file, added, removed
        return change, plans

    @staticmethod
    def _combine(file: Doc, added: Doc, removed: Mapping[str, str]) -> Doc:
        f_vendors, f_datasets, f_plans = _parts(file)
        a_vendors, a_datasets, a_plans = _parts(added)
        plans = [p for p in f_plans if not (isinstance(p, dict) and p.get("name") in removed)]
        return {"vendors": {**f_vendors, **a_vendors}, "datasets": {**f_datasets, **a_datasets},
                "plans": [*plans, *a_plans]}

    @staticmethod
    def _check_names(file: Doc, added: Doc) -> None:
        f_vendors, f_datasets, f_plans = _parts(file)
        a_vendors, a_datasets, a_plans = _parts(added)
        for kind, mine, theirs in (("vendor", f_vendors, a_vendors), ("dataset", f_datasets, a_datasets)):
            for name in mine.keys() & theirs.keys():
                if _canon(mine[name]) != _canon(theirs[name]):
                    raise CatalogConflict(f"{kind} {name!r} is in the plan file and was added over the API with "
                                          "another definition; remove the added plans that use it, or rename one")
        names = {p.get("name") for p in f_plans if isinstance(p, dict)}
        for spec in a_plans:
            if isinstance(spec, dict) and spec.get("name") in names:
                raise CatalogConflict(f"plan {spec['name']!r} is in the plan file and was added over the API; "
                                      f"remove it with `synctask remove {spec['name']}` or rename it in the file")

"""Plan files (TOML) → model objects, with errors that name the file, the table and the key.

Parsing has two passes. pydantic checks the shape (keys, types) of each table; then the
cross-checks that need the whole file run (a dataset's vendor exists, a weight fits its limits, a
secret is set). Every problem of both passes is collected, so one run of ``synctask check`` lists
everything to fix, not just the first thing.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from .errors import ErrorRule, OutcomeKind, PlanFileError, Problem, key_hint
from .grid import ParamGrid, TemplateError
from .learning import PROBE_START, parse_rate
from .limits import Concurrency, Limit, Quota
from .model import Dataset, Key, Learn, Secret, SyncPlan, Vendor
from .options import MODELS as CONNECTOR_OPTIONS
from .options import check_options, template_names
from .retry import RetryPolicy
from .schedule import parse_schedule
from .sinks import sink_file
from .units import parse_duration, parse_duration_range

__all__ = ["PlanFile", "load_plan_file", "parse_plan_text", "parse_plan_data"]

Duration = Union[str, StrictInt, float]
MAX_TASKS = 2**63 - 1  # task counts, positions and progress are 64-bit integers
CONNECTOR_NAMES = list(CONNECTOR_OPTIONS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SHORTEST = 0.001  # seconds: no window or timeout is shorter (a clock's and a loop turn's grain)


def _positive_duration(value: Duration) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}")
    if seconds < SHORTEST:
        raise ValueError(f"must be at least 1ms, got {value!r}")
    return seconds


class LimitSpec(_Strict):
    rate: StrictInt | None = None
    per: Duration | None = None
    window: Literal["sliding", "clock"] = "sliding"
    tz: str | None = None
    scope: Literal["vendor", "dataset", "node"] | None = None
    concurrency: StrictInt | None = None
    learn: bool | None = None  # { learn = true, start = "2 per 1s", max = "100 per 1s" }: learned from answers
    start: str | None = None
    max: str | None = None

    @field_validator("per")
    @classmethod
    def _per(cls, value: Duration | None) -> Duration | None:
        if value is not None:
            _positive_duration(value)
        return value

    @field_validator("rate", "concurrency")
    @classmethod
    def _at_least_one(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> LimitSpec:
        if self.learn is not None or self.start is not None or self.max is not None:
            if self.learn is not True or self.rate is not None or self.per is not None or self.concurrency is not None:
                raise ValueError('a learned limit is { learn = true } (with start = "2 per 1s" and max = "100 per '
                                 '1s" if you like), beside the limits you know; or limits = "learn"')
            for text in (self.start, self.max):
                if text is not None:
                    parse_rate(text)
            return self
        if self.concurrency is not None:
            if self.rate is not None or self.per is not None:
                raise ValueError(
                    "a limit is either { rate = N, per = \"1m\" } or { concurrency = N }, not both"
                )
            return self
        if self.rate is None or self.per is None:
            raise ValueError('a quota needs both rate and per, e.g. { rate = 500, per = "1m" }')
        return self

    def to_learn(self) -> Learn:
        return Learn(parse_rate(self.start) if self.start else PROBE_START, parse_rate(self.max) if self.max else None)

    def to_limit(self) -> Limit:
        if self.concurrency is not None:
            return Concurrency(self.concurrency)
        assert self.rate is not None and self.per is not None
        return Quota(self.rate, parse_duration(self.per), self.window == "clock", self.tz)


class EnvSecret(_Strict):
    env: str


class KeySpec(_Strict):
    """One of several keys: ``{ env = "KEY_B", account = "team", limits = [...] }``."""

    env: str
    account: str | None = None
    limits: list[LimitSpec] = []


class AccountSpec(_Strict):
    """The limits the keys of one account share: ``[vendors.NAME.accounts.team] limits = [...]``."""

    limits: list[LimitSpec] = []


def _learn_all(value: Any) -> Any:
    """``limits = "learn"``: every limit of the scope learned from the vendor's answers."""
    if value == "learn":
        return [{"learn": True}]
    if isinstance(value, str):
        raise ValueError(f'limits is a list of limits, or "learn"; got {value!r}')
    return value


class VendorSpec(_Strict):
    connector: str
    base_url: str | None = None
    token: EnvSecret | list[KeySpec] | None = None
    limits: list[LimitSpec] = []

    _limits = field_validator("limits", mode="before")(classmethod(lambda cls, v: _learn_all(v)))
    margin: Duration | None = None
    options: dict[str, Any] = {}
    key_order: Literal["spread", "fill-first"] = "spread"
    accounts: dict[str, AccountSpec] = {}

    @field_validator("margin")
    @classmethod
    def _margin(cls, value: Duration | None) -> Duration | None:
        if value is not None and parse_duration(value) < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return value

    @field_validator("token", mode="before")
    @classmethod
    def _no_literal_secret(cls, value: Any) -> Any:
        if isinstance(value, str) or (isinstance(value, list) and any(isinstance(v, str) for v in value)):
            raise ValueError(
                'secrets come from the environment: write token = { env = "VENDOR_TOKEN" } (or, for several keys, '
                'token = [{ env = "KEY_A" }, { env = "KEY_B" }]) and export the variables'
            )
        if isinstance(value, list) and not value:
            raise ValueError('token = [] lists no key; write token = [{ env = "KEY_A" }, ...] or leave it out')
        return value


# The keys each sink kind takes besides kind and key; each a non-empty string.
SINK_KEYS: dict[str, tuple[str, ...]] = {
    "sqlite": ("path", "table"), "duckdb": ("path", "table"), "postgres": ("dsn", "table", "schema"),
    "parquet": ("path", "partition_by"), "jsonl": ("path",), "memory": (), "callback": (),
}


class SinkSpec(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)  # each sink kind has its own keys, checked below
    kind: Literal["parquet", "sqlite", "duckdb", "postgres", "jsonl", "callback", "memory"]
    key: list[str] = []

    @model_validator(mode="after")
    def _kind_keys(self) -> SinkSpec:
        if self.kind == "callback":
            raise ValueError("a callback sink is given from Python, executor.add_dataset(dataset, "
                             "sink=CallbackSink(function)), not in a plan file")
        allowed = SINK_KEYS[self.kind]
        problems = []
        for name, value in (self.model_extra or {}).items():
            if name not in allowed:
                problems.append(f"unknown key {name!r} for a {self.kind} sink"
                                f"{key_hint(name, ['kind', 'key', *allowed])}")
            elif not isinstance(value, str) or not value.strip() or "\x00" in value:
                problems.append(f"{name} must be a non-empty string, got {value!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ErrorRuleSpec(_Strict):
    match: str
    on: Literal["status", "body", "message"] = "body"
    kind: Literal["network", "timeout", "server", "rate_limited", "quota", "invalid", "fatal"]
    cooldown: Duration | None = None

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, value: Duration | None) -> Duration | None:
        if value is not None:
            _positive_duration(value)
        return value

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return value

    def to_rule(self) -> ErrorRule:
        cooldown = parse_duration(self.cooldown) if self.cooldown is not None else None
        return ErrorRule(re.compile(self.match), OutcomeKind(self.kind), self.on, cooldown)


class DatasetSpec(_Strict):
    vendor: str
    api: str | None = None
    limits: list[LimitSpec] = []

    _limits = field_validator("limits", mode="before")(classmethod(lambda cls, v: _learn_all(v)))
    weight: StrictInt = 1
    sink: SinkSpec | None = None
    errors: list[ErrorRuleSpec] = []
    options: dict[str, Any] = {}

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value


class RetrySpec(_Strict):
    attempts: StrictInt = 5
    backoff: str = "0.5s..60s"

    @field_validator("attempts")
    @classmethod
    def _attempts(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1 (the first try counts), got {value}")
        return value

    @field_validator("backoff")
    @classmethod
    def _backoff(cls, value: str) -> str:
        low, high = parse_duration_range(value)
        if low < 0 or high < low:
            raise ValueError(f"the first delay must not exceed the largest, got {value!r}")
        return value


class PlanSpec(_Strict):
    name: str
    dataset: str
    params: dict[str, Any] = {}
    schedule: str = "manual"
    priority: StrictInt = 0
    timeout: Duration | None = None
    retry: RetrySpec = RetrySpec()
    on_fatal: Literal["stop_plan", "stop_all"] = "stop_plan"
    catchup: Literal["all", "latest", "none"] | None = None
    overlap: Literal["queue", "skip"] = "queue"
    history: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 1_000
    refresh: Duration | None = None

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: Duration | None) -> Duration | None:
        if value is not None:
            _positive_duration(value)
        return value

    @field_validator("refresh")
    @classmethod
    def _refresh(cls, value: Duration | None) -> Duration | None:
        if value is not None and parse_duration(value) < 0:
            raise ValueError(f"must be a duration of 0 or more (such as '3d'), got {value!r}")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError(f"use letters, digits, '-', '_' and '.', got {value!r}")
        return value


class FileSpec(_Strict):
    vendors: dict[str, VendorSpec] = {}
    datasets: dict[str, DatasetSpec] = {}
    plans: list[PlanSpec] = []


@dataclass
class PlanFile:
    """A validated plan file: its vendors, datasets and plans, ready for the engine."""

    source: str
    vendors: dict[str, Vendor] = field(default_factory=dict)
    datasets: dict[str, Dataset] = field(default_factory=dict)
    plans: list[SyncPlan] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # valid, but likely not what was meant

    def plan(self, name: str) -> SyncPlan:
        for plan in self.plans:
            if plan.name == name:
                return plan
        known = [p.name for p in self.plans]
        raise PlanFileError(self.source, [Problem("plans", f"no plan named {name!r}{_suggest(name, known)}")])


def load_plan_file(path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *,
                   secrets_required: bool = True, sets: Sequence[str] = ()) -> PlanFile:
    """Read and validate a plan file; raises ``PlanFileError`` listing every problem.
    ``secrets_required=False`` (``check``) makes a secret not set a warning, not a problem.
    ``sets`` and the environment's ``SYNCTASK__...`` variables override its keys (``overrides``)."""
    return parse_plan_data(read_plan_file(path, sets), str(path), env, secrets_required=secrets_required)


MAX_PLAN_BYTES = 10 * 1024 * 1024  # a plan file or document larger than this is a mistake, not a plan
MAX_DEPTH = 32  # tables and arrays nested deeper than this are a mistake too (and would exhaust the stack)


def read_plan_file(path: str | os.PathLike[str], sets: Sequence[str] = ()) -> dict[str, Any]:
    """A plan file's TOML as data, not yet validated, with the overrides of ``sets`` (``--set``)
    and the environment's ``SYNCTASK__...`` variables applied; ``PlanFileError`` when unreadable,
    larger than 10 MB (read no further: ``/dev/zero`` is not a plan), or not TOML."""
    from .overrides import apply_overrides, overrides_from

    return apply_overrides(_read_plan_file(path), overrides_from(sets, os.environ), str(path))


def _read_plan_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PLAN_BYTES + 1)
        if len(data) > MAX_PLAN_BYTES:
            raise PlanFileError(source, [Problem("", f"the file is larger than {MAX_PLAN_BYTES // 1048576} MB; a plan "
                                                 "file is a few kilobytes: is this the right file?")])
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise PlanFileError(source, [Problem("", "no such file")]) from None
    except IsADirectoryError:
        raise PlanFileError(source, [Problem("", "it is a folder; give the plan file (TOML) in it")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanFileError(source, [Problem("", f"cannot read the file: {exc}")]) from None
    return read_toml(text, source)


def read_toml(text: str, source: str) -> dict[str, Any]:
    """TOML text as data; a syntax error is a ``PlanFileError`` naming its line and column."""
    if len(text) > MAX_PLAN_BYTES:
        raise PlanFileError(source, [Problem("", f"larger than {MAX_PLAN_BYTES // 1048576} MB: not a plan document")])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanFileError(source, [Problem("", f"not valid TOML: {exc}")]) from None
    except RecursionError:
        raise PlanFileError(source, [Problem("", f"tables or arrays nested deeper than {MAX_DEPTH} levels")]) from None
    check_depth(data, source)
    return data


def check_depth(data: Any, source: str) -> None:
    """``PlanFileError`` naming the first place nested deeper than ``MAX_DEPTH`` (walked without
    recursion, so the check itself cannot run out of stack)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PlanFileError(source, [Problem(where, f"nested deeper than {MAX_DEPTH} levels; a plan needs a "
                                                 "few")])
        if isinstance(node, Mapping):
            stack.extend((value, f"{where}.{key}" if where else str(key), depth + 1) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, f"{where}[{i}]", depth + 1) for i, value in enumerate(node))


def parse_plan_text(text: str, source: str = "<plans>", env: Mapping[str, str] | None = None, *,
                    secrets_required: bool = True) -> PlanFile:
    """Validate plan-file text; ``env`` supplies secrets (default: the process environment)."""
    return parse_plan_data(read_toml(text, source), source, env, secrets_required=secrets_required)


def parse_plan_data(raw: Any, source: str = "<plans>", env: Mapping[str, str] | None = None, *,
                    secrets_required: bool = True) -> PlanFile:
    """Validate a plan document already read (from TOML or JSON), with ``check``'s messages."""
    if not isinstance(raw, Mapping):
        raise PlanFileError(source, [Problem("", "expected a table with vendors, datasets and plans, "
                                                 f"got {type(raw).__name__}")])
    check_depth(raw, source)
    try:
        spec = FileSpec.model_validate(raw)
    except ValidationError as exc:
        raise PlanFileError(source, [_problem(e, raw) for e in exc.errors()]) from None
    return _build(spec, source, os.environ if env is None else env, secrets_required)


def _build(spec: FileSpec, source: str, env: Mapping[str, str], secrets_required: bool = True) -> PlanFile:
    out = PlanFile(source)
    problems: list[Problem] = []
    for name, v in spec.vendors.items():
        where = f"vendors.{name}"
        token = None
        keys: list[Key] = []
        if isinstance(v.token, list):
            keys = _keys(v, where, env, problems if secrets_required else out.warnings, problems)
            token = keys[0].secret if keys else None
        elif v.token is not None:
            value = env.get(v.token.env)
            if not value:
                missing = Problem(f"{where}.token", f"environment variable {v.token.env} is not set; export it "
                                  "before running (its value is never printed)")
                (problems if secrets_required else out.warnings).append(missing)
            else:
                token = Secret(value, f"env {v.token.env}")
        limits: list[Limit | None] = []
        node_limits: list[Limit | None] = []
        learn = None
        for i, lim in enumerate(v.limits):
            if lim.learn:
                if lim.scope == "node":
                    problems.append(Problem(f"{where}.limits[{i}].scope", "a per-node limit cannot be learned yet; "
                                            "write it, or learn the vendor's limit"))
                learn = lim.to_learn()
                continue
            if lim.scope == "dataset":
                problems.append(Problem(f"{where}.limits[{i}].scope",
                                        "a vendor limit applies to 'vendor' or 'node', not 'dataset'"))
            (node_limits if lim.scope == "node" else limits).append(_limit(lim, f"{where}.limits[{i}]", problems))
        if v.connector not in CONNECTOR_NAMES and not v.connector.startswith("python:"):
            problems.append(Problem(f"{where}.connector", f"unknown connector {v.connector!r}"
                                    f"{_suggest(v.connector, CONNECTOR_NAMES)}; or a Python task: "
                                    '"python:package.module:function"'))
        problems.extend(check_options(v.connector, v.options, f"{where}.options"))
        margin = parse_duration(v.margin) if v.margin is not None else None
        if learn is not None and isinstance(v.token, list):
            problems.append(Problem(f"{where}.limits", "limits cannot be learned with several keys yet (each key "
                                    "would need its own); write the vendor's per-key limits"))
        accounts = {account: tuple(x for i, lim in enumerate(spec_.limits)
                                   if (x := _limit(lim, f"{where}.accounts.{account}.limits[{i}]", problems)))
                    for account, spec_ in v.accounts.items()}
        if v.accounts and not isinstance(v.token, list):
            problems.append(Problem(f"{where}.accounts", "accounts group several keys; list them in "
                                    'token = [{ env = "KEY_A", account = "..." }, ...]'))
        out.vendors[name] = Vendor(name, v.connector, v.base_url, token, tuple(x for x in limits if x),
                                   tuple(x for x in node_limits if x), v.options, margin, learn, tuple(keys),
                                   v.key_order, accounts)
    for name, d in spec.datasets.items():
        where = f"datasets.{name}"
        if d.vendor not in spec.vendors:
            problems.append(Problem(f"{where}.vendor",
                                    f"unknown vendor {d.vendor!r}{_suggest(d.vendor, spec.vendors)}"))
        limits = []
        dataset_learn = None
        for i, lim in enumerate(d.limits):
            if lim.learn:
                dataset_learn = lim.to_learn()
                continue
            if lim.scope not in (None, "dataset"):
                problems.append(Problem(
                    f"{where}.limits[{i}].scope",
                    "a dataset limit applies to its dataset; put vendor or node limits under [vendors]",
                ))
            limits.append(_limit(lim, f"{where}.limits[{i}]", problems))
        sink = d.sink.model_dump() if d.sink else {}
        dataset = Dataset(name, d.vendor, d.api or name, tuple(x for x in limits if x), d.weight, sink, d.options,
                          tuple(rule.to_rule() for rule in d.errors), dataset_learn)
        _check_weight(dataset, out.vendors.get(d.vendor), where, problems)
        vendor_spec = spec.vendors.get(d.vendor)
        if dataset_learn is not None and vendor_spec is not None and isinstance(vendor_spec.token, list):
            problems.append(Problem(f"{where}.limits", f"limits cannot be learned with several keys yet (vendor "
                                    f"{d.vendor} has them); write the dataset's per-key limits"))
        if vendor_spec is not None and not dataset.api.startswith("python:"):
            problems.extend(check_options(vendor_spec.connector, d.options, f"{where}.options"))
        out.datasets[name] = dataset
    seen: set[str] = set()
    for i, p in enumerate(spec.plans):
        where = f"plans[{i}] ({p.name})"
        if p.name in seen:
            problems.append(Problem(f"{where}.name", f"plan name {p.name!r} is used twice; names must be unique"))
        seen.add(p.name)
        if p.dataset not in spec.datasets:
            problems.append(Problem(f"{where}.dataset",
                                    f"unknown dataset {p.dataset!r}{_suggest(p.dataset, spec.datasets)}"))
        try:
            grid = ParamGrid.from_spec(p.params)
            count = grid.bind().count  # resolves templates and ranges once, so bad values surface now
        except (ValueError, TemplateError, OverflowError) as exc:
            problems.append(Problem(f"{where}.params", str(exc)))
            continue
        if count > MAX_TASKS:
            problems.append(Problem(f"{where}.params", f"the grid gives {count:,} tasks, more than synctask can "
                                    f"count ({MAX_TASKS:,}); split it into several plans"))
            continue
        if p.dataset in out.datasets:
            _check_templates(out, spec, out.datasets[p.dataset], grid, where, problems)
        if p.refresh is not None and (p.schedule == "manual" or not grid.rolling):
            out.warnings.append(Problem(f"{where}.refresh", "refresh applies to a scheduled plan with a range that "
                                        "ends at a template (to = \"{today}\"); this plan fetches its grid anew "
                                        "each run, so it is ignored"))
        if count == 0:
            out.warnings.append(Problem(f"{where}.params", "the grid gives no tasks: is a range's 'to' before "
                                        "its 'from'?"))
        out.plans.append(SyncPlan(
            name=p.name,
            dataset=p.dataset,
            params=grid,
            schedule=parse_schedule(p.schedule),
            priority=p.priority,
            timeout=parse_duration(p.timeout) if p.timeout is not None else None,
            retry=RetryPolicy.parse(p.retry.attempts, p.retry.backoff),
            on_fatal=p.on_fatal,
            catchup=p.catchup,
            overlap=p.overlap,
            history=p.history,
            refresh=parse_duration(p.refresh) if p.refresh is not None else 0.0,
        ))
    _check_sink_places(out, source, problems)
    if problems:
        raise PlanFileError(source, problems)
    return out


def _check_sink_places(out: PlanFile, source: str, problems: list[Problem]) -> None:
    """A sink must not write over the plan file itself (a JSONL sink at ``plans.toml``)."""
    plan_file = Path(source)
    if not plan_file.is_file():
        return
    real = plan_file.resolve()
    for name, dataset in out.datasets.items():
        place = sink_file(name, dataset.sink, real.parent) if dataset.sink else None
        if place is not None and place.resolve() == real:
            problems.append(Problem(f"datasets.{name}.sink.path", f"{place} is this plan file: its rows would "
                                    "overwrite your plans; give the sink a path of its own"))


def _check_templates(out: PlanFile, spec: FileSpec, dataset: Dataset, grid: ParamGrid, where: str,
                     problems: list[Problem]) -> None:
    """Every ``{name}`` a REST dataset's request templates use must be one of the plan's
    parameters (or ``{token}``, the vendor's secret): else every task would fail at run time."""
    vendor = out.vendors.get(dataset.vendor)
    if vendor is None or vendor.connector != "rest":
        return
    options = {**dict(vendor.options), **dict(dataset.options)}
    used = template_names([options.get(k) for k in ("path", "query", "headers", "json")])
    given = set(grid.dims) | ({str(options["incremental"].get("param"))}
                              if isinstance(options.get("incremental"), Mapping) else set())
    for name in sorted(used - given - {"token"}):
        problems.append(Problem(f"{where}.params", f"dataset {dataset.name!r} fills {{{name}}} in its request, "
                                f"but this plan has no parameter {name!r}; add it to params, or fix "
                                f"datasets.{dataset.name}.options"))
    declared = spec.vendors[vendor.name].token is not None  # set or not: a missing value is said elsewhere
    if "token" in used and "token" not in given and not declared:
        problems.append(Problem(f"vendors.{vendor.name}.token", f"dataset {dataset.name!r} fills {{token}} in "
                                'its request, but the vendor has no token = { env = "..." }'))


def _keys(v: VendorSpec, where: str, env: Mapping[str, str], missing: list[Problem],
          problems: list[Problem]) -> list[Key]:
    """The vendor's keys from ``token = [...]``, each from its variable (one not set: ``missing``)."""
    keys: list[Key] = []
    seen: set[str] = set()
    for i, k in enumerate(v.token if isinstance(v.token, list) else []):
        at = f"{where}.token[{i}]"
        if k.env in seen:
            problems.append(Problem(f"{at}.env", f"{k.env} is listed twice; each key once"))
            continue
        seen.add(k.env)
        if k.account is not None and k.account not in v.accounts:
            problems.append(Problem(f"{at}.account", f"no account {k.account!r}: add [{where}.accounts.{k.account}] "
                                    f"with the limits its keys share{_suggest(k.account, v.accounts)}"))
        limits: list[Limit] = []
        for j, lim in enumerate(k.limits):
            if lim.learn or lim.scope not in (None, "vendor"):
                problems.append(Problem(f"{at}.limits[{j}]", "a key's limits are written (not learned) and count "
                                        "the key at its vendor; put dataset or node limits where those are"))
                continue
            limit = _limit(lim, f"{at}.limits[{j}]", problems)
            if limit is not None:
                limits.append(limit)
        value = env.get(k.env)
        if not value:
            missing.append(Problem(f"{at}.env", f"environment variable {k.env} is not set; export it before "
                                   "running (its value is never printed)"))
            continue
        keys.append(Key(k.env, Secret(value, f"env {k.env}"), k.account, tuple(limits)))
    return keys


def _limit(spec: LimitSpec, where: str, problems: list[Problem]) -> Limit | None:
    try:
        return spec.to_limit()
    except Exception as exc:  # ZoneInfo raises several kinds for a bad tz
        problems.append(Problem(where, f"{exc}".strip() or "invalid limit"))
        return None


def _check_weight(dataset: Dataset, vendor: Vendor | None, where: str, problems: list[Problem]) -> None:
    limits = list(dataset.limits) + (list(vendor.limits) + list(vendor.node_limits) if vendor else [])
    if vendor is not None:
        limits += [limit for key in vendor.keys for limit in key.limits]
        limits += [limit for shared in vendor.accounts.values() for limit in shared]
    for limit in limits:
        if isinstance(limit, Quota) and dataset.weight > limit.rate:
            problems.append(Problem(f"{where}.weight",
                                    f"a request of weight {dataset.weight} can never fit in the limit "
                                    f"{limit}; lower the weight or raise the limit"))


def _suggest(word: str, choices: Any) -> str:
    names = list(choices)
    close = difflib.get_close_matches(word, names, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if names:
        return f"; defined: {', '.join(repr(n) for n in names)}"
    return "; none is defined"


# --- pydantic errors → problems ----------------------------------------------------------


def _problem(error: Mapping[str, Any], raw: Any) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(loc[:-1])
        return Problem(_where(loc[:-1], raw), f"unknown key {key!r}{key_hint(key, allowed)}")
    if kind == "missing":
        return Problem(_where(loc[:-1], raw), f"missing key {loc[-1]!r}")
    message = _MESSAGES.get(kind)
    if message is None:
        message = str(error["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        message = message[:1].lower() + message[1:]
    if kind in _MESSAGES or kind.endswith("_type") or kind == "literal_error":
        message += f", got {error.get('input')!r}"
    return Problem(_where(loc, raw), message)


_MESSAGES = {
    "int_type": "expected a whole number",
    "string_type": "expected a string",
    "dict_type": "expected a table",
    "list_type": "expected an array",
    "bool_type": "expected true or false",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
}


def _where(loc: tuple[Any, ...], raw: Any) -> str:
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            node = node[item] if isinstance(node, list) and item < len(node) else None
            if parts == ["plans"] and isinstance(node, Mapping) and isinstance(node.get("name"), str):
                label += f" ({node['name']})"
            parts.append(label)
            continue
        key = str(item)
        if key in ("str", "int", "float", "function-after[_positive_duration(), str]"):
            continue  # pydantic names union members in locations; people don't
        parts.append(("." if parts else "") + key)
        node = node.get(key) if isinstance(node, Mapping) else None
    return "".join(parts)



def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the table at ``loc`` accepts, found by walking the spec models."""
    model: Any = FileSpec
    for item in loc:
        if isinstance(item, int) or model is None:
            continue
        if item in ("vendors", "datasets", "plans") and model is FileSpec:
            model = {"vendors": VendorSpec, "datasets": DatasetSpec, "plans": PlanSpec}[item]
            if item == "plans":
                continue
            model = ("dict", model)
            continue
        if isinstance(model, tuple):  # a dict of models: this item is the table's name
            model = model[1]
            continue
        field_info = model.model_fields.get(item)
        model = _inner_model(field_info.annotation) if field_info else None
    if isinstance(model, tuple):
        model = model[1]
    return list(model.model_fields) if model is not None else []


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None




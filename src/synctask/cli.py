"""The ``synctask`` command. Bad input exits with status 2 and a message, never a traceback."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import json
import os
import shlex
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer
from rich.markup import escape

from . import __version__
from .console import app, err, fail, out
from .errors import PlanFileError, Problem, SyncError, key_hint
from .limits import Limit
from .model import MAX_WORKERS, SyncPlan, Vendor
from .units import format_duration

T = TypeVar("T")

if TYPE_CHECKING:
    from .config import PlanFile
    from .events import Event
    from .executor import RunSummary, SyncTaskExecutor
    from .server.daemon import Served

_fail = fail


def _version(value: bool) -> None:
    if value:
        out.print(f"synctask {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, metavar="", help="Print the version and exit."),
    ] = None,
) -> None:
    """Keep local datasets in sync with rate-limited data vendors."""


@app.command()
def check(
    plan_file: Annotated[str, typer.Argument(metavar="PLANS.toml", help="The plan file (TOML) to validate.")],
    plan: Annotated[Optional[list[str]], typer.Option(
        "--plan", metavar="NAME", help="Only these plans (repeatable).")] = None,
    probe: Annotated[bool, typer.Option(
        "--probe", metavar="", help="Fetch the plan's first task once, under its limits, and show what came back.")
    ] = False,
    sets: _SET = None,
) -> None:
    """Validate a plan file and print what would run: plans, task counts, schedules, limits."""
    from .config import load_plan_file
    from .executor import SyncTaskExecutor

    try:
        plans = load_plan_file(plan_file, secrets_required=False, sets=sets or ())  # a secret not set: a warning
        selected = [plans.plan(name) for name in plan] if plan else plans.plans
        # Build what `run` builds (connectors, sinks), without state: the same verdict as `run`.
        SyncTaskExecutor(base_dir=Path(plan_file).resolve().parent).load(
            plans, only=[p.name for p in selected], start=False)
    except ValueError as exc:  # what only building finds (a python: task that cannot be imported)
        _fail(PlanFileError(plan_file, [Problem("", str(exc))]))
    except SyncError as exc:
        _fail(exc)
    _print_warnings(plans)
    from .overrides import overrides_from

    for override in overrides_from(sets or (), os.environ):  # where, never the value (it may be a secret)
        out.print(f"override: {override.path} (from {override.origin})", markup=False, highlight=False)
    _print_plans(plans, [p.name for p in selected])
    _print_datasets(plans, {p.dataset for p in selected})
    out.print(f"{plan_file}: OK, {len(selected)} plan(s) valid.")
    if probe:
        if len(selected) != 1:
            _fail(ValueError(f"--probe fetches one plan's first task: name it with --plan "
                             f"(plans: {', '.join(p.name for p in plans.plans)})"))
        raise typer.Exit(_probe(plans, selected[0].name, Path(plan_file).resolve().parent))


def _probe(plans: PlanFile, name: str, base: Path) -> int:
    """Fetch the plan's first task once and show rows, columns, the first rows and the next page."""
    from .errors import TaskFailed
    from .executor import SyncTaskExecutor
    from .store import MemoryStore, read_usage

    store = MemoryStore()
    store.save_usage(read_usage(base / ".synctask" / "state.db"))  # sends of earlier or running runs count
    executor = SyncTaskExecutor(workers=1, store=store, base_dir=base)
    executor.load(plans, only=[name], start=False)
    try:
        found = asyncio.run(executor.probe(name))
    except TaskFailed as exc:
        err.print(f"probe {name}: {str(exc).split(': ', 1)[1]}", markup=False, highlight=False)
        return 1
    except SyncError as exc:
        _fail(exc)
    records = plans.datasets[plans.plan(name).dataset].options.get("records")
    out.print(f"probe {name}: the first task, {json.dumps(found.params, default=str)}", markup=False,
              highlight=False)
    where = f" at {records!r}" if records else ""
    out.print(f"  rows      {len(found.rows):,}{where}", markup=False, highlight=False)
    columns = sorted({k for row in found.rows for k in row})
    out.print(f"  columns   {', '.join(columns) or 'none'}", markup=False, highlight=False)
    for i, row in enumerate(found.rows[:3]):
        out.print(f"  {'first' if i == 0 else '':9} {json.dumps(row, ensure_ascii=False, default=str)[:200]}",
                  markup=False, highlight=False)
    nxt = json.dumps(dict(found.next_params), default=str) if found.next_params is not None else "none (one page)"
    out.print(f"  next      {nxt}", markup=False, highlight=False)
    return 0


_REFETCH = Annotated[Optional[list[str]], typer.Option(
    "--refetch", metavar="DATASET", help="Fetch this dataset's finished tasks again (after its sink moved); "
    "repeatable.")]
_WORKERS = Annotated[int, typer.Option("--workers", min=1, max=MAX_WORKERS, metavar="N", help="Concurrent tasks.")]
_STATE = Annotated[Optional[str], typer.Option(
    "--state", metavar="PATH", help="State database (default: .synctask/state.db beside the plan file).")]
_GRACE = Annotated[float, typer.Option(
    "--grace", min=0, metavar="SECONDS", help="Seconds in-flight tasks get after Ctrl-C or SIGTERM.")]
_SET = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="Set a plan-file key without editing the file (repeatable): "
    "--set vendors.tushare.base_url=http://127.0.0.1:9000. SYNCTASK__VENDORS__TUSHARE__BASE_URL=... does the "
    "same from the environment.")]
_WAIT = Annotated[bool, typer.Option(
    "--wait", metavar="", help="If another process uses the state, wait for it to end instead of refusing.")]
_RAY = Annotated[Optional[str], typer.Option(
    "--ray", metavar="ADDRESS", help="Run tasks on a Ray cluster: 'auto' (the one `ray start` made), an address, "
    "or 'local' (start one here). Needs pip install 'synctask\\[ray]'.")]
_RAY_WORKERS = Annotated[Optional[int], typer.Option(
    "--ray-workers", min=1, metavar="N", help="Ray actors to start (default: one per node), each with --workers "
    "slots.")]


@app.command()
def run(
    plan_file: Annotated[str, typer.Argument(metavar="PLANS.toml", help="The plan file (TOML) to run.")],
    plan: Annotated[Optional[list[str]], typer.Option(
        "--plan", metavar="NAME", help="Only these plans (repeatable).")] = None,
    workers: _WORKERS = 16,
    state: _STATE = None,
    grace: _GRACE = 10.0,
    plain: Annotated[bool, typer.Option(
        "--plain", metavar="", help="Plain progress lines even on a terminal.")] = False,
    json_lines: Annotated[bool, typer.Option(
        "--json", metavar="", help="Print every event, then the summary, as JSON lines (for scripts).")] = False,
    wait: _WAIT = False,
    ray: _RAY = None,
    ray_workers: _RAY_WORKERS = None,
    refetch: _REFETCH = None,
    sets: _SET = None,
) -> None:
    """Run plans now, in the foreground, with live progress. Ctrl-C stops gracefully and saves."""
    from .config import load_plan_file

    try:
        plans = load_plan_file(plan_file, sets=sets or ())
        selected = [plans.plan(name).name for name in plan] if plan else [p.name for p in plans.plans]
    except PlanFileError as exc:
        _fail(exc)
    _print_warnings(plans)
    base = Path(plan_file).resolve().parent
    state_path = Path(state) if state else base / ".synctask" / "state.db"
    resume = f"synctask run {shlex.quote(plan_file)}" + "".join(f" --plan {shlex.quote(p)}" for p in plan or [])
    if state:
        resume += f" --state {shlex.quote(state)}"
    _check_refetch(plans, refetch)
    executor = _build(plans, selected, workers=workers, state=state_path, base=base, grace=grace, wait=wait,
                      ray=_ray_address(ray), ray_workers=ray_workers, refetch=refetch or ())
    failed: SyncError | None = None
    try:
        summary = _run_engine(_drive(executor, plain=plain, json_lines=json_lines), fast=ray is None)
    except SyncError as exc:  # the Ray cluster could not be reached or used
        failed = exc
    finally:
        executor.close()
    if failed is not None:
        _fail(failed)
    raise typer.Exit(_finish(executor, summary, state=state_path, resume=resume, json_lines=json_lines))


GC_THRESHOLDS = (20_000, 20, 10)  # (700, 10, 10) by default: a young collection every 700 allocations


def _run_engine(main: Coroutine[Any, Any, T], *, fast: bool = True) -> T:
    """Run the engine on uvloop where it is installed (``fast``): its event loop is written in C,
    about 10% less CPU per request against a fast vendor; else, and on Ray, on asyncio's own.
    The garbage collector leaves alone what the start made (modules, config: it lives as long as
    the process) and looks for cycles less often (each request makes a few dozen objects; almost
    all go by reference counting): 2-4% less CPU against a fast vendor."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        try:
            import uvloop
        except ImportError:
            fast = False
        if not fast:
            return asyncio.run(main)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    finally:  # (as it was: the CLI's functions also run inside other programs, tests among them)
        gc.set_threshold(*before)
        gc.unfreeze()


@app.command()
def demo(
    directory: Annotated[str, typer.Option(
        "--dir", metavar="DIR", help="Where the demo writes its plan file, data and state.")] = ".",
    workers: _WORKERS = 16,
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535, metavar="PORT", help="The simulator's port (0: any free).")] = 0,
    plain: Annotated[bool, typer.Option(
        "--plain", metavar="", help="Plain progress lines even on a terminal.")] = False,
) -> None:
    """Sync four simulated vendors into Parquet, with live progress, a freeze and retries, then a summary."""
    from . import demo as sample
    from .config import load_plan_file
    from .simulator import Simulator

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TUSHARE_TOKEN", "demo-token")
    state = target / ".synctask" / "state.db"
    again = state.exists()
    simulator = Simulator(host="127.0.0.1", port=port, profiles=sample.demo_profiles())

    async def main() -> tuple[RunSummary, SyncTaskExecutor]:
        async with simulator:
            plan_path = sample.write_plan_file(target, simulator.url, simulator.port)
            out.print(f"synctask demo: simulated vendors on {simulator.url}; plan file [bold]{plan_path}[/]")
            if again:
                out.print("The demo ran here before: every finished task is skipped (delete the folders named "
                          "at the end to start over).\n")
            else:
                out.print("Four datasets sync at once, each under its vendor's limits, and no vendor should count a "
                          "single request over them. Watch [bold]binance-klines[/] spend request weights per clock "
                          "window, [bold]rest-items[/] pause when the API's RateLimit header says nothing is left, "
                          "and the 3% of requests answered 503 be retried.\n")
            plans = load_plan_file(plan_path)
            executor = _build(plans, [p.name for p in plans.plans], workers=workers, state=state, base=target,
                              grace=5.0)
            try:
                return await _drive(executor, plain=plain, json_lines=False), executor
            finally:
                executor.close()

    try:
        summary, executor = _run_engine(main())
    except OSError as exc:
        _fail(exc)
    code = _finish(executor, summary, state=state, resume=f"synctask demo --dir {shlex.quote(directory)}",
                   json_lines=False)
    sample.report(out, target, summary, executor, simulator)
    raise typer.Exit(code)


@app.command()
def simulate(
    profile: Annotated[str, typer.Option(
        "--profile", metavar="NAME", help="tushare, binance, rest, ws, hidden, all or demo.")] = "tushare",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, metavar="PORT", help="Where to listen.")] = 9000,
    host: Annotated[str, typer.Option(
        "--host", metavar="ADDRESS", help="Bind address (loopback unless you mean it).")] = "127.0.0.1",
    scale: Annotated[float, typer.Option(
        "--scale", min=0.001, metavar="X", help="Vendor seconds per real second (the demo profile: 60).")] = 1.0,
    faults: Annotated[str, typer.Option(
        "--faults", metavar="LIST",
        help="Injected faults, e.g. latency=5ms..40ms,stamp=0ms..50ms,5xx=0.03,malformed=0.01,drop=0.01")] = "",
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the faults' random draws.")] = 7,
    hidden: Annotated[str, typer.Option(
        "--hidden", metavar="LIMITS", help="The hidden profile's limits, never stated: '50 per 1s', "
        "'100 per 10s; 600 per 1m clock'.")] = "50 per 1s",
    state_limits: Annotated[bool, typer.Option(
        "--state-limits", help="The hidden profile states its limits after all, in IETF RateLimit-Policy "
        "and RateLimit headers.")] = False,
    per_key: Annotated[bool, typer.Option(
        "--per-key", help="The hidden profile counts its limits per API key (the bearer token, or ?key=); "
        "POST /_admin/revoke?key=K answers that key 401 from then on.")] = False,
    limit: Annotated[list[str] | None, typer.Option(
        "--limit", metavar="NAME=RATE/PER", help="A profile's limit instead of its own, repeatable: "
        "tushare, tushare-daily, binance (weight), rest, hidden; e.g. rest=1000000/1s (a per-minute "
        "profile takes the same pace per minute).")] = None,
    rate_headers: Annotated[bool, typer.Option(
        "--rate-headers/--no-rate-headers", help="The rest profile sends IETF RateLimit headers.")] = True,
    items_per_day: Annotated[int, typer.Option(
        "--items-per-day", min=1, metavar="N", help="The rest profile's items per day (its rows).")] = 35,
) -> None:
    """Run the vendor simulator on its own (stats at /_admin/stats); 'all' and 'demo' serve every vendor."""
    from .demo import demo_profiles
    from .simulator import PROFILES, Faults, Simulator, SimulatorConfig

    if profile not in (*PROFILES, "all", "demo"):
        _fail(ValueError(f"unknown profile {profile!r}; use tushare, binance, rest, ws, hidden, all or demo"))
    from .simulator.overrides import limit_overrides

    try:
        config = SimulatorConfig(profile, scale=scale, seed=seed, faults=Faults.parse(faults),
                                 hidden_limits=_hidden_limits(hidden), hidden_stated=state_limits,
                                 hidden_per_key=per_key, rest_rate_headers=rate_headers,
                                 rest_items_per_day=items_per_day)
        overrides = limit_overrides(limit or ())
        config = dataclasses.replace(config, **overrides)
    except ValueError as exc:
        _fail(exc)
    said = "".join(f"; {name} {_said_hidden(value) if isinstance(value, tuple) else f'{value:,}'}"
                   for name, value in overrides.items())
    simulator = Simulator(config, host=host, port=port, profiles=demo_profiles() if profile == "demo" else None)

    async def serve() -> None:
        async with simulator as sim:
            pace = "the demo's vendors, clocks 60x fast" if profile == "demo" else f"scale {scale:g}"
            out.print(f"simulating {profile} on {sim.url} ({pace}{said}); token 'demo-token'; Ctrl-C stops",
                      markup=False, highlight=False)
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except OSError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def serve(
    plan_file: Annotated[str, typer.Argument(metavar="PLANS.toml", help="The plan file (TOML) to serve.")],
    host: Annotated[str, typer.Option(
        "--host", metavar="ADDRESS", help="Address of the control API (default: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, metavar="PORT", help="Its port (0: any free).")
                    ] = 8737,
    workers: _WORKERS = 16,
    state: _STATE = None,
    grace: _GRACE = 10.0,
    wait: _WAIT = False,
    ray: _RAY = None,
    ray_workers: _RAY_WORKERS = None,
    allow_code: Annotated[bool, typer.Option(
        "--allow-code", help="Let plans added over the API run Python code (python: connectors) and write "
        "outside the data folder.")] = False,
    data_dir: Annotated[Optional[str], typer.Option(
        "--data", metavar="DIR", help="Where plans added over the API may write (default: the plan file's folder).")
                        ] = None,
    allow_host: Annotated[Optional[list[str]], typer.Option(
        "--allow-host", metavar="NAME", help="Another name this daemon answers to (Host header); repeatable.")
                          ] = None,
    metrics_public: Annotated[bool, typer.Option(
        "--metrics-public", help="Serve /metrics without the token (for a Prometheus without it).")] = False,
    refetch: _REFETCH = None,
    sets: _SET = None,
) -> None:
    """Run as a service: plans on their schedules, controlled over HTTP, until SIGTERM or Ctrl-C."""
    from .config import load_plan_file
    from .server.daemon import new_token
    from .server.daemon import serve as serve_forever
    from .server.guard import Policy, allowed_hosts

    given = os.environ.get("SYNCTASK_API_TOKEN") or None
    policy = Policy(token=given or new_token(), bound=host, hosts=allowed_hosts(allow_host or ()),
                    metrics_public=metrics_public)
    from .executor import SyncTaskExecutor
    from .server.service import Service

    try:
        plans = load_plan_file(plan_file, sets=sets or ())  # the file alone first: its problems, named as check does
    except PlanFileError as exc:
        _fail(exc)
    _print_warnings(plans)
    _check_refetch(plans, refetch)
    base = Path(plan_file).resolve().parent
    state_path = Path(state) if state else base / ".synctask" / "state.db"
    executor = SyncTaskExecutor(workers=workers, state=state_path, base_dir=base, grace=grace,
                                ray=_ray_address(ray), ray_workers=ray_workers)
    _open_state(executor, wait)
    try:
        service = Service(executor, plan_file, allow_code=allow_code,
                          data_dir=Path(data_dir).resolve() if data_dir else base, sets=sets or ())
        served = service.boot(refetch or ())  # the plans and states kept from the last time, with the file's changes
    except (SyncError, ValueError) as exc:
        executor.close()
        _fail(exc)

    def ready(where: Served) -> None:
        say = functools.partial(out.print, markup=False, highlight=False)
        say(f"synctask serve: {len(served.plans)} plan(s), control API on {where.url} (state {state_path})")
        if given is None:  # printed once, as Jupyter does: the page keeps it for the session
            say(f"synctask serve: open the dashboard at {where.url}/#token={policy.token}")
        else:
            say(f"synctask serve: open the dashboard at {where.url}/ (token: $SYNCTASK_API_TOKEN)")
        if where.problem:
            err.print(f"warning: {where.problem}", markup=False, highlight=False)

    def reloaded(message: str) -> None:
        out.print(f"synctask serve: {message}", markup=False, highlight=False)

    try:
        summary = _run_engine(serve_forever(executor, host, port, policy, ready, service, reloaded,
                                            plan_file=str(Path(plan_file).resolve()), state=str(state_path)),
                              fast=ray is None)
    except SyncError as exc:  # the port is taken, the address is not this machine's
        _fail(exc)
    finally:
        executor.close()
    failure = summary.failure or executor.delivery.failure
    for problem in [*summary.problems, *([failure] if failure else [])]:
        err.print(f"error: {problem}", markup=False, highlight=False)
    if failure is not None:
        err.print(f"Start it again once fixed: synctask serve {shlex.quote(plan_file)}", markup=False, highlight=False)
        raise typer.Exit(1)
    out.print(f"synctask serve: stopped; {sum(p['done'] for p in summary.plans.values()):,} tasks done in this "
              "process, progress saved", markup=False, highlight=False)


def _ray_address(address: str | None) -> str | None:
    """The --ray address, or exit 2 saying how to install Ray when it is not there."""
    if address is None:
        return None
    from .distributed import ray_available
    from .distributed.ray_pool import INSTALL

    if not ray_available():
        _fail(ValueError(f"--ray {address}: {INSTALL}"))
    return address


def _build(plans: PlanFile, selected: list[str], *, workers: int, state: Path, base: Path,
           grace: float, wait: bool = False, ray: str | None = None, ray_workers: int | None = None,
           refetch: Sequence[str] = ()) -> SyncTaskExecutor:
    """An executor with the selected plans loaded, started and its state open, or exit 2 naming
    what could not be built (exit 75 when another process holds the state: try again later)."""
    from .executor import SyncTaskExecutor

    try:
        executor = SyncTaskExecutor(workers=workers, state=state, base_dir=base, grace=grace, ray=ray,
                                    ray_workers=ray_workers)
        executor.load(plans, only=selected, start=False)
    except (SyncError, ValueError) as exc:
        _fail(exc)
    _open_state(executor, wait)  # the plans are sound: now the state, which one process may use at a time
    try:
        # A sink that moved since its tasks finished would miss their rows: say so before anything runs.
        executor.delivery.check_sinks(executor.catalog.plans.values(), refetch)
        for name in selected:
            executor.start_plan(name)
    except (SyncError, ValueError) as exc:
        executor.close()
        _fail(exc)
    return executor


def _check_refetch(plans: PlanFile, refetch: list[str] | None) -> None:
    for name in refetch or ():
        if name not in plans.datasets:
            _fail(PlanFileError(plans.source, [Problem(
                "--refetch", f"unknown dataset {name!r}{key_hint(name, list(plans.datasets))}")]))


def _open_state(executor: SyncTaskExecutor, wait: bool) -> None:
    """Open the executor's state file, or exit 75 when another process holds it (2 when damaged)."""
    from .lock import StateInUse
    from .store import StateDamaged

    try:
        executor.open_state(wait=wait, on_wait=lambda message: err.print(message, markup=False, highlight=False))
    except StateInUse as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)
        err.print("Nothing was run.")
        raise typer.Exit(75) from None
    except StateDamaged as exc:
        _fail(exc)


async def _drive(executor: SyncTaskExecutor, *, plain: bool, json_lines: bool) -> RunSummary:
    """Run the executor to the end (or an interrupt) with live progress or JSON events."""
    from .display import ProgressDisplay

    if json_lines:
        executor.listen(lambda event: print(event_json(event), flush=True))
        return await executor.run(handle_signals=True)
    task = asyncio.create_task(executor.run(handle_signals=True))
    display = ProgressDisplay(executor, out, plain=True if plain else None)
    return await display.run_until(task)


def _finish(executor: SyncTaskExecutor, summary: RunSummary, *, state: Path, resume: str, json_lines: bool) -> int:
    """Print the summary (and, after an interrupt, what was saved and how to resume); the exit status."""
    from .display import summary_table

    if json_lines:
        print(json.dumps({"type": "summary", "interrupted": summary.interrupted, "plans": summary.plans}), flush=True)
    else:
        out.print(summary_table(summary))
        for name, p in executor.progress.plans.items():
            # What a person must read: why a plan did not complete, or why its tasks failed.
            stats = summary.plans.get(name, {})
            ended = stats.get("state")
            if ended == "interrupted":
                continue  # the resume line below says it all; the last retry's words are stale
            message = p.last_message if ended not in (None, "completed") else p.last_failure
            if ended == "completed" and stats.get("failed"):
                out.print(f"{name}: completed with {stats['failed']:,} failed; the last: {message}",
                          markup=False, highlight=False)
            elif message:
                out.print(f"{name}: {message}", markup=False, highlight=False)
    for problem in summary.problems:
        err.print(f"error: {problem}", markup=False, highlight=False)
    failure = summary.failure or executor.delivery.failure
    if failure is not None:  # the state could not be written: the run ended at once
        err.print(f"error: {failure}", markup=False, highlight=False)
        err.print(f"Resume with: {resume}", markup=False, highlight=False)
        return 1
    if summary.interrupted:
        done = sum(s["done"] for s in summary.plans.values())
        left = sum((s["total"] or 0) - s["done"] - s["failed"] - s["skipped"] for s in summary.plans.values())
        err.print(f"Interrupted. Saved in {state}: {done:,} tasks finished in this run; "
                  f"{left:,} left, which the next run picks up (finished ones are skipped).")
        err.print(f"Resume with: {resume}", markup=False)
        return 130
    failed = sum(s["failed"] for s in summary.plans.values())
    if failed and not json_lines:
        err.print(f"{failed:,} task(s) failed (their reasons are above); running the same command again "
                  "retries them and skips what is done.", markup=False, highlight=False)
    broken = any(s["state"] == "failed" for s in summary.plans.values())
    if broken and not json_lines:
        err.print(f"Finished work is saved in {state}. Fix the cause above, then resume with: {resume}",
                  markup=False, highlight=False)
    return 1 if broken or failed or summary.problems else 0


def event_json(event: Event) -> str:
    """One event as a JSON line: its kind under "type" and its fields."""
    kind = type(event).__name__.removesuffix("Event").lower()
    return json.dumps({"type": kind, **dataclasses.asdict(event)}, ensure_ascii=False)


def _print_warnings(plans: PlanFile) -> None:
    for problem in plans.warnings:
        err.print(f"[bold yellow]warning:[/] {escape(f'{plans.source}: {problem}')}")


def _print_plans(plans: PlanFile, names: list[str]) -> None:
    now = datetime.now(UTC)
    for plan in plans.plans:
        if plan.name not in names:
            continue
        due = plan.schedule.next_due(now)
        tasks = len(plan.params.bind(due or now))
        retry = plan.retry
        vendor = plans.datasets[plan.dataset].vendor
        when = f"next due {due.isoformat(timespec='minutes')}" if due else "runs when started"
        http = not vendor_of(plans, plan.dataset).connector.startswith(("python:", "websocket"))
        timeout = format_duration(plan.timeout) if plan.timeout else "60s (the default)" if http else "none"
        out.print(f"plan {plan.name}  (dataset {plan.dataset}, vendor {vendor})", style="bold")
        paged = bool(plans.datasets[plan.dataset].options.get("pagination"))
        out.print(f"  tasks     {tasks:,}" + (", plus one for each further page found" if paged else ""))
        out.print(f"  schedule  {plan.schedule}, {when}")
        cursor = (plans.datasets[plan.dataset].options.get("incremental") or {})
        if cursor:
            others = ", ".join(name for name in plan.params.dims) or "the whole dataset"
            out.print(f"  cursor    each run asks ?{cursor['param']}= the highest {cursor['cursor']} written, per "
                      f"{others} (first run: {cursor['initial']}; lag {cursor.get('lag', 0)})", markup=False)
        if plan.schedule.kind != "manual":
            missed = {"all": "every missed due time runs, oldest first", "latest": "the latest missed due time runs",
                      "none": "missed due times are not run"}[plan.catch_up]
            overlap = "waits for the run before" if plan.overlap == "queue" else "is skipped while a run goes"
            out.print(f"  catch-up  {plan.catch_up}: {missed}; overlap {plan.overlap}: a due time {overlap}")
            out.print(f"  each run  {_each_run(plan)}")
        out.print(f"  priority  {plan.priority}   timeout {timeout}   retry {retry.attempts} attempts, "
                  f"backoff {format_duration(retry.base)}..{format_duration(retry.cap)}")


def _each_run(plan: SyncPlan) -> str:
    """What a scheduled run fetches, in words: a rolling range's new part, or its grid anew."""
    if not plan.rolling:
        return "fetches its whole grid anew (a snapshot per run)"
    ranges = ", ".join(plan.params.rolling)
    again = f", and the last {format_duration(plan.refresh)} again" if plan.refresh else ""
    return f"rolling over {ranges}: fetches only what no earlier run did{again}"


def vendor_of(plans: PlanFile, dataset: str) -> Vendor:
    return plans.vendors[plans.datasets[dataset].vendor]


def _print_datasets(plans: PlanFile, names: set[str]) -> None:
    for name, ds in plans.datasets.items():
        if name not in names:
            continue
        vendor = plans.vendors[ds.vendor]
        sink = ds.sink.get("kind", "none") if ds.sink else "none"
        out.print(f"dataset {name}  (api {ds.api}, weight {ds.weight}, sink {sink})", style="bold")
        if ds.sink:
            where = ds.sink.get("path") or ds.sink.get("table") or ""
            out.print(f"  sink      {sink} {where}  key {', '.join(ds.sink.get('key', [])) or 'none'}",
                      markup=False, highlight=False)
        out.print(f"  limits    dataset: {_limits(ds.limits)}{_learning(ds.learn)}", markup=False, highlight=False)
        margin = format_duration(vendor.margin) if vendor.margin else "none"
        out.print(f"            vendor {vendor.name}: {_limits(vendor.limits)}{_learning(vendor.learn)}  "
                  f"(margin {margin})", markup=False, highlight=False)
        if vendor.node_limits:
            out.print(f"            per node: {_limits(vendor.node_limits)}")


def _hidden_limits(text: str) -> tuple[tuple[int, float, bool], ...]:
    """``"100 per 10s; 600 per 1m clock"`` as the hidden profile's (rate, per, clock) limits."""
    from .learning import parse_rate

    found = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        clock = part.endswith(" clock")
        quota = parse_rate(part.removesuffix(" clock"))
        found.append((quota.rate, quota.per, clock))
    if not found:
        raise ValueError("--hidden needs at least one limit, like '50 per 1s'")
    return tuple(found)


def _said_hidden(limits: tuple[tuple[int, float, bool], ...]) -> str:
    return ", ".join(f"{rate:,} per {per:g}s" for rate, per, _ in limits)


def _limits(limits: tuple[Limit, ...]) -> str:
    return ", ".join(str(limit) for limit in limits) or "none"


def _learning(learn: Any) -> str:
    """How a scope learns its limits, said after its written ones."""
    if learn is None:
        return ""
    cap = f", never above {learn.cap}" if learn.cap is not None else ""
    return (f"; learned from its answers (stated in headers: adopted; else probing from {learn.start}{cap}; "
            "kept in the state)")


from . import learned_cli as _learned_cli  # noqa: E402,F401 - `synctask limits`: registered
from . import remote as _remote  # noqa: E402,F401 - the commands that talk to a daemon: registered


def main() -> None:
    """Entry point: typer's usage errors already exit 2; anything else unexpected is a bug."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except BrokenPipeError:  # `synctask run --json | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()

"""The ``synctask`` commands that talk to a running daemon: status, control, add, reload, workers,
events, history (which also reads a state file). Each finds the daemon and its token by itself
(see ``server.client``), prints a table on a terminal and plain text when piped, takes
``--json``, and says in a sentence when no daemon answers or it refuses (exit 1).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .console import app, err, fail, out
from .model import MAX_WORKERS
from .units import format_duration

_URL = Annotated[Optional[str], typer.Option(
    "--url", metavar="URL", help="The daemon (default: $SYNCTASK_URL, else http://127.0.0.1:8737).")]
_JSON = Annotated[bool, typer.Option("--json", metavar="", help="The daemon's answer as JSON.")]


@app.command()
def status(
    plan: Annotated[Optional[str], typer.Argument(metavar="[PLAN]", help="One plan, with its recent failures.")
                    ] = None,
    url: _URL = None,
    json_out: _JSON = False,
) -> None:
    """Show the daemon's plans: state, progress, rate, ETA, freezes, next run."""
    answer = _daemon(url, "GET", f"/api/plans/{_quote(plan)}" if plan else "/api/plans")
    if json_out:
        print(json.dumps(answer, indent=2))
        return
    views = [answer] if plan else answer["plans"]
    if not out.is_terminal:  # piped: one whole line per plan, nothing cut to a width
        for v in views:
            total = f"/{v['total']:,}" if v.get("total") is not None else ""
            eta = format_duration(v["eta_seconds"]) if v.get("eta_seconds") else "-"
            print(f"{v['name']}: {v['state']}, {v['done'] + v['skipped']:,}{total} done, {v['failed']:,} failed, "
                  f"{v['in_flight']} in flight, {v['rate']:.1f}/s, ETA {eta}, next run {v.get('next_due') or '-'}")
    else:
        _status_table(views)
    if not plan:  # and what every limit allows now, in words
        for scope in _daemon(url, "GET", "/api/vendors")["scopes"]:
            said = "; ".join(limit["text"] for limit in scope["limits"])
            if scope.get("learned"):
                said += f" ({scope['learned']})"
            if scope.get("key_refused"):
                said += f"; key {scope['key']} was refused by the vendor and is set aside"
            freeze = scope.get("freeze")
            if freeze is not None:
                until = datetime.fromisoformat(scope["frozen_until"]).timestamp()
                ends = format_duration(max(round(until - time.time()), 1))
                said += f"; {'banned' if freeze['ban'] else 'frozen'} for {ends}"
            out.print(f"  {scope['scope']}: {said}", markup=False, highlight=False)
        lent = _daemon(url, "GET", "/api/permits")
        out_now = sum(item["in_flight"] for item in lent["in_flight"])
        if out_now or lent["taken_last_minute"]:
            out.print(f"  permits to other programs: {out_now} out, {lent['taken_last_minute']} taken in the last "
                      "minute", markup=False, highlight=False)
    if plan:
        _print_failures(answer)


def _status_table(views: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("plan", "state", "done", "failed", "in flight", "rate/s", "eta", "next run"):
        table.add_column(column, justify="right" if column in ("done", "failed", "in flight", "rate/s") else "left")
    for v in views:
        total = f"/{v['total']:,}" if v.get("total") is not None else ""
        eta = format_duration(v["eta_seconds"]) if v.get("eta_seconds") else "-"
        table.add_row(v["name"], v["state"], f"{v['done'] + v['skipped']:,}{total}", f"{v['failed']:,}",
                      str(v["in_flight"]), f"{v['rate']:.1f}", eta, v.get("next_due") or "-")
    out.print(table)


def _print_failures(view: dict[str, Any]) -> None:
    """A plan's failed tasks (as the state keeps them: with their parameters), then its latest retries."""
    failed = view.get("failed_tasks") or []
    for task in failed[:10]:
        params = ", ".join(f"{k}={v}" for k, v in (task.get("params") or {}).items()) or task["task_id"]
        tries = f"{task['attempts']} {'try' if task['attempts'] == 1 else 'tries'}"
        said = f"failed after {tries}: {params}: {task['message']}"
        out.print(f"  {said}", markup=False, highlight=False)
    if len(failed) > 10:
        out.print(f"  ... and {len(failed) - 10} more failed tasks (--json lists them)", markup=False)
    for retry in [f for f in view.get("recent_failures") or [] if f["kind"] == "retry"][-5:]:
        said = f"retry (try {retry.get('attempt', '?')}): {retry['task_id']}: {retry['message']}"
        out.print(f"  {said}", markup=False, highlight=False)


def _control(action: str, help_text: str) -> None:
    def command(plan: Annotated[str, typer.Argument(metavar="PLAN", help="The plan's name.")], url: _URL = None,
                json_out: _JSON = False) -> None:
        if action == "remove":
            answer = _daemon(url, "DELETE", f"/api/plans/{_quote(plan)}")
        else:
            answer = _daemon(url, "POST", f"/api/plans/{_quote(plan)}/{action}")
        if json_out:
            print(json.dumps(answer))
        elif action == "remove":
            out.print(f"{plan}: removed", markup=False, highlight=False)
        elif answer.get("message"):  # nothing was done, and why (retry with no failed task)
            out.print(f"{plan}: {answer['message']}", markup=False, highlight=False)
        else:
            note = "" if answer.get("changed") else f" (already {answer['state']})"
            out.print(f"{plan}: {answer['state']}{note}", markup=False, highlight=False)

    command.__doc__ = help_text
    app.command(name=action)(command)


for _action, _help in (("start", "Start a plan on the daemon now (a stopped or paused one continues)."),
                       ("stop", "Stop a plan: in-flight tasks are cancelled and return to pending."),
                       ("pause", "Pause a plan: nothing more is sent; in-flight tasks finish."),
                       ("resume", "Resume a paused or stopped plan."),
                       ("cancel", "Cancel a plan's run: pending work is dropped."),
                       ("retry", "Run a plan's failed tasks again (once its run has ended)."),
                       ("remove", "Cancel a plan and forget it on the daemon (finished work stays recorded).")):
    _control(_action, _help)


@app.command()
def add(
    plan_file: Annotated[str, typer.Argument(metavar="PLANS.toml", help="Plans to add (TOML or JSON); they may use "
                                             "the daemon's vendors and datasets.")],
    url: _URL = None,
    json_out: _JSON = False,
) -> None:
    """Add plans to the running daemon (validated as check validates; kept across restarts)."""
    try:
        text = Path(plan_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(ValueError(f"{plan_file}: cannot read the file: {exc}"))
    kind = "application/json" if plan_file.endswith(".json") else "application/toml"
    answer = _daemon(url, "POST", "/api/plans", text, content_type=kind)
    if json_out:
        print(json.dumps(answer))
        return
    for view in answer["plans"]:
        out.print(f"{view['name']}: added, {view['state']}", markup=False, highlight=False)


@app.command()
def reload(url: _URL = None, json_out: _JSON = False) -> None:
    """Make the daemon read its plan file again: added, changed and removed plans apply."""
    answer = _daemon(url, "POST", "/api/reload")
    if json_out:
        print(json.dumps(answer))
        return
    said = [f"{kind}: {', '.join(names)}" for kind, names in answer.items() if names]
    out.print("; ".join(said) or "the plan file has no changes", markup=False, highlight=False)


@app.command(name="workers")
def set_workers(
    count: Annotated[int, typer.Argument(metavar="N", min=1, max=MAX_WORKERS, help="Concurrent tasks.")],
    url: _URL = None,
    json_out: _JSON = False,
) -> None:
    """Set how many tasks the daemon runs at once."""
    answer = _daemon(url, "PUT", "/api/workers", {"workers": count})
    if json_out:
        print(json.dumps(answer))
        return
    out.print(f"workers: {answer['workers']}", markup=False, highlight=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def permit(
    vendor: Annotated[str, typer.Argument(metavar="VENDOR", help="The vendor the command calls.")],
    command: Annotated[list[str], typer.Argument(metavar="-- COMMAND...", help="The command to run under the permit.")],
    dataset: Annotated[Optional[str], typer.Option("--dataset", metavar="NAME", help="Count it in this dataset's "
                                                   "limits too.")] = None,
    weight: Annotated[Optional[int], typer.Option("--weight", metavar="N", min=1, help="Its weight (default: the "
                                                  "dataset's, else 1).")] = None,
    wait: Annotated[float, typer.Option("--wait", metavar="SECONDS", min=0, help="The longest to wait for room.")
                    ] = 30.0,
    hold: Annotated[float, typer.Option("--hold", metavar="SECONDS", min=0.001, help="The longest the command may "
                                        "run before its request counts as answered.")] = 60.0,
    limited_exit: Annotated[Optional[int], typer.Option("--limited-exit", metavar="STATUS", help="The exit status "
                            "by which the command says the vendor refused it (429): the vendor freezes.")] = None,
    url: _URL = None,
) -> None:
    """Run one command under one permit from the daemon: it waits until the daemon's limits let
    one more request to VENDOR go, counts it like the daemon's own, and frees it when the command
    ends. The command gets SYNCTASK_PERMIT (its id) and SYNCTASK_KEY (the variable holding the key)."""
    import os
    import subprocess

    if not command:
        fail(ValueError("give the command after --, like: synctask permit tushare -- curl ..."))
    body: dict[str, Any] = {"vendor": vendor, "dataset": dataset, "wait": wait, "hold": hold}
    if weight is not None:
        body["weight"] = weight
    taken = _daemon(url, "POST", "/api/permits", body, timeout=wait + 30.0)
    env = {**os.environ, "SYNCTASK_PERMIT": taken["id"]}
    if taken.get("key"):
        env["SYNCTASK_KEY"] = taken["key"]
    outcome = "error"
    try:
        status = subprocess.run(command, env=env, check=False).returncode
        outcome = "done" if status == 0 else "rate_limited" if status == limited_exit else "error"
    except OSError as exc:
        err.print(f"error: cannot run {command[0]!r}: {exc}", markup=False, highlight=False)
        status = 127
    finally:
        _daemon(url, "POST", f"/api/permits/{_quote(taken['id'])}/answered", {"outcome": outcome})
    raise typer.Exit(status)


@app.command()
def events(
    url: _URL = None,
    tasks: Annotated[bool, typer.Option("--tasks", help="Also every task's start and end (busy).")] = False,
    progress: Annotated[bool, typer.Option("--progress", help="Also the twice-a-second progress snapshots.")
                        ] = False,
) -> None:
    """Follow the daemon's events as JSON lines: plan changes, failures, retries, freezes (Ctrl-C to stop)."""
    from .server.client import DaemonError, follow_events

    try:
        for event in follow_events(url, every_task=tasks):
            if progress or event.get("type") != "progress":
                print(json.dumps(event), flush=True)
    except DaemonError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None


def _daemon(url: str | None, method: str, path: str, body: object = None, content_type: str | None = None,
            hint: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """One call to the daemon; a clear message (and ``hint``) and exit 1 when none answers or it refuses."""
    from .server.client import DaemonError, call

    try:
        return call(url, method, path, body, timeout, content_type=content_type)
    except DaemonError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        if hint:
            err.print(hint, markup=False, highlight=False)
        raise typer.Exit(1) from None


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


@app.command()
def history(
    plan: Annotated[str, typer.Argument(metavar="PLAN", help="The plan's name.")],
    state: Annotated[Optional[Path], typer.Option(
        "--state", metavar="PATH", help="Read this state file (of `synctask run` or a daemon) instead of asking "
                                        "the daemon.")] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", min=1, help="The newest N runs.")] = 50,
    url: _URL = None,
    json_out: Annotated[bool, typer.Option("--json", metavar="", help="The runs as JSON.")] = False,
) -> None:
    """Show a plan's runs, newest first: logical time, how each ended, its counts, its last failure."""
    if state is not None:
        rows = _history_in(state, plan, limit)
    else:
        rows = _daemon(url, "GET", f"/api/plans/{_quote(plan)}/runs?limit={limit}",
                       hint="or read a state file: synctask history PLAN --state PATH")["runs"]
    if json_out:
        print(json.dumps({"plan": plan, "runs": rows}, indent=2))
        return
    if not rows:
        out.print(f"{plan}: no runs recorded yet", markup=False, highlight=False)
        return
    columns = ("logical time", "state", "started", "took", "done", "failed", "skipped", "rows", "retries",
               "freezes", "last failure")
    lines = [[r["logical_time"], r["state"], r["started_at"], _took(r),
              *(f"{r[key]:,}" for key in ("done", "failed", "skipped", "rows", "retries", "freezes")),
              r["message"] or ""] for r in rows]
    if not out.is_terminal:  # piped: every column whole, tab-separated (for cut, awk, a spreadsheet)
        for line in (columns, *lines):
            print("\t".join(line))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, justify="left" if column in ("logical time", "state", "started", "last failure")
                         else "right", overflow="fold")
    for line in lines:
        table.add_row(*line)
    out.print(table, markup=False, highlight=False)


def _took(row: dict[str, Any]) -> str:
    if not row["ended_at"]:
        return "-"
    seconds = (datetime.fromisoformat(row["ended_at"]) - datetime.fromisoformat(row["started_at"])).total_seconds()
    return format_duration(max(seconds, 0.0))


def _history_in(state: Path, plan: str, limit: int) -> list[dict[str, Any]]:
    """The plan's runs as a state file recorded them; a "running" run whose process is gone is
    interrupted (a kill -9 or a power cut: the next start takes it up)."""
    from .history import run_row
    from .lock import holder_of
    from .store import StateDamaged, read_history

    try:
        runs, plans = read_history(state, plan, limit)
    except StateDamaged as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if not runs and plans:
        import difflib

        close = difflib.get_close_matches(plan, plans, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        err.print(f"error: {state} has no run of plan {plan!r}{hint}; the plans it has runs of: {', '.join(plans)}",
                  markup=False, highlight=False)
        raise typer.Exit(1)
    orphaned = holder_of(state) is None
    return [run_row(run, orphaned=orphaned) for run in runs]

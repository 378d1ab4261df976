"""Live progress for the commands: a rich table on a terminal, plain lines anywhere else.

It reads ``Progress`` snapshots on a timer; it never touches the engine.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .executor import RunSummary, SyncTaskExecutor
from .progress import PlanProgress

__all__ = ["ProgressDisplay", "summary_table", "format_eta", "format_count"]


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_count(n: int) -> str:
    """Exact below 100,000 ("99,999"), then three significant digits ("123k", "1.10M"): a live
    column stays narrow; the summary keeps exact numbers."""
    if n < 100_000:
        return f"{n:,}"
    for size, unit in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if n >= size:
            value = n / size
            return f"{value:.3g}{unit}" if value < 1000 else f"{value:,.0f}{unit}"
    return str(n)


def _state(p: PlanProgress, now: float, *, compact: bool = False) -> str:
    """The plan's state; a frozen one says until when (``compact``: for how long, to fit a table)."""
    if p.frozen_until is not None and p.frozen_until > now and p.state == "running":
        if compact:
            return f"frozen {format_eta(math.ceil(p.frozen_until - now))}"
        until = datetime.fromtimestamp(p.frozen_until).strftime("%H:%M:%S")
        return f"frozen until {until}"
    return p.state


class ProgressDisplay:
    """Shows every plan's progress until stopped; ``plain`` forces periodic text lines."""

    def __init__(self, executor: SyncTaskExecutor, console: Console, *, plain: bool | None = None,
                 interval: float | None = None) -> None:
        self.executor = executor
        self.console = console
        self.plain = (not console.is_terminal) if plain is None else plain
        self.interval = interval if interval is not None else (5.0 if self.plain else 0.25)
        self._said: dict[str, str] = {}  # the last message printed per plan (plain lines)

    def table(self) -> Table:
        now = time.time()
        table = Table(expand=False, box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold underline",
                      caption=self._latest(), caption_justify="left")
        # Fits 80 columns: every cell on one line, a frozen plan says for how long ("frozen 3s").
        for column in ("plan", "state", "done/total", "failed", "rows", "rate/s", "ETA", "retries", "freezes"):
            table.add_column(column, justify="left" if column in ("plan", "state") else "right", no_wrap=True,
                             min_width=9 if column == "state" else None)
        for name in list(self.executor.progress.plans):
            p = self.executor.progress.snapshot(name, now)
            total = "?" if p.total is None else f"{p.total:,}"
            table.add_row(name, _state(p, now, compact=True), f"{p.done + p.skipped:,}/{total}", f"{p.failed:,}",
                          format_count(p.rows), f"{p.rate:.1f}", format_eta(p.eta), str(p.retries), str(p.freezes))
        return table

    def _latest(self) -> Text | None:
        """The newest message of a plan still at work, on one line: what is going on right now."""
        working = [p for p in self.executor.progress.plans.values()
                   if p.last_message and p.state in ("running", "paused", "stopped")]
        if not working:
            return None
        p = max(working, key=lambda p: p.last_message_at)
        return Text(f"{p.plan}: {p.last_message}", overflow="ellipsis", no_wrap=True, style="dim")

    def lines(self) -> list[str]:
        """A status line per plan, each followed by its newest message when that changed."""
        now = time.time()
        out = []
        for name in list(self.executor.progress.plans):
            p = self.executor.progress.snapshot(name, now)
            total = "?" if p.total is None else f"{p.total}"
            if p.messages and p.state == "running":  # a stream: one long task, counted in messages
                out.append(f"{name}: streaming, {p.messages:,} messages received, {p.rows} rows, "
                           f"{p.rate:.1f} messages/s, {p.retries} retries")
            else:
                out.append(f"{name}: {_state(p, now)}, {p.done + p.skipped}/{total} done, {p.failed} failed, "
                           f"{p.rows} rows, "
                           f"{p.rate:.1f}/s, ETA {format_eta(p.eta)}, {p.retries} retries, {p.freezes} freezes")
            if p.last_message and p.last_message != self._said.get(name) and p.state != "completed":
                self._said[name] = p.last_message
                out.append(f"  {p.last_message}")
        return out

    async def run_until(self, task: asyncio.Task[RunSummary]) -> RunSummary:
        """Refresh while ``task`` (the executor's run) goes on; return its result."""
        if self.plain:
            said: list[str] = []
            while not task.done():
                await asyncio.wait({task}, timeout=self.interval)
                lines = self.lines()
                if lines == said:
                    continue  # nothing moved (the run's end, a long freeze): no block said twice
                said = lines
                for line in lines:
                    self.console.print(line, markup=False, highlight=False)
            return task.result()
        with Live(self.table(), console=self.console, refresh_per_second=4, transient=False) as live:
            while not task.done():
                await asyncio.wait({task}, timeout=self.interval)
                live.update(self.table())
        return task.result()


def summary_table(summary: RunSummary) -> Table:
    table = Table(title="Summary", title_justify="left", box=None, pad_edge=False, padding=(0, 1, 0, 0),
                  header_style="bold underline")
    for column in ("plan", "state", "done", "skipped", "failed", "rows", "retries", "freezes"):
        table.add_column(column, justify="left" if column in ("plan", "state") else "right",
                         no_wrap=True, min_width=9 if column == "state" else None)
    for name, s in summary.plans.items():
        table.add_row(name, s["state"], f"{s['done']:,}", f"{s['skipped']:,}", f"{s['failed']:,}",
                      f"{s['rows']:,}", str(s["retries"]), str(s["freezes"]))
    return table

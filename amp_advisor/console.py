"""The terminal, through rich: consoles, the live tune display, the one-trial status line.

On a terminal, `tune` shows a live table of its trials under a progress bar; off a terminal (CI,
a log file) the same events print one plain line each. Colour follows rich's rules (NO_COLOR,
FORCE_COLOR, TERM=dumb). Tables for stdout go through `out_console()`, progress through
`err_console()`: stdout stays what scripts read (--json never comes here).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

LOG_WIDTH = 120  # off a terminal, without COLUMNS: wide enough that tables do not wrap in a log
LIVE_ROWS = 12  # the live table shows the latest trials; the full table stays when it ends
MiB = 2**20


def _console(file: Any) -> Console:
    width = None if file.isatty() or os.environ.get("COLUMNS") else LOG_WIDTH
    return Console(file=file, width=width, highlight=False, soft_wrap=False)


def out_console() -> Console:
    return _console(sys.stdout)


def err_console() -> Console:
    return _console(sys.stderr)


def print_out(renderable: RenderableType) -> None:
    """Print to stdout: as rich draws it on a terminal; off a terminal without the padding rich
    gives every cell (a log's lines end where their text does)."""
    console = out_console()
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    console.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def to_text(renderable: RenderableType, width: int = LOG_WIDTH) -> str:
    """A renderable as plain text (no colour): what a log or a test reads."""
    console = Console(width=width, no_color=True, highlight=False, force_terminal=False, record=True,
                      file=open(os.devnull, "w"))
    console.print(renderable)
    return console.export_text()


class PlainTable(Table):
    """A table whose strings are text, never rich markup: module names, reasons and paths carry
    brackets ("+fp32[encoder.attn]", "[/tmp]") that markup would swallow or refuse."""

    def __init__(self, *headers: str, title: str | None = None, **kwargs: Any) -> None:
        super().__init__(*(Column(header=Text(h)) for h in headers), title=Text(title) if title is not None else None,
                         **kwargs)

    def add_row(self, *cells: RenderableType | None, **kwargs: Any) -> None:
        super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kwargs)


def facts(title: str | None = None) -> Table:
    """A two-column label/value table without borders: the house style for key facts."""
    table = PlainTable(title=title, title_justify="left", show_header=False, box=None, pad_edge=False,
                       padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    return table


def grid(*columns: str, title: str | None = None) -> Table:
    """A table with a header row and a rule under it, right-aligned numbers left to the caller."""
    return PlainTable(*columns, title=title, title_justify="left", box=box.SIMPLE_HEAD, header_style="bold",
                      pad_edge=False, show_edge=False)


class StatusLine:
    """One trial's progress (bench, diagnose, probe --bench) on stderr: a transient line rewritten
    in place on a terminal, a line per phase off it."""

    def __init__(self, prefix: str = "", console: Console | None = None) -> None:
        self.console = console or err_console()
        self.prefix = prefix
        self._last_key: str | None = None
        self._status: Any = None

    def __call__(self, label: str, key: str | None = None) -> None:
        text = f"{self.prefix}{label} ..."
        if self.console.is_terminal:
            if self._status is None:
                self._status = self.console.status(Text(text))
                self._status.start()
            else:
                self._status.update(Text(text))
        elif key is None or key != self._last_key:
            self.console.print(text, markup=False)
        self._last_key = key

    def note(self, text: str) -> None:
        """A line that stays (above the transient status line on a terminal)."""
        self.console.print(Text(f"{self.prefix}{text}"))

    def done(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


@dataclass
class TrialRow:
    number: int
    role: str
    label: str
    status: str = "running"
    samples_per_s: float | None = None
    peak_memory_bytes: int | None = None
    why_not: str | None = None
    feasible: bool = False
    wall_s: float | None = None


@dataclass
class TuneDisplay:
    """The tuner's events -> the live trial table and progress bar (on a terminal) or one line per
    trial and phase (off it). Call it with each event; `stop()` when the run ends, however it ends."""

    console: Console = field(default_factory=err_console)
    rows: list[TrialRow] = field(default_factory=list)
    phase: str = "starting"
    planned: int = 0  # trials this phase plans
    done_in_phase: int = 0
    best: str | None = None  # the label of the best configuration so far
    budget_s: float | None = None
    _live: Live | None = None
    _final: bool = False

    def __post_init__(self) -> None:
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("{task.fields[clock]}"),
                             console=self.console, auto_refresh=False)
        self._task = self._bar.add_task("starting", total=None, clock="")

    # -- events ----------------------------------------------------------------------------------
    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "tune_phase":
            self.phase, self.planned, self.done_in_phase = event["phase"], event["planned"], 0
            self.budget_s = event.get("budget_s", self.budget_s)
            self._log(f"{self.phase}: {self.planned} trial{'s' if self.planned != 1 else ''}", when=self.planned > 0)
        elif kind == "diagnose_start":
            self._log(f"diagnose: X-ray of {event['dtype']} (trial {event['trial']} failed on numerics)")
        elif kind == "trial_start":
            self.rows.append(TrialRow(event["number"], event["role"], event["label"]))
        elif kind == "trial_end":
            self._ended(event)
        else:
            return
        self._refresh()

    def _ended(self, event: dict[str, Any]) -> None:
        row = self.rows[-1]  # the tuner ends each trial before it starts the next
        row.status, row.samples_per_s, row.feasible = event["status"], event.get("samples_per_s"), event["feasible"]
        row.why_not, row.peak_memory_bytes, row.wall_s = event.get("why_not"), event.get("peak_memory_bytes"), \
            event.get("wall_s")
        row.role = event.get("role", row.role)  # a trial that found its worker fresh ends as its warm-up
        if row.role != "warmup":  # a worker's warm-up is not one of the phase's planned trials
            self.done_in_phase += 1
        if event.get("best"):
            self.best = event["best"][0]
        outcome = f"{row.samples_per_s:.1f} samples/s" if row.feasible and row.samples_per_s else row.why_not
        self._log(f"trial {row.number} ({row.role}): {row.label}: {row.status}, {outcome}")

    def _log(self, line: str, when: bool = True) -> None:
        if when and not self.console.is_terminal:
            self.console.print(line, markup=False, highlight=False)

    # -- the live view -----------------------------------------------------------------------------
    def _refresh(self) -> None:
        if not self.console.is_terminal:
            return
        planned = max(self.planned, self.done_in_phase)
        self._bar.update(self._task, description=self.phase, completed=self.done_in_phase,
                         total=planned or None, clock=self._clock())
        if self._live is None:
            self._live = Live(self._view(), console=self.console, refresh_per_second=2, transient=False,
                              get_renderable=self._view)  # the clock moves during a long trial
            self._live.start()
        self._live.update(self._view(), refresh=True)

    def _clock(self) -> str:
        """The plan: what the phase's remaining trials should take at the mean trial so far, and
        the time budget (the elapsed time is the bar's own column)."""
        parts = []
        ended = [r.wall_s for r in self.rows if r.wall_s]
        left = max(self.planned - self.done_in_phase, 0)
        if ended and left:
            parts.append(f"phase ~{_mmss(left * sum(ended) / len(ended))} left")
        if self.budget_s:
            parts.append(f"budget {_mmss(self.budget_s)}")
        return ", ".join(parts)

    def _view(self) -> RenderableType:
        return Group(self._bar, self.table(latest=None if self._final else LIVE_ROWS))

    def table(self, latest: int | None = None) -> Table:
        """The trials so far (the latest `latest` of them), the best so far marked."""
        table = grid("#", "role", "configuration", "status", "samples/s", "peak memory", "")
        for column in table.columns:
            column.no_wrap = True
            column.justify = "right" if str(column.header) in ("#", "samples/s", "peak memory") else "left"
        table.columns[3].overflow, table.columns[3].max_width = "ellipsis", 48
        rows = self.rows if latest is None else self.rows[-latest:]
        for row in rows:
            best = row.label == self.best and row.feasible
            if row.feasible or row.status == "running":
                status = Text(row.status, style="green" if row.feasible else "yellow")
            else:
                status = Text(f"{row.status}: {row.why_not}", style="yellow" if row.status == "ok" else "red")
            table.add_row(str(row.number), row.role, row.label, status,
                          f"{row.samples_per_s:.1f}" if row.samples_per_s else "–",
                          f"{row.peak_memory_bytes / MiB:.0f} MiB" if row.peak_memory_bytes else "–",
                          Text("best so far", style="bold green") if best else "")
        if latest is not None and len(self.rows) > latest:
            table.caption = Text(f"(the latest {latest} of {len(self.rows)} trials)")
        return table

    def stop(self) -> None:
        """End the live view, leaving the whole table on the screen."""
        if self._live is not None:
            self._final = True
            self._live.update(self._view(), refresh=True)
            self._live.stop()
            self._live = None


def count(n: int | float) -> str:
    """A large count for people: 812, 4.2 k, 3.94 M, 1.1 B."""
    for factor, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n:g}"


def _mmss(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"

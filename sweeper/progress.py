"""A run's progress on stderr, fed by ``RunEvent``s: a live rich display on a terminal, plain
one-line events and a periodic one-line summary elsewhere (cron, Airflow, CI).

``RunTally`` counts what the events say (pure, no output); ``RunProgress`` shows it. Everything
shown goes through ``sweeper.terminal.printable``, so a parameter value holding ESC cannot drive
the terminal, and the plain form contains no control characters at all.
"""

from __future__ import annotations

import collections
import io
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from sweeper.config import Rate
from sweeper.journal import EventKind, RunEvent
from sweeper.ledger import state_of
from sweeper.state import State
from sweeper.terminal import printable

SUMMARY_EVERY = 30.0  # seconds between one-line summaries when stderr is not a terminal

# Shown even with --quiet (and --json): the run itself is in trouble or stops, or a decision was
# taken for the user (a stored as-of kept, nothing to rerun, a changed template) that must not be
# taken silently. Each combination's failure is in the summary that ends every run.
_QUIET = frozenset(
    {EventKind.PAUSED, EventKind.INTERRUPTED, EventKind.TIMED_OUT, EventKind.NOTICE}
)
# Errors of one combination: shown as lines in both the live and the plain form.
_ERRORS = _QUIET | {EventKind.REJECTED, EventKind.IN_DOUBT, EventKind.NOT_SENT, EventKind.CANCELED}
# Shown as lines by default, besides errors: what the run decided, and each outcome.
_PLAIN = _ERRORS | {
    EventKind.PLAN,
    EventKind.DECISIONS,
    EventKind.SUBMITTED,
    EventKind.DUPLICATE,
    EventKind.RECONCILED,
    EventKind.FINISHED,
}
# On a terminal the display shows outcomes; lines are for what needs reading.
_LIVE = _ERRORS | {EventKind.PLAN, EventKind.DECISIONS}


def _clock(seconds: float | None) -> str:
    """``0:01:05``, or ``-:--:--`` when unknown."""
    if seconds is None:
        return "-:--:--"
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _window(per_seconds: float) -> str:
    names = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}
    return names.get(per_seconds, f"{per_seconds:g}s")


class RunTally:
    """What a run's events add up to: counts, the POST rate, and an estimate of the time left."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.total = 0
        self.to_submit = 0  # submissions and resends the plan calls for
        self.rate: Rate | None = None
        self.done = 0  # combinations whose fate in this run is settled
        self.attempted = 0  # combinations whose submission has begun
        self.submitted = 0  # accepted by the server (201, or 304 found)
        self.running = 0
        self.succeeded = 0
        self.failed = 0
        self.in_doubt = 0
        self.not_sent = 0
        self.rate_limited = 0  # 429 answers
        self.retries = 0
        self.posts: collections.deque[float] = collections.deque()  # when POSTs were answered
        self.durations: list[float] = []
        self.last_post: float | None = None

    def add(self, event: RunEvent) -> None:
        now = self.clock()
        kind = event.kind
        if kind is EventKind.PLAN and event.counts is not None:
            self.total = event.counts.total
            self.to_submit = event.counts.by_action["submit"] + event.counts.by_action["resend"]
            self.rate = event.rate
        elif kind is EventKind.SKIP:
            self.done += 1
            last = state_of(event.item.last if event.item is not None else None)
            if last is State.SUCCEEDED:
                self.succeeded += 1
            elif last.is_failure:
                self.failed += 1
        elif kind is EventKind.WAIT:
            self.running += 1
        elif kind is EventKind.SUBMIT:  # emitted before the pacer lets the POST go
            self.attempted += 1
        elif kind is EventKind.RETRY:
            self.retries += 1
            self.rate_limited += event.http_status == 429
            self._answered(now)
        elif kind in (EventKind.SUBMITTED, EventKind.DUPLICATE, EventKind.RECONCILED):
            self.submitted += 1
            self.running += 1
            self._answered(now)
        elif kind is EventKind.FINISHED:
            self.running = max(0, self.running - 1)
            self.done += 1
            if event.state is State.SUCCEEDED:
                self.succeeded += 1
            else:
                self.failed += 1
            if event.duration_s is not None:
                self.durations.append(event.duration_s)
        elif kind in (EventKind.IN_DOUBT, EventKind.NOT_SENT, EventKind.REJECTED):
            self._answered(now)
            self.done += 1
            if kind is EventKind.IN_DOUBT:
                self.in_doubt += 1
            elif kind is EventKind.NOT_SENT:
                self.not_sent += 1
            else:
                self.failed += 1
        elif kind is EventKind.TIMED_OUT and event.item is not None:
            self.running = max(0, self.running - 1)
            self.done += 1

    def _answered(self, now: float) -> None:
        """One POST came back (an outcome, or an answer that is retried): count it for the rate."""
        self.posts.append(now)
        self.last_post = now

    def post_rate(self) -> int:
        """POSTs sent in the last window of ``run.rate`` (to compare with its count)."""
        window = self.rate.per_seconds if self.rate is not None else 60.0
        horizon = self.clock() - window
        while self.posts and self.posts[0] < horizon:
            self.posts.popleft()
        return len(self.posts)

    def typical_duration(self) -> float | None:
        """The median job group duration seen so far in this run."""
        return statistics.median(self.durations) if self.durations else None

    def eta(self) -> float | None:
        """Seconds left: the submissions still to send at ``run.rate``, plus a typical job."""
        if self.total and self.done >= self.total:
            return 0.0
        typical = self.typical_duration()
        remaining = max(0, self.to_submit - self.attempted)
        if remaining:
            per_second = self.rate.per_second if self.rate is not None else 1.0
            return remaining / per_second + (typical or 0.0)
        if typical is None:
            return None  # every request is sent; no job has ended yet to say how long they take
        since = self.clock() - self.last_post if self.last_post is not None else 0.0
        return max(0.0, typical - since)

    def elapsed(self) -> float:
        return self.clock() - self.started

    def counts_line(self) -> str:
        parts = [
            f"submitted {self.submitted}",
            f"running {self.running}",
            f"succeeded {self.succeeded}",
            f"failed {self.failed}",
            f"in doubt {self.in_doubt}",
            f"rate-limited {self.rate_limited}",
        ]
        if self.not_sent:
            parts.append(f"not sent {self.not_sent}")
        if self.retries:
            parts.append(f"retries {self.retries}")
        if self.rate is not None:
            parts.append(
                f"POSTs {self.post_rate()}/{self.rate.count} per {_window(self.rate.per_seconds)}"
            )
        return " · ".join(parts)

    def summary_line(self) -> str:
        """The periodic one-line summary of the plain form."""
        return (
            f"[sweeper] {self.done}/{self.total} done · {self.counts_line()} · "
            f"elapsed {_clock(self.elapsed())} · ETA {_clock(self.eta())}"
        )


class _Eta(TextColumn):
    """The tally's estimate, recomputed at every refresh (not only on events)."""

    def __init__(self, tally: RunTally) -> None:
        super().__init__("")
        self.tally = tally

    def render(self, task: object) -> Text:  # type: ignore[override]
        return Text(f"ETA {_clock(self.tally.eta())}")


class _Counts:
    """The second line of the display: the tally's counts, rendered fresh at every refresh."""

    def __init__(self, tally: RunTally) -> None:
        self.tally = tally

    def __rich__(self) -> RenderableType:
        return Text(self.tally.counts_line(), style="dim", no_wrap=True, overflow="ellipsis")


class _ConsoleWriter(io.TextIOBase):
    """A stream for logging handlers that prints each line through the live display's console,
    so log lines scroll above the bar instead of being written into the middle of it."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.console.print(Text(printable(line)), highlight=False)
        return len(text)


class RunProgress:
    """Shows a run's events on ``stream`` (stderr): live on a terminal, plain lines elsewhere.

    While the live display runs, the root logger's handlers that write to ``stream`` write
    through its console instead (``-v`` lines scroll above the bar; the handlers themselves, and
    so their filters, stay as they are), and get their stream back when it stops.

    ``verbose`` prints every event as a line, ``quiet`` only errors (no display, no summary).
    ``terminal`` overrides the TTY test; ``console`` replaces the rich console (tests).
    ``summary_every`` is the period of the one-line summary of the plain form.
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        verbose: int = 0,
        quiet: bool = False,
        terminal: bool | None = None,
        console: Console | None = None,
        summary_every: float = SUMMARY_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.verbose = verbose
        self.quiet = quiet
        self.tally = RunTally(clock)
        if terminal is None:
            terminal = console.is_terminal if console is not None else self.stream.isatty()
        self.live: Live | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.console = console or Console(file=self.stream, force_terminal=terminal or None)
        if quiet:
            return
        if terminal:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=30),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                _Eta(self.tally),
                console=self.console,
                auto_refresh=False,
            )
            self._task = self._bar.add_task("sweeper", total=None)
            self._rerouted: list[logging.StreamHandler[TextIO]] = []
            self.live = Live(
                Group(self._bar, _Counts(self.tally)),
                console=self.console,
                refresh_per_second=4,  # rich's own timer: elapsed and ETA move between events
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.live.start()
            self._route_logging()
        elif summary_every > 0:
            self._ticker = threading.Thread(
                target=self._tick, args=(summary_every,), name="sweeper-progress", daemon=True
            )
            self._ticker.start()

    def event(self, event: RunEvent) -> None:
        """Count the event, and print it as a line if this mode shows it."""
        with self._lock:
            self.tally.add(event)
            if self.live is not None:
                total = self.tally.total or None
                self._bar.update(self._task, completed=self.tally.done, total=total)
            if not self._shown(event):
                return
            line = printable(event.message)
            if self.live is not None:
                self.console.print(Text(line), highlight=False)
            else:
                print(line, file=self.stream, flush=True)

    def _shown(self, event: RunEvent) -> bool:
        if self.verbose:
            return True
        if self.quiet:
            return event.kind in _QUIET
        if event.kind is EventKind.FINISHED and event.state is not State.SUCCEEDED:
            return True  # a failed job group is an error
        if event.kind is EventKind.SUBMIT and self.live is None:
            # A resend or a rerun says why a request is sent again; a first submission is
            # covered by the plan's decision lines.
            item = event.item
            return item is not None and (item.action.value != "submit" or item.generation > 0)
        return event.kind in (_LIVE if self.live is not None else _PLAIN)

    def _route_logging(self) -> None:
        """Point the root logger's handlers that write to the display's stream at its console."""
        writer = _ConsoleWriter(self.console)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self.stream:
                handler.setStream(writer)  # type: ignore[arg-type]
                self._rerouted.append(handler)

    def _restore_logging(self) -> None:
        for handler in self._rerouted:
            handler.setStream(self.stream)
        self._rerouted.clear()

    def _tick(self, period: float) -> None:
        while not self._stop.wait(period):
            with self._lock:
                print(self.tally.summary_line(), file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the display or the summaries; idempotent."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self.live is not None:
            with self._lock:
                self._bar.update(self._task, completed=self.tally.done)
                self.live.stop()
                self._restore_logging()
            self.live = None

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""`sweeper run`'s progress: a live display on a terminal, plain lines and summaries elsewhere."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console

from sweeper.cli import cli
from sweeper.config import Rate
from sweeper.journal import EventKind, RunEvent
from sweeper.planner import PlanCounts
from sweeper.progress import RunProgress, RunTally
from sweeper.redact import install_redaction, uninstall_redaction
from sweeper.state import State
from tests.conftest import FAST_RUN

EVIL = "\x1b]0;pwned\x07"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _plan(total: int, submit: int) -> RunEvent:
    counts = PlanCounts(total=total)
    counts.by_action["submit"] = submit
    counts.by_action["skip"] = total - submit
    return RunEvent(
        EventKind.PLAN, f"sweep run r: {total} combinations", counts=counts, rate=Rate(6, 60.0)
    )


def _events() -> list[RunEvent]:
    return [
        _plan(6, 4),
        RunEvent(EventKind.DECISIONS, "2 already succeeded, skipped"),
        RunEvent(EventKind.SUBMIT, f"submit Region={EVIL}"),
        RunEvent(EventKind.SUBMITTED, f"submitted Region={EVIL}: job group 1"),
        RunEvent(EventKind.RETRY, "Region=02: 429 — retrying in 1.0s", http_status=429),
        RunEvent(
            EventKind.FINISHED,
            "finished Region=01: job group 1 Complete",
            state=State.SUCCEEDED,
            duration_s=10.0,
        ),
        RunEvent(
            EventKind.FINISHED,
            f"finished Region={EVIL}: job group 2 Failed",
            state=State.FAILED,
            duration_s=20.0,
        ),
    ]


def test_the_tally_counts_events_and_estimates_the_time_left() -> None:
    clock = FakeClock()
    tally = RunTally(clock)
    tally.add(_plan(6, 4))
    assert tally.eta() is not None and tally.eta() == 4 / 0.1  # 4 POSTs at 6/min, no job yet
    for event in _events()[1:]:
        tally.add(event)
    assert (tally.submitted, tally.succeeded, tally.failed, tally.rate_limited) == (1, 1, 1, 1)
    assert tally.done == 2 and tally.total == 6
    # 3 submissions left at 0.1/s, plus the median job (15 s).
    assert tally.eta() == 3 / 0.1 + 15.0
    assert tally.post_rate() == 2  # the 201 and the 429, answered in the last minute
    clock.now += 61
    assert tally.post_rate() == 0


def test_without_a_terminal_lines_are_plain_and_a_summary_comes_periodically() -> None:
    stream = io.StringIO()
    progress = RunProgress(stream=stream, terminal=False, summary_every=0.05)
    for event in _events():
        progress.event(event)
    deadline = time.monotonic() + 10
    while "[sweeper] " not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.02)
    progress.close()
    out = stream.getvalue()
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "[sweeper] 2/6 done" in out and "ETA" in out and "rate-limited 1" in out
    assert "submitted Region=\\x1b]0;pwned\\x07: job group 1" in out
    assert "retrying" not in out  # a retry is counted, not printed
    assert "2 already succeeded, skipped" in out


def test_quiet_prints_only_what_stops_the_run_and_notes() -> None:
    stream = io.StringIO()
    events = [*_events(), RunEvent(EventKind.PAUSED, "PAUSED: the platform refused 5 requests")]
    with RunProgress(stream=stream, terminal=False, quiet=True, summary_every=0.01) as progress:
        for event in events:
            progress.event(event)
    # Failures of single combinations are in the summary that ends the run.
    assert stream.getvalue().splitlines() == ["PAUSED: the platform refused 5 requests"]


def test_verbose_prints_every_event() -> None:
    stream = io.StringIO()
    with RunProgress(stream=stream, terminal=False, verbose=1, summary_every=0) as progress:
        for event in _events():
            progress.event(event)
    assert "retrying in 1.0s" in stream.getvalue()
    assert len(stream.getvalue().splitlines()) == len(_events())


def test_on_a_terminal_the_display_shows_the_bar_the_counts_and_an_eta() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    progress = RunProgress(console=console)
    for event in _events():
        progress.event(event)
    progress.close()
    out = buffer.getvalue()
    assert "━" in out and "2/6" in out and "ETA" in out
    assert "rate-limited 1" in out and "POSTs 2/6 per min" in out
    assert "retrying" not in out  # counted, not printed
    assert EVIL not in out and "\\x1b]0;pwned\\x07" in out  # the failure line, escaped


def test_log_lines_scroll_above_the_live_display_masked_and_escaped() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    install_redaction(["s3cret-token-value"])
    try:
        console = Console(file=buffer, force_terminal=True, width=120)
        progress = RunProgress(stream=buffer, console=console)
        assert handler.stream is not buffer  # while live: written through the display
        logging.getLogger("sweeper.waiter").warning(
            "polling job group 7 failed: %s s3cret-token-value", EVIL
        )
        progress.close()
        assert handler.stream is buffer  # and back when the display stops
    finally:
        uninstall_redaction()
        root.removeHandler(handler)
    out = buffer.getvalue()
    assert "WARNING sweeper.waiter: polling job group 7 failed" in out
    assert "s3cret-token-value" not in out and "***" in out  # the handler's filter still applies
    assert EVIL not in out and "\\x1b]0;pwned\\x07" in out


def _config(project: Path) -> Path:
    path = project / "configs" / "regions.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.split("[run]")[0] + FAST_RUN + "\n[retry]" + text.split("[retry]")[1],
        encoding="utf-8",
    )
    return path


def test_a_resume_prints_one_line_per_decision_class(project: Path) -> None:
    config = _config(project)
    first = CliRunner().invoke(cli, ["run", str(config), "--run-id", "n1"])
    assert first.exit_code == 0, first.output
    assert "\x1b" not in first.stderr  # not a terminal: no control characters at all
    again = CliRunner().invoke(cli, ["run", str(config), "--run-id", "n1"])
    assert again.exit_code == 0, again.output
    assert "6 already succeeded, skipped" in again.stderr
    assert "skip Region=" not in again.stderr
    verbose = CliRunner().invoke(cli, ["run", str(config), "--run-id", "n1", "-v"])
    assert verbose.stderr.count("skip Region=") == 6

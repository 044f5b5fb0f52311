"""The CSV ledger: round trip, durability, locking, torn tails, validation, folding."""

from __future__ import annotations

import csv
import fcntl
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeper import ledger as ledger_mod
from sweeper.errors import LedgerError, LedgerLockedError
from sweeper.ledger import (
    COLUMNS,
    SCHEMA,
    Event,
    Ledger,
    LedgerRow,
    current_state,
    failed,
    is_terminal,
    needs_reconcile,
    read_ledger,
    runs,
    state_of,
    succeeded,
    utc_timestamp,
)

PARAMS = ("Region", "varReferenceType")


def make_row(combo: str = "c1", event: Event = Event.INTENT, **kw: object) -> LedgerRow:
    base: dict[str, object] = {
        "ts": "2026-11-29T12:00:00.123Z",
        "sweep": "regions",
        "run_id": "2026-11-29",
        "combo_id": combo,
        "event": event,
        "params": {"Region": "01", "varReferenceType": "PROD"},
    }
    base.update(kw)
    return LedgerRow(**base)  # type: ignore[arg-type]


def full_row() -> LedgerRow:
    return make_row(
        "c9",
        Event.FINISHED,
        attempt=2,
        generation=1,
        execution_id="swp-abc",
        params={"Region": "01", "varReferenceType": "PROD"},
        http_status=201,
        job_group_id=4242,
        session_id="sess-1",
        job_ids=(7, 8, 9),
        status="Complete",
        error="",
        duration_s=12.345,
        request_id="req-1",
        config_hash="abcdef012345",
        as_of="2026-11-29",
        reason="rerun failed",
        outputs_ok="yes",
    )


def open_ledger(path: Path, sweep: str = "regions") -> Ledger:
    return Ledger.open(path, sweep=sweep, param_names=PARAMS)


def test_round_trip_every_field(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "regions.csv"
    rows = [make_row("c1"), full_row(), make_row("c2", Event.NOT_SENT, error="connect failed")]
    with open_ledger(path) as led:
        for row in rows:
            led.append(row)
        assert list(led.rows) == rows
    assert read_ledger(path) == rows
    with open_ledger(path) as again:
        assert again.history() == rows
        assert again.torn_tail is None


def test_file_layout_header_and_param_columns(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with open_ledger(path) as led:
        led.append(full_row())
    text = path.read_text("utf-8")
    assert text.endswith("\n") and "\r" not in text
    header, line = list(csv.reader(io.StringIO(text)))
    assert header == [*COLUMNS, "param.Region", "param.varReferenceType"]
    record = dict(zip(header, line, strict=True))
    assert record["schema"] == SCHEMA
    assert record["params_json"] == '{"Region":"01","varReferenceType":"PROD"}'
    assert record["job_ids"] == "7 8 9"
    assert record["param.Region"] == "01"
    assert record["duration_s"] == "12.345"
    assert record["http_status"] == "201"


def test_later_added_parameter_lives_in_params_json(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with open_ledger(path) as led:
        led.append(make_row())
    with Ledger.open(path, sweep="regions", param_names=[*PARAMS, "Day"]) as led:
        assert led.param_columns == PARAMS
        led.append(make_row("c2", params={"Region": "02", "varReferenceType": "X", "Day": "d"}))
    rows = read_ledger(path)
    assert rows[1].params["Day"] == "d"
    assert path.read_text().splitlines()[0].count("param.") == 2


def test_fsync_per_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "l.csv"
    led = open_ledger(path)
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(ledger_mod.os, "fsync", counting)
    for i in range(5):
        led.append(make_row(f"c{i}"))
        assert len(calls) == i + 1  # durable before append returns
    led.close()


def test_new_file_fsyncs_file_and_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(ledger_mod.os, "fsync", recording)
    with open_ledger(tmp_path / "l.csv"):
        pass
    assert str(tmp_path / "l.csv") in synced
    assert str(tmp_path) in synced


def test_second_open_same_process_is_locked_and_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    first = open_ledger(path)
    first.append(make_row())
    before = path.read_bytes()
    with pytest.raises(LedgerLockedError) as info:
        open_ledger(path)
    message = str(info.value)
    assert str(path) in message and "another sweeper" in message and "resume" in message
    assert path.read_bytes() == before
    first.close()
    with open_ledger(path) as second:  # released on close
        assert len(second.rows) == 1


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with open_ledger(path) as led:
        led.append(make_row())
    before = path.read_bytes()
    script = (
        "import sys, time\n"
        "from sweeper.ledger import Ledger\n"
        "led = Ledger.open(sys.argv[1], sweep='regions', param_names=[])\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(LedgerLockedError):
            open_ledger(path)
        assert path.read_bytes() == before
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=30)
    with open_ledger(path):  # the lock dies with the process
        pass


def test_torn_tail_is_quarantined_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    done = make_row("c1", Event.FINISHED, status="Complete", job_group_id=1)
    with open_ledger(path) as led:
        led.append(done)
        led.append(make_row("c2"))
    good = path.read_bytes()
    torn = b"sweeper-ledger/1,2026-11-29T12:00:01.000Z,regions,2026-11-29,c1,intent,1"
    path.write_bytes(good + torn)
    assert read_ledger(path) == [done, make_row("c2")]  # read-only: ignores the tail...
    assert path.read_bytes() == good + torn  # ...and leaves the file alone
    with open_ledger(path) as led:
        assert led.torn_tail is not None
        assert led.torn_tail.quarantine.read_bytes() == torn
        assert led.torn_tail.quarantine.name.startswith("l.csv.torn-")
        assert path.read_bytes() == good
        led.append(make_row("c3"))
    rows = read_ledger(path)
    assert [r.combo_id for r in rows] == ["c1", "c2", "c3"]
    assert succeeded(current_state(rows)["c1"])  # the cut INTENT for c1 never happened


def test_torn_header_restarts_the_file(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_bytes(b"schema,ts,swe")
    assert read_ledger(path) == []
    with open_ledger(path) as led:
        assert led.torn_tail is not None
        led.append(make_row())
    assert len(read_ledger(path)) == 1


def test_empty_file_gets_a_header(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.touch()
    with open_ledger(path) as led:
        led.append(make_row())
    assert read_ledger(path) == [make_row()]


def test_other_sweep_refused_without_changes(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with open_ledger(path, sweep="nightly") as led:
        led.append(make_row(sweep="nightly"))
    path.write_bytes(path.read_bytes() + b"torn")
    before = path.read_bytes()
    with pytest.raises(LedgerError) as info:
        open_ledger(path, sweep="regions")
    message = str(info.value)
    assert "'nightly'" in message and "'regions'" in message and "sweep.ledger" in message
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.torn-*"))
    with pytest.raises(LedgerError):
        read_ledger(path, sweep="regions")


def test_not_a_ledger_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text("name,value\na,1\n")
    with pytest.raises(LedgerError, match="not a sweeper ledger"):
        open_ledger(path)
    with pytest.raises(LedgerError, match="not a sweeper ledger"):
        read_ledger(path)
    assert path.read_text() == "name,value\na,1\n"


def test_other_schema_version_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with open_ledger(path) as led:
        led.append(make_row())
    path.write_text(path.read_text().replace(SCHEMA, "sweeper-ledger/2"))
    with pytest.raises(
        LedgerError, match=r"schema version sweeper-ledger/2.*reads sweeper-ledger/1"
    ):
        read_ledger(path)
    path.write_text("schema,ts,something_else\n")
    with pytest.raises(LedgerError, match="different columns"):
        open_ledger(path)


def test_damaged_row_reported_with_line(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with open_ledger(path) as led:
        led.append(make_row())
    text = path.read_text().replace(",intent,", ",exploded,")
    path.write_text(text)
    with pytest.raises(LedgerError, match="Line 2"):
        read_ledger(path)


def test_unusable_path_is_a_ledger_error(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(LedgerError, match=r"dir\.csv"):
        open_ledger(tmp_path / "dir.csv")
    with pytest.raises(LedgerError, match=r"dir\.csv"):
        read_ledger(tmp_path / "dir.csv")
    fd = os.open(tmp_path / "dir.csv.lock", os.O_RDWR)
    try:  # the failed open released its lock
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_missing_file_is_a_ledger_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger"):
        read_ledger(tmp_path / "absent.csv")


@pytest.mark.parametrize(
    "value",
    ["a,b", 'say "hi"', "Zürich ✓ 東京", "=HYPERLINK(1)", "+1", "-2", "@x", ""],
)
def test_awkward_param_values_round_trip_raw(tmp_path: Path, value: str) -> None:
    path = tmp_path / "l.csv"
    row = make_row(params={"Region": value, "varReferenceType": "PROD"}, error=value)
    with open_ledger(path) as led:
        led.append(row)
    assert read_ledger(path) == [row]  # the machine ledger is never neutralised


def test_newlines_and_control_characters_are_sanitised(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    row = make_row(
        params={"Region": "a\nb", "varReferenceType": "c\r\nd"},
        error="line1\nline2\r\tend\x00\u2028x" + "y" * 1000,
        reason="resume:\nin doubt",
    )
    with open_ledger(path) as led:
        led.append(row)
        stored = led.rows[0]
    lines = path.read_bytes().split(b"\n")
    assert len(lines) == 3 and lines[2] == b""  # header, one record, final newline
    back = read_ledger(path)[0]
    assert back == stored
    assert back.params == {"Region": "a\nb", "varReferenceType": "c\r\nd"}  # exact via JSON
    assert back.error.startswith("line1 line2  end  x")
    assert len(back.error) == 500
    assert back.reason == "resume: in doubt"


def test_append_to_closed_or_foreign_sweep_is_misuse(tmp_path: Path) -> None:
    led = open_ledger(tmp_path / "l.csv")
    with pytest.raises(ValueError):
        led.append(make_row(sweep="other"))
    led.close()
    led.close()  # idempotent
    with pytest.raises(ValueError):
        led.append(make_row())


def test_current_state_runs_and_classifiers() -> None:
    rows = [
        make_row("a", Event.INTENT, run_id="r1"),
        make_row("a", Event.SUBMITTED, run_id="r1", job_group_id=1),
        make_row("a", Event.FINISHED, run_id="r1", status="Failed"),
        make_row("b", Event.INTENT, run_id="r1"),
        make_row("a", Event.INTENT, run_id="r2"),
        make_row("a", Event.FINISHED, run_id="r2", status="Complete", outputs_ok="yes"),
        make_row("b", Event.IN_DOUBT, run_id="r2"),
    ]
    assert runs(rows) == ["r1", "r2"]
    r1 = current_state(rows, run_id="r1")
    assert list(r1) == ["a", "b"]
    assert r1["a"].status == "Failed" and failed(r1["a"]) and is_terminal(r1["a"])
    assert needs_reconcile(r1["b"]) and not is_terminal(r1["b"])
    latest = current_state(rows)
    assert succeeded(latest["a"]) and latest["b"].event is Event.IN_DOUBT
    missing = make_row(event=Event.FINISHED, status="Complete", outputs_ok="no")
    assert not succeeded(missing) and failed(missing)
    assert failed(make_row(event=Event.REJECTED, http_status=400))
    assert state_of(make_row(event=Event.RECONCILED)) == "not_sent"
    assert state_of(make_row(event=Event.RECONCILED, job_group_id=5)) == "running"
    assert state_of(make_row(event=Event.FINISHED, status="Canceled")) == "canceled"


def test_utc_timestamp_format() -> None:
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 11, 29, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert utc_timestamp(moment) == "2026-11-29T12:00:00.123Z"


def test_import_does_not_load_pandas() -> None:
    code = "import sys, sweeper.ledger; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_load_frame(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with open_ledger(path) as led:
        led.append(make_row())
        led.append(full_row())
    frame = ledger_mod.load_frame(path)
    assert list(frame["event"]) == ["intent", "finished"]
    assert list(frame["state"]) == ["in doubt", "succeeded"]
    assert frame["job_group_id"].iloc[1] == 4242 and frame["job_group_id"].isna().iloc[0]
    assert list(frame["param.Region"]) == ["01", "01"]


# --- the crash property: a cut anywhere yields a prefix -------------------------------------

text_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12
)
rows_strategy = st.lists(
    st.builds(
        make_row,
        combo=st.sampled_from(["c1", "c2", "c3"]),
        event=st.sampled_from(list(Event)),
        params=st.fixed_dictionaries({"Region": text_values, "varReferenceType": text_values}),
        error=text_values,
        job_ids=st.lists(st.integers(0, 10**9), max_size=3).map(tuple),
        duration_s=st.none() | st.floats(0, 1e6, allow_nan=False),
        http_status=st.none() | st.integers(100, 599),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, data=st.data())
def test_cut_at_any_byte_yields_a_prefix(rows: list[LedgerRow], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l.csv"
        with open_ledger(path) as led:
            for row in rows:
                led.append(row)
            stored = list(led.rows)
        full = path.read_bytes()
        header_len = full.index(b"\n") + 1
        cut = data.draw(st.integers(0, len(full)), label="cut")
        path.write_bytes(full[:cut])
        got = read_ledger(path)
        assert got == stored[: len(got)]  # never a phantom or a changed row
        complete_lines = max(full[:cut].count(b"\n") - 1, 0)
        assert len(got) == complete_lines  # every complete line is kept
        if cut < header_len:
            assert got == []  # a cut header is an empty ledger (open() restarts it)
        # open() agrees with the reader and leaves a clean file behind.
        with open_ledger(path) as led:
            assert list(led.rows) == got
        assert path.read_bytes().endswith(b"\n")


def test_async_appender_group_commits_and_keeps_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent appends share fsyncs, each returns only once its row is on disk, order kept."""
    import asyncio

    from sweeper.appender import AsyncAppender

    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    ledger = open_ledger(tmp_path / "l.csv")
    calls.clear()
    rows = [make_row(f"c{i:03d}") for i in range(50)]

    async def main() -> list[int]:
        appender = AsyncAppender(ledger)
        seen_on_disk = []

        async def one(row: LedgerRow) -> None:
            await appender.append(row)
            on_disk = {r.combo_id for r in read_ledger(tmp_path / "l.csv")}
            seen_on_disk.append(int(row.combo_id in on_disk))

        await asyncio.gather(*(one(r) for r in rows))
        await appender.drain()
        return seen_on_disk

    seen = asyncio.run(main())
    ledger.close()
    assert seen == [1] * 50  # every awaited append was durable when it returned
    assert 1 <= len(calls) < 50  # group commit: fewer fsyncs than rows
    assert [r.combo_id for r in read_ledger(tmp_path / "l.csv")] == [r.combo_id for r in rows]


def test_append_soon_rows_are_committed_with_the_next_awaited_row(tmp_path: Path) -> None:
    """A row nobody waits for is on disk, in call order, once a later awaited append returns."""
    import asyncio

    from sweeper.appender import AsyncAppender

    ledger = open_ledger(tmp_path / "l.csv")

    async def main() -> list[str]:
        appender = AsyncAppender(ledger)
        appender.append_soon(make_row("c1"))
        appender.append_soon(make_row("c2"))
        await appender.append(make_row("c3"))
        return [r.combo_id for r in read_ledger(tmp_path / "l.csv")]

    assert asyncio.run(main()) == ["c1", "c2", "c3"]
    ledger.close()


def test_append_now_writes_queued_rows_first(tmp_path: Path) -> None:
    import asyncio

    from sweeper.appender import AsyncAppender

    ledger = open_ledger(tmp_path / "l.csv")

    async def main() -> list[str]:
        appender = AsyncAppender(ledger)
        appender.append_soon(make_row("queued"))
        appender.append_now(make_row("now"))  # synchronous: on disk when it returns
        return [r.combo_id for r in read_ledger(tmp_path / "l.csv")]

    assert asyncio.run(main()) == ["queued", "now"]
    ledger.close()


def test_a_cancelled_caller_still_gets_its_row_written(tmp_path: Path) -> None:
    import asyncio

    from sweeper.appender import AsyncAppender

    ledger = open_ledger(tmp_path / "l.csv")

    async def main() -> None:
        appender = AsyncAppender(ledger)
        task = asyncio.create_task(appender.append(make_row("c1")))
        await asyncio.sleep(0)  # the row is queued, its commit not yet run
        task.cancel()
        await appender.append(make_row("c2"))
        assert task.cancelled()

    asyncio.run(main())
    assert [r.combo_id for r in read_ledger(tmp_path / "l.csv")] == ["c1", "c2"]
    ledger.close()


def test_a_failed_commit_is_raised_to_waiters_and_by_every_later_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are never appended behind a write that failed (disk full, I/O error)."""
    import asyncio
    import errno

    from sweeper.appender import AsyncAppender

    ledger = open_ledger(tmp_path / "l.csv")
    real = ledger.append_many
    failures = iter([OSError(errno.ENOSPC, "No space left on device")])

    def flaky(rows: list[LedgerRow]) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        real(rows)

    monkeypatch.setattr(ledger, "append_many", flaky)

    async def main() -> list[str]:
        appender = AsyncAppender(ledger)
        appender.append_soon(make_row("lost"))  # nobody waits for it...
        with pytest.raises(OSError, match="No space"):
            await appender.append(make_row("waiting"))  # ...but its batch's waiter hears of it
        outcomes = []
        for attempt in (
            lambda: appender.append_soon(make_row("after")),
            lambda: appender.append_now(make_row("after")),
        ):
            with pytest.raises(OSError, match="No space"):
                attempt()
            outcomes.append("refused")
        with pytest.raises(OSError, match="No space"):
            await appender.append(make_row("after"))
        with pytest.raises(OSError, match="No space"):
            await appender.drain()
        return outcomes

    assert asyncio.run(main()) == ["refused", "refused"]
    assert read_ledger(tmp_path / "l.csv") == []  # nothing written after the failed batch
    ledger.close()

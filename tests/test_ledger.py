"""The CSV ledger: round trip, durability, locking, torn tails, validation, folding."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import fcntl
import io
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeper.errors import LedgerError, LedgerLockedError
from sweeper.ledger import (
    COLUMNS,
    SCHEMA,
    Event,
    Ledger,
    LedgerRow,
    current_state,
    parse_timestamp,
    read_ledger,
    rows_to_frame,
    state_of,
    utc_timestamp,
)
from sweeper.state import State

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

    monkeypatch.setattr(os, "fsync", counting)
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

    monkeypatch.setattr(os, "fsync", recording)
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


@contextlib.contextmanager
def held_by_another_process(path: Path, run_id: str | None = None) -> Iterator[int]:
    """A child process holding the ledger open (and locked) until the block ends; its PID."""
    script = (
        "import sys\n"
        "from sweeper.ledger import Ledger\n"
        "led = Ledger.open(\n"
        "    sys.argv[1], sweep='regions', param_names=[], run_id=sys.argv[2] or None\n"
        ")\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path), run_id or ""],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=30)


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with open_ledger(path) as led:
        led.append(make_row())
    before = path.read_bytes()
    with held_by_another_process(path):
        with pytest.raises(LedgerLockedError):
            open_ledger(path)
        assert path.read_bytes() == before
    with open_ledger(path):  # the lock dies with the process
        pass


def test_lock_message_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with (
        held_by_another_process(path, run_id="2026-11-30") as pid,
        pytest.raises(LedgerLockedError) as info,
    ):
        open_ledger(path)
    message = str(info.value)
    assert f"held by PID {pid} on host {socket.gethostname()} since 20" in message
    assert message.split(" since ")[1].split(",")[0].endswith("Z")  # a ledger timestamp
    assert ", run 2026-11-30 " in message and "another sweeper" in message


def test_reading_needs_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with open_ledger(path) as led:
        led.append(make_row())
    with held_by_another_process(path):
        lock = (tmp_path / "l.csv.lock").read_bytes()
        assert read_ledger(path, sweep="regions") == [make_row()]
        assert (tmp_path / "l.csv.lock").read_bytes() == lock


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
    # the cut INTENT for c1 never happened
    assert state_of(current_state(rows)["c1"]) is State.SUCCEEDED


def test_a_full_disk_while_moving_a_torn_tail_aside_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each retry on a still-full disk fails cleanly: the ledger is untouched and no empty
    `.torn-*` file piles up."""
    path = tmp_path / "l.csv"
    with open_ledger(path) as led:
        led.append(make_row("c1"))
    torn = b"sweeper-ledger/1,2026-11-29T12:00:01.000Z,regions"
    path.write_bytes(path.read_bytes() + torn)
    before = path.read_bytes()
    real_write = os.write

    def full(fd: int, data: bytes | memoryview) -> int:
        if ".torn-" in os.readlink(f"/proc/self/fd/{fd}"):  # the evidence file: no room
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    for _ in range(3):
        with pytest.raises((LedgerError, OSError)):
            open_ledger(path)
        assert not list(tmp_path.glob("*.torn-*"))
        assert path.read_bytes() == before
    monkeypatch.setattr(os, "write", real_write)  # room again: the repair goes through
    with open_ledger(path) as led:
        assert led.torn_tail is not None and led.torn_tail.quarantine.read_bytes() == torn
    assert len(list(tmp_path.glob("*.torn-*"))) == 1


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


def test_a_row_of_another_sweep_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with open_ledger(path) as led:
        led.append(make_row("c1"))
        led.append(make_row("c2"))
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b",regions,", b",nightly,")  # line 3: a row pasted from elsewhere
    path.write_bytes(b"\n".join(lines))
    before = path.read_bytes()
    with pytest.raises(LedgerError, match=r"Line 3 .*'nightly', but line 2 to 'regions'"):
        read_ledger(path)  # without a sweep name: every row must be of the first row's sweep
    with pytest.raises(LedgerError, match=r"sweep 'nightly' \(line 3\), not 'regions'"):
        read_ledger(path, sweep="regions")
    with pytest.raises(LedgerError, match=r"sweep 'regions' \(line 2\), not 'nightly'"):
        read_ledger(path, sweep="nightly")
    with pytest.raises(LedgerError, match="line 3"):
        open_ledger(path)
    assert path.read_bytes() == before


def test_a_ledger_saved_by_a_spreadsheet_is_read(tmp_path: Path) -> None:
    """CRLF line ends and a UTF-8 byte order mark, as spreadsheets save CSV."""
    path = tmp_path / "l.csv"
    rows = [make_row("c1"), full_row()]
    with open_ledger(path) as led:
        for row in rows:
            led.append(row)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert read_ledger(path, sweep="regions") == rows
    with open_ledger(path) as led:
        assert led.torn_tail is None and list(led.rows) == rows
        led.append(make_row("c3"))
    assert [r.combo_id for r in read_ledger(path)] == ["c1", "c9", "c3"]
    path.write_bytes(b"\xef\xbb\xbfschema,ts,swe")  # a header cut while it was created
    assert read_ledger(path) == []


def test_names_in_errors_show_control_characters(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with open_ledger(path) as led:
        led.append(make_row())
    path.write_bytes(path.read_bytes().replace(b",regions,", b",regions\x00,"))
    with pytest.raises(LedgerError) as info:
        read_ledger(path, sweep="regions")
    assert "belongs to the sweep 'regions\\x00'" in str(info.value)
    assert "\x00" not in str(info.value)
    path.write_bytes(path.read_bytes().replace(b"param.varReferenceType", b"Type\x1b[31m", 1))
    with pytest.raises(LedgerError) as info:
        read_ledger(path)
    assert "(column 'Type\\x1b[31m')" in str(info.value) and "\x1b" not in str(info.value)


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
    path.write_text(path.read_text().replace(SCHEMA, "sweeper-ledger/9"))
    with pytest.raises(
        LedgerError, match=r"schema version sweeper-ledger/9.*reads sweeper-ledger/2"
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


def test_current_state() -> None:
    rows = [
        make_row("a", Event.INTENT, run_id="r1"),
        make_row("a", Event.SUBMITTED, run_id="r1", job_group_id=1),
        make_row("a", Event.FINISHED, run_id="r1", status="Failed"),
        make_row("b", Event.INTENT, run_id="r1"),
        make_row("a", Event.INTENT, run_id="r2"),
        make_row("a", Event.FINISHED, run_id="r2", status="Complete", outputs_ok="yes"),
        make_row("b", Event.IN_DOUBT, run_id="r2"),
    ]
    r1 = current_state(rows, run_id="r1")
    assert list(r1) == ["a", "b"]
    assert r1["a"].status == "Failed" and r1["b"].event is Event.INTENT
    latest = current_state(rows)
    assert latest["a"].status == "Complete" and latest["b"].event is Event.IN_DOUBT


@pytest.mark.parametrize(
    ("row", "state"),
    [
        (None, State.PENDING),
        (make_row(event=Event.FINISHED, status="Complete", outputs_ok="yes"), State.SUCCEEDED),
        (
            make_row(event=Event.FINISHED, status="Complete", outputs_ok="unchecked"),
            State.SUCCEEDED,
        ),
        (make_row(event=Event.FINISHED, status="Complete", outputs_ok="no"), State.FAILED),
        (make_row(event=Event.FINISHED, status="Failed"), State.FAILED),
        (make_row(event=Event.FINISHED, status="Canceled"), State.CANCELED),
        (make_row(event=Event.REJECTED, http_status=400), State.REJECTED),
        (make_row(event=Event.CANCELED, job_group_id=5), State.CANCELED),
        (make_row(event=Event.TIMED_OUT, job_group_id=5), State.TIMED_OUT),
        (make_row(event=Event.INTENT), State.IN_DOUBT),
        (make_row(event=Event.IN_DOUBT), State.IN_DOUBT),
        (make_row(event=Event.NOT_SENT), State.NOT_SENT),
        (make_row(event=Event.RECONCILED), State.NOT_SENT),
        (make_row(event=Event.RECONCILED, job_group_id=5), State.RUNNING),
        (make_row(event=Event.DUPLICATE), State.IN_DOUBT),
        (make_row(event=Event.DUPLICATE, job_group_id=5), State.RUNNING),
        (make_row(event=Event.SUBMITTED, job_group_id=5), State.RUNNING),
    ],
)
def test_state_of(row: LedgerRow | None, state: State) -> None:
    assert state_of(row) is state


def test_utc_timestamp_format() -> None:
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 11, 29, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert utc_timestamp(moment) == "2026-11-29T12:00:00.123Z"
    assert parse_timestamp(utc_timestamp(moment)) == pytest.approx(moment.timestamp(), abs=1e-3)
    assert parse_timestamp("2026-11-29T13:00:00+01:00") == moment.replace(microsecond=0).timestamp()
    assert parse_timestamp("") is None and parse_timestamp("yesterday") is None


def test_import_does_not_load_pandas() -> None:
    code = "import sys, sweeper.ledger; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_rows_to_frame(tmp_path: Path) -> None:
    frame = rows_to_frame([make_row(event=Event.TIMED_OUT, job_group_id=None), full_row()])
    assert list(frame["event"]) == ["timed_out", "finished"]
    assert list(frame["state"]) == ["timed_out", "succeeded"]  # State values
    assert frame["job_group_id"].iloc[1] == 4242 and frame["job_group_id"].isna().iloc[0]
    assert list(frame["param.Region"]) == ["01", "01"]


# --- the crash property: a cut anywhere yields a prefix -------------------------------------

text_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12
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


def test_a_failed_write_is_raised_by_every_later_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are never appended behind a write that failed (disk full, I/O error)."""
    path = tmp_path / "l.csv"
    led = open_ledger(path)
    led.append(make_row("c1"))
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if fd == led._fd:
            monkeypatch.setattr(os, "write", full)
            return real_write(fd, bytes(data[:10]))  # part of the line reached the file
        return real_write(fd, data)

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(LedgerError, match="No space left"):
        led.append(make_row("c2"))
    monkeypatch.setattr(os, "write", real_write)  # the disk has room again...
    with pytest.raises(LedgerError, match="No space left"):
        led.append(make_row("c3"))  # ...but nothing goes behind the torn line
    led.close()
    assert [r.combo_id for r in read_ledger(path)] == ["c1"]
    assert [r.combo_id for r in led.rows] == ["c1"]
    with open_ledger(path) as again:  # the next run moves the torn line aside and goes on
        assert again.torn_tail is not None and again.torn_tail.size == 10
        again.append(make_row("c3"))
    assert [r.combo_id for r in read_ledger(path)] == ["c1", "c3"]


def test_plan_and_status_refuse_the_ledger_of_another_sweep(project: Path) -> None:
    from click.testing import CliRunner

    from sweeper.cli import cli

    ledger = project / "results" / "regions.csv"  # configs/regions.toml's ledger...
    with open_ledger(ledger, sweep="nightly") as led:  # ...written by another sweep
        led.append(make_row(sweep="nightly"))
    for args in (
        ["plan", "configs/regions.toml"],
        ["status", "configs/regions.toml", "--no-refresh"],
        ["status", str(ledger), "--no-refresh"],  # the sweep file is found in configs/
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert "belongs to the sweep 'nightly' (line 2), not 'regions'" in result.stderr, args


def _v1_ledger(path: Path) -> None:
    """A ledger as sweeper wrote it before flows (sweeper-ledger/1, no flow columns)."""
    from sweeper.ledger import COLUMNS_V1, SCHEMA_V1

    header = ",".join((*COLUMNS_V1, "param.Region"))
    fields = [SCHEMA_V1, "2026-11-29T00:00:00.000Z", "regions", "r1", "c1", "submitted", "1", "0"]
    fields += ["swp-x", '"{""Region"":""01""}"', "201", "41", "s", "42 43", "Created"]
    fields += ["", "", "", "", "", "", "", "01"]
    path.write_text(header + "\n" + ",".join(fields) + "\n")


def test_a_v1_ledger_is_read_and_appended_in_its_own_layout(tmp_path: Path) -> None:
    from sweeper.ledger import SCHEMA_V1

    path = tmp_path / "old.csv"
    _v1_ledger(path)
    with Ledger.open(path, sweep="regions", param_names=["Region"]) as ledger:
        (old,) = ledger.rows
        assert (old.job_group_id, old.job_ids, old.flow_run_id) == (41, (42, 43), None)
        assert ledger.schema == SCHEMA_V1
        ledger.append(dataclasses.replace(old, event=Event.FINISHED, status="Complete"))
        with pytest.raises(LedgerError, match="cannot record a flow run"):
            ledger.append(dataclasses.replace(old, flow_run_id=7, job_group_ids=(41,)))
    rows = read_ledger(path)
    assert [r.event for r in rows] == [Event.SUBMITTED, Event.FINISHED]
    assert path.read_text().splitlines()[2].startswith(SCHEMA_V1 + ",")


def test_flow_columns_round_trip_in_a_new_ledger(tmp_path: Path) -> None:
    path = tmp_path / "flow.csv"
    row = LedgerRow(
        ts="2026-11-29T00:00:00.000Z",
        sweep="flows",
        run_id="r1",
        combo_id="c1",
        event=Event.SUBMITTED,
        job_group_id=5,
        job_group_ids=(5, 9),
        flow_run_id=4,
        params={"Region": "01"},
    )
    with Ledger.open(path, sweep="flows", param_names=["Region"]) as ledger:
        ledger.append(row)
    header = path.read_text().splitlines()[0].split(",")
    assert header[: len(COLUMNS)] == list(COLUMNS) and "flow_run_id" in header
    (back,) = read_ledger(path)
    assert (back.flow_run_id, back.job_group_ids, back.job_group_id) == (4, (5, 9), 5)

"""The append-only CSV ledger: one row per event, locked, fsynced, repaired, folded to state.

The ledger is the write-ahead log of a sweep. Rows are never edited in place; the current state of
a combination is its last row. See docs/ledger.md for every column and event.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import enum
import fcntl
import io
import json
import logging
import os
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from sweeper.errors import LedgerError, LedgerLockedError
from sweeper.identity import canonical_json
from sweeper.state import State

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SCHEMA = "sweeper-ledger/2"  # written to new ledgers
SCHEMA_V1 = "sweeper-ledger/1"  # read, and appended to in its own layout (no flow columns)
PARAM_PREFIX = "param."
ERROR_MAX_CHARS = 500


class Event(str, enum.Enum):
    """What happened to a combination; the last event of a combination is its state."""

    INTENT = "intent"  # about to POST (fsynced BEFORE the request leaves)
    SUBMITTED = "submitted"  # 201: job_group_id, session_id, job_ids known
    DUPLICATE = "duplicate"  # 304: the server already has this execution id
    REJECTED = "rejected"  # permanent 4xx: terminal failure
    IN_DOUBT = "in_doubt"  # an attempt whose outcome is unknown (timeout, dropped, 5xx)
    NOT_SENT = "not_sent"  # gave up without the server ever accepting it; safe to retry
    RECONCILED = "reconciled"  # resume looked it up: found (job_group_id) or absent (empty)
    FINISHED = "finished"  # the job group reached Complete / Failed / Canceled
    TIMED_OUT = "timed_out"  # run.timeout reached while the group was still running
    CANCELED = "canceled"  # sweeper asked the server to cancel the group (on interrupt)


@dataclass(frozen=True)
class LedgerRow:
    """One event of one combination in one run."""

    ts: str  # UTC ISO-8601 with ms and Z, e.g. 2026-11-29T12:00:00.123Z
    sweep: str
    run_id: str
    combo_id: str
    event: Event
    attempt: int = 0  # POST attempt within this generation (1-based for POST events, else 0)
    generation: int = 0  # 0 = first submission in the run; +1 per deliberate rerun
    execution_id: str = ""
    params: Mapping[str, str] = field(default_factory=dict)  # parameter values as sent
    http_status: int | None = None
    job_group_id: int | None = None
    session_id: str = ""
    job_ids: tuple[int, ...] = ()
    status: str = ""  # job group status: Created/InProgress/Complete/Failed/Canceled
    error: str = ""  # one line, <= 500 chars
    duration_s: float | None = None  # finished: created -> terminal; submitted: POST latency
    request_id: str = ""  # x-trifacta-request-id
    config_hash: str = ""
    as_of: str = ""  # the resolved --as-of of the run
    reason: str = ""  # why, e.g. "new", "rerun failed", "resume: in doubt"
    outputs_ok: str = ""  # "", "yes", "no", "unchecked"
    flow_run_id: int | None = None  # a flow sweep's flow run (its job groups: job_group_ids)
    job_group_ids: tuple[int, ...] = ()  # every job group of the flow run, in start order


# The fixed columns, in file order; LedgerRow.params is stored as params_json.
COLUMNS: tuple[str, ...] = (
    "schema",
    "ts",
    "sweep",
    "run_id",
    "combo_id",
    "event",
    "attempt",
    "generation",
    "execution_id",
    "params_json",
    "http_status",
    "job_group_id",
    "session_id",
    "job_ids",
    "status",
    "error",
    "duration_s",
    "request_id",
    "config_hash",
    "as_of",
    "reason",
    "outputs_ok",
    "flow_run_id",
    "job_group_ids",
)
COLUMNS_V1: tuple[str, ...] = COLUMNS[:-2]  # sweeper-ledger/1: no flow columns
_N_FIXED = len(COLUMNS)
_FIXED_HEADER_LINE = ",".join(COLUMNS)
_FIXED_BY_SCHEMA = {SCHEMA: COLUMNS, SCHEMA_V1: COLUMNS_V1}

# Control characters (C0, DEL, C1) and Unicode line/paragraph separators become spaces, so that
# every record is exactly one physical line and a torn tail is a plain byte test.
_ONE_LINE = {c: " " for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]}


def utc_timestamp(now: datetime | None = None) -> str:
    """The ledger's timestamp format: UTC ISO-8601 with milliseconds and a Z."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(value: str) -> float | None:
    """Seconds since the epoch for an ISO-8601 timestamp such as the ledger's, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def one_line(text: str, limit: int | None = None) -> str:
    """Text with control characters replaced by spaces, cut to `limit` characters."""
    text = text.translate(_ONE_LINE)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _sanitized(row: LedgerRow) -> LedgerRow:
    """The row as it will be stored: one-line text fields, error cut, duration to the ms."""
    return dataclasses.replace(
        row,
        ts=one_line(row.ts),
        sweep=one_line(row.sweep),
        run_id=one_line(row.run_id),
        combo_id=one_line(row.combo_id),
        execution_id=one_line(row.execution_id),
        params={str(k): str(v) for k, v in row.params.items()},
        session_id=one_line(row.session_id),
        status=one_line(row.status),
        error=one_line(row.error, ERROR_MAX_CHARS),
        duration_s=None if row.duration_s is None else round(float(row.duration_s), 3),
        request_id=one_line(row.request_id),
        config_hash=one_line(row.config_hash),
        as_of=one_line(row.as_of),
        reason=one_line(row.reason),
        outputs_ok=one_line(row.outputs_ok),
    )


def _opt(value: object | None) -> str:
    return "" if value is None else str(value)


def _encode(row: LedgerRow, param_columns: Sequence[str], schema: str = SCHEMA) -> list[str]:
    """The CSV fields of an already sanitised row, in the layout of ``schema``."""
    flow = (
        [_opt(row.flow_run_id), " ".join(str(g) for g in row.job_group_ids)]
        if schema == SCHEMA
        else []
    )
    return [
        schema,
        row.ts,
        row.sweep,
        row.run_id,
        row.combo_id,
        row.event.value,
        str(row.attempt),
        str(row.generation),
        row.execution_id,
        canonical_json(dict(row.params)),
        _opt(row.http_status),
        _opt(row.job_group_id),
        row.session_id,
        " ".join(str(j) for j in row.job_ids),
        row.status,
        row.error,
        _opt(None if row.duration_s is None else repr(row.duration_s)),
        row.request_id,
        row.config_hash,
        row.as_of,
        row.reason,
        row.outputs_ok,
        *flow,
        *(one_line(row.params.get(name, "")) for name in param_columns),
    ]


def _csv_line(fields: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def _header_line(param_names: Sequence[str], schema: str = SCHEMA) -> str:
    fixed = _FIXED_BY_SCHEMA[schema]
    return _csv_line([*fixed, *(PARAM_PREFIX + name for name in param_names)])


_EVENTS = {e.value: e for e in Event}
_BOM = "\ufeff"


def _printable(text: str) -> str:
    """Text for an error message, control characters escaped as in repr (``\\x1b``)."""
    return repr(text)[1:-1]


def _decode(rec: list[str]) -> LedgerRow:
    """The LedgerRow of one CSV record whose width and schema were checked."""
    params = json.loads(rec[9]) if rec[9] else {}
    if not isinstance(params, dict):
        raise ValueError("params_json is not a JSON object")
    return LedgerRow(
        ts=rec[1],
        sweep=rec[2],
        run_id=rec[3],
        combo_id=rec[4],
        event=_EVENTS[rec[5]],
        attempt=int(rec[6]),
        generation=int(rec[7]),
        execution_id=rec[8],
        params={str(k): str(v) for k, v in params.items()},
        http_status=int(rec[10]) if rec[10] else None,
        job_group_id=int(rec[11]) if rec[11] else None,
        session_id=rec[12],
        job_ids=tuple(map(int, rec[13].split())),
        status=rec[14],
        error=rec[15],
        duration_s=float(rec[16]) if rec[16] else None,
        request_id=rec[17],
        config_hash=rec[18],
        as_of=rec[19],
        reason=rec[20],
        outputs_ok=rec[21],
        # sweeper-ledger/1 records end before the flow columns
        flow_run_id=int(rec[22]) if rec[0] == SCHEMA and rec[22] else None,
        job_group_ids=tuple(map(int, rec[23].split())) if rec[0] == SCHEMA else (),
    )


def _lines(path: Path, data: bytes, end: int) -> Iterator[str]:
    """The lines of data[:end], decoded one by one (a decoded copy of a whole 100,000-row file
    would more than double the memory a fold needs)."""
    start = 0
    while start < end:
        stop = data.index(b"\n", start) + 1
        try:
            line = data[start:stop].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LedgerError(
                f"The ledger {path} is not valid UTF-8 (byte {start + exc.start}); it was not "
                "written by sweeper or is damaged. Move it aside or point sweep.ledger at another "
                "file."
            ) from None
        # A spreadsheet that saved the file may have added a byte order mark and CRLF line
        # ends; the csv module reads either line end.
        yield line.removeprefix(_BOM) if start == 0 else line
        start = stop


@dataclass(frozen=True)
class _Parsed:
    """A ledger file split into its header, its complete rows and a torn tail (if any)."""

    param_columns: tuple[str, ...]
    schema: str  # the layout of the file: SCHEMA, or SCHEMA_V1 for a ledger written before flows
    rows: list[LedgerRow]
    complete_bytes: int  # length of the part that ends at the last newline
    torn: bytes  # bytes after the last newline (a record cut by a crash)


def _parse(path: Path, data: bytes, sweep: str | None) -> _Parsed:
    """Parse ledger bytes; a torn tail is set aside, never parsed.

    Every row must belong to `sweep`, or, when it is None, to the sweep of the first row.
    """
    cut = data.rfind(b"\n") + 1
    torn = data[cut:]
    if cut == 0:
        # No complete line: a header cut while the file was being created (nothing after it can
        # exist, the header is fsynced first), or not a ledger at all.
        text = torn.decode("utf-8", errors="replace").removeprefix(_BOM)
        v1 = ",".join(COLUMNS_V1)
        if text and not any(
            line.startswith(text) or text.startswith(line) for line in (_FIXED_HEADER_LINE, v1)
        ):
            raise _not_a_ledger(path)
        return _Parsed((), SCHEMA, [], 0, torn)
    reader = csv.reader(_lines(path, data, cut))
    try:
        header = next(reader)
    except csv.Error:
        raise _not_a_ledger(path) from None
    param_columns, schema = _check_header(path, header)
    width = len(header)
    rows: list[LedgerRow] = []
    first_line = 0
    try:
        for rec in reader:
            if len(rec) != width or rec[0] != schema:
                _bad_record(path, reader.line_num, rec, width, schema)
            if rec[2] != sweep:
                if sweep is not None:
                    raise _other_sweep(path, reader.line_num, rec[2], sweep, first_line)
                sweep, first_line = rec[2], reader.line_num
            try:
                rows.append(_decode(rec))
            except (ValueError, KeyError) as exc:
                raise LedgerError(
                    f"Line {reader.line_num} of the ledger {path} cannot be read ({exc}); the "
                    "file was edited or damaged. Restore it from a backup or move it aside."
                ) from None
    except csv.Error as exc:
        raise LedgerError(
            f"Line {reader.line_num} of the ledger {path} is not valid CSV ({exc}); the file was "
            "edited or damaged. Restore it from a backup or move it aside."
        ) from None
    return _Parsed(param_columns, schema, rows, cut, torn)


def _not_a_ledger(path: Path) -> LedgerError:
    return LedgerError(
        f"The file {path} is not a sweeper ledger (its header does not start with "
        f"'schema,ts,sweep'). Point sweep.ledger at another file, or move this one aside."
    )


def _check_header(path: Path, header: list[str]) -> tuple[tuple[str, ...], str]:
    """The param columns and the schema (layout) of a ledger's header."""
    if not header or header[0] != "schema":
        raise _not_a_ledger(path)
    # A ledger written before flows has the v1 columns: read it, and append in its layout.
    v1 = tuple(header[: len(COLUMNS_V1)]) == COLUMNS_V1 and (
        len(header) == len(COLUMNS_V1) or header[len(COLUMNS_V1)].startswith(PARAM_PREFIX)
    )
    schema, fixed = (SCHEMA_V1, COLUMNS_V1) if v1 else (SCHEMA, COLUMNS)
    extra = header[len(fixed) :]
    odd = [c for c in extra if not c.startswith(PARAM_PREFIX)]
    if tuple(header[: len(fixed)]) != fixed or odd:
        what = f" (column {odd[0]!r})" if odd and tuple(header[: len(fixed)]) == fixed else ""
        raise LedgerError(
            f"The ledger {path} has a sweeper header with different columns{what} than the "
            f"schema {SCHEMA} this sweeper reads; it was written by another version of sweeper "
            "or edited. Use that version, or point sweep.ledger at a new file."
        )
    return tuple(c[len(PARAM_PREFIX) :] for c in extra), schema


def _bad_record(path: Path, line: int, rec: list[str], width: int, schema: str) -> None:
    if rec and rec[0].startswith("sweeper-ledger/") and rec[0] != schema:
        raise LedgerError(
            f"Line {line} of the ledger {path} has schema version {_printable(rec[0])}, but this "
            f"sweeper reads {schema} in a ledger with this header. Use the sweeper version that "
            "wrote it, or point sweep.ledger at a new file."
        )
    raise LedgerError(
        f"Line {line} of the ledger {path} has {len(rec)} fields where the header has {width} "
        "(or no schema value); the file was edited or damaged. Restore it or move it aside."
    )


def _other_sweep(path: Path, line: int, found: str, sweep: str, first_line: int) -> LedgerError:
    if first_line:
        return LedgerError(
            f"Line {line} of the ledger {path} belongs to the sweep {found!r}, but line "
            f"{first_line} to {sweep!r}: a ledger holds one sweep only. The file was edited "
            "or two ledgers were joined; restore it from a backup or move it aside."
        )
    return LedgerError(
        f"The ledger {path} belongs to the sweep {found!r} (line {line}), not "
        f"{sweep!r}. Give this sweep its own file with sweep.ledger in the config (or "
        "rename one of the sweeps)."
    )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise LedgerError(
            f"There is no ledger at {path}; run the sweep first or check sweep.ledger."
        ) from None
    except OSError as exc:
        raise LedgerError(
            f"The ledger {path} cannot be read: {exc.strerror}. Check that it is a readable file "
            "(permissions), or point sweep.ledger at another file."
        ) from None


def _unusable(path: Path, exc: OSError) -> LedgerError:
    return LedgerError(
        f"The ledger {path} cannot be opened for writing: {exc.strerror or exc}. Check the path "
        "and its permissions, or point sweep.ledger at another file."
    )


def fsync_directory(directory: Path) -> None:
    """Make a new or renamed directory entry durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass(frozen=True)
class TornTail:
    """A record cut by a crash, moved aside when the ledger was opened."""

    quarantine: Path  # where the torn bytes were saved
    size: int  # how many bytes were cut off


class Ledger:
    """The single writer of one ledger file; use `Ledger.open`."""

    def __init__(
        self,
        path: Path,
        *,
        sweep: str,
        param_columns: tuple[str, ...],
        rows: list[LedgerRow],
        fd: int,
        lock_fd: int,
        torn: TornTail | None,
        schema: str = SCHEMA,
    ) -> None:
        self.path = path
        self.sweep = sweep
        self.param_columns = param_columns  # the param.<Name> columns of this file's header
        self.schema = schema  # the file's layout: rows are appended in it
        self.torn_tail = torn  # set when open() repaired a torn last line
        self._rows = rows
        self._fd: int | None = fd
        self._lock_fd: int | None = lock_fd
        self._mutex = threading.Lock()
        self._failed: LedgerError | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        sweep: str,
        param_names: Sequence[str],
        run_id: str | None = None,
    ) -> Ledger:
        """Lock, create or validate and repair the ledger at `path`, ready to append.

        `run_id` is recorded in the lock file, so that a second sweeper can say who holds it.
        """
        path = Path(path)
        lock_path = path.with_name(path.name + ".lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _unusable(path, exc) from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(lock_fd)
            os.close(lock_fd)
            raise LedgerLockedError(
                f"The ledger {path} is locked by another sweeper process that is still running"
                f"{holder} (lock file {lock_path}). Wait for it to end, then run again to resume; "
                "the ledger was not changed.",
                holder=holder.lstrip(", ") or "held by another sweeper process",
            ) from None
        try:
            _record_holder(lock_fd, run_id)
            return cls._open_locked(path, sweep=sweep, param_names=param_names, lock_fd=lock_fd)
        except OSError as exc:
            os.close(lock_fd)
            raise _unusable(path, exc) from None
        except BaseException:
            os.close(lock_fd)  # closing the descriptor releases the lock
            raise

    @classmethod
    def _open_locked(
        cls, path: Path, *, sweep: str, param_names: Sequence[str], lock_fd: int
    ) -> Ledger:
        data = _read_bytes(path) if path.exists() else b""
        parsed = _parse(path, data, sweep)  # validate before changing a byte
        torn = _quarantine(path, parsed.torn) if parsed.torn else None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if parsed.complete_bytes == 0:
                # New file, or only a header cut during creation: start it (again).
                param_columns = tuple(param_names)
                schema = SCHEMA
                os.ftruncate(fd, 0)
                _write_all(fd, _header_line(param_columns).encode("utf-8"))
                os.fsync(fd)
                fsync_directory(path.parent)
            else:
                param_columns = parsed.param_columns
                schema = parsed.schema
                if torn is not None:
                    os.ftruncate(fd, parsed.complete_bytes)
                    os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(
            path,
            sweep=sweep,
            param_columns=param_columns,
            rows=parsed.rows,
            fd=fd,
            lock_fd=lock_fd,
            torn=torn,
            schema=schema,
        )

    @property
    def rows(self) -> Sequence[LedgerRow]:
        """Rows read at open plus rows appended since, in file order."""
        return self._rows

    def history(self) -> list[LedgerRow]:
        """A copy of `rows`."""
        return list(self._rows)

    def append(self, row: LedgerRow) -> None:
        """Write one row as one line and fsync it before returning.

        After a failed write every later append raises the same error: the failed write may
        have left part of a line, and a row written behind it would be lost with it.
        """
        if row.sweep != self.sweep:
            raise ValueError(f"row of sweep {row.sweep!r} appended to ledger of {self.sweep!r}")
        if self.schema != SCHEMA and (row.flow_run_id is not None or row.job_group_ids):
            raise LedgerError(
                f"The ledger {self.path} was written by an older sweeper ({self.schema}), which "
                "has no flow_run_id / job_group_ids columns, so it cannot record a flow run. "
                "Point sweep.ledger at a new file for the flow sweep."
            )
        clean = _sanitized(row)
        data = _csv_line(_encode(clean, self.param_columns, self.schema)).encode("utf-8")
        with self._mutex:
            if self._fd is None:
                raise ValueError(f"the ledger {self.path} is closed")
            if self._failed is not None:
                raise self._failed
            try:
                _write_all(self._fd, data)
                os.fsync(self._fd)
            except OSError as exc:
                self._failed = LedgerError(
                    f"could not write to the ledger {self.path}: {exc.strerror or exc}. Every row "
                    "before this one is on disk; fix the cause (disk space, permissions) and run "
                    "the same command again to resume."
                )
                raise self._failed from exc
            self._rows.append(clean)

    def close(self) -> None:
        """Close the file and release the lock; idempotent."""
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):  # the holder note is only a courtesy
                    os.ftruncate(self._lock_fd, 0)
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _record_holder(lock_fd: int, run_id: str | None) -> None:
    """Note who holds the lock in the lock file, for the message a second sweeper shows."""
    note = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "run_id": run_id,
        "since": utc_timestamp(),
    }
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, json.dumps(note).encode("utf-8") + b"\n", 0)


def _lock_holder(lock_fd: int) -> str:
    """', held by PID 1234 on host x since ..., run ...' from the lock file, or '' if unknown."""
    try:
        note = json.loads(os.pread(lock_fd, 4096, 0))
        pid = int(note["pid"])
        host, since, run_id = (str(note.get(k) or "") for k in ("host", "since", "run_id"))
    except (OSError, ValueError, TypeError, KeyError):
        # Empty (the holder is between taking the lock and writing the note) or written by
        # an older sweeper: the message just does not name the holder.
        return ""
    text = f", held by PID {pid}"
    if host:
        text += f" on host {_printable(host)}"
    if since:
        text += f" since {_printable(since)}"
    if run_id:
        text += f", run {_printable(run_id)}"
    return text


def _quarantine(path: Path, torn: bytes) -> TornTail:
    """Save torn bytes next to the ledger (kept as evidence) before the file is cut."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.torn-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.torn-{stamp}-{n}")
        n += 1
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(fd, torn)
        os.fsync(fd)
    except BaseException:
        # A full disk: leave no empty or partial evidence file behind, or every retry while
        # the disk stays full would add one. The ledger is untouched and the error says why.
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
    os.close(fd)
    fsync_directory(path.parent)
    log.warning(
        "The ledger %s ended with a torn record (%d bytes, cut by a crash); moved it to %s "
        "and repaired the file.",
        path,
        len(torn),
        target,
    )
    return TornTail(target, len(torn))


def read_ledger(path: str | os.PathLike[str], *, sweep: str | None = None) -> list[LedgerRow]:
    """Every complete row of a ledger, without locking or changing it (a torn tail is skipped).

    Every row must belong to `sweep` if given, else to the sweep of the first row.
    """
    path = Path(path)
    return _parse(path, _read_bytes(path), sweep).rows


def current_state(rows: Iterable[LedgerRow], *, run_id: str | None = None) -> dict[str, LedgerRow]:
    """The last row of each combination (within `run_id` if given), in first-seen order."""
    state: dict[str, LedgerRow] = {}
    for row in rows:
        if run_id is None or row.run_id == run_id:
            state[row.combo_id] = row
    return state


def latest_run_id(rows: Iterable[LedgerRow]) -> str:
    """The latest run of a ledger: the one whose first row is newest ("" for no rows).

    Rows are appended in time order, so that is the run seen first last. A resumed older run
    (its rows after a newer run's) stays older; run ids are names, never compared as text.
    """
    first_seen = dict.fromkeys(row.run_id for row in rows)
    return next(reversed(first_seen), "") if first_seen else ""


def found_on_server(row: LedgerRow) -> bool:
    """Whether a row names what the server created: a job group, or a plan's (flow's) run."""
    return row.job_group_id is not None or row.flow_run_id is not None


def state_of(row: LedgerRow | None) -> State:
    """Where a combination stands, from its last row in the run (None: no row, PENDING)."""
    if row is None:
        return State.PENDING
    event = row.event
    if event is Event.FINISHED:
        if row.status == "Canceled":
            return State.CANCELED
        if row.status == "Complete" and row.outputs_ok != "no":
            return State.SUCCEEDED
        return State.FAILED  # Failed, or Complete with its outputs missing
    if event is Event.REJECTED:
        return State.REJECTED
    if event is Event.CANCELED:
        return State.CANCELED
    if event is Event.TIMED_OUT:
        return State.TIMED_OUT
    if event in (Event.INTENT, Event.IN_DOUBT):
        return State.IN_DOUBT
    if event is Event.NOT_SENT:
        return State.NOT_SENT
    if event is Event.RECONCILED and not found_on_server(row):
        return State.NOT_SENT  # looked up and absent on the server: safe to submit
    if event is Event.DUPLICATE and not found_on_server(row):
        return State.IN_DOUBT  # the server has it (304) but the lookup found no group
    return State.RUNNING  # submitted, duplicate, reconciled (found)


def rows_to_frame(rows: Sequence[LedgerRow]) -> pd.DataFrame:
    """Rows as a DataFrame: the LedgerRow fields, `state` (State values such as `in_doubt`),
    and one `param.<Name>` column per parameter, in first-seen order."""
    import pandas as pd

    names = dict.fromkeys(name for row in rows for name in row.params)
    # Column by column: much faster than records for 100,000 rows of object values.
    data: dict[str, list[object]] = {
        f.name: [getattr(r, f.name) for r in rows] for f in dataclasses.fields(LedgerRow)
    }
    data["event"] = [r.event.value for r in rows]
    data["state"] = [state_of(r).value for r in rows]
    for name in names:
        data[PARAM_PREFIX + name] = [r.params.get(name) for r in rows]
    frame: pd.DataFrame = pd.DataFrame(data)
    for col in ("http_status", "job_group_id", "flow_run_id"):
        frame[col] = frame[col].astype("Int64")
    frame["duration_s"] = frame["duration_s"].astype("float64")
    return frame

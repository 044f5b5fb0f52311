"""SQLite state: job groups, jobs, counters and quota events, safe across apps and processes."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS job_groups (
    id INTEGER PRIMARY KEY,
    execution_id TEXT UNIQUE,
    session_id TEXT NOT NULL,
    dataset_id INTEGER NOT NULL,
    params_key TEXT NOT NULL,          -- canonical JSON of runParameters.overrides.data
    body TEXT NOT NULL,                -- the request body as received (JSON)
    params TEXT NOT NULL,              -- effective parameter values (JSON object)
    profiler INTEGER NOT NULL,
    execution TEXT,
    created_at REAL NOT NULL,
    started_at REAL NOT NULL,
    reference_date TEXT NOT NULL,
    canceled_at REAL,
    user_key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_groups_params ON job_groups (dataset_id, params_key);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    group_id INTEGER NOT NULL REFERENCES job_groups (id),
    seq INTEGER NOT NULL,
    job_type TEXT NOT NULL,
    write_setting TEXT,                -- JSON, filewriter jobs only
    write_setting_id INTEGER,
    start_at REAL NOT NULL,
    end_at REAL NOT NULL,
    final_status TEXT,                 -- NULL while Created / InProgress
    finished_at REAL,
    error_message TEXT,
    planned_failure TEXT,              -- injected errorMessage, decided at creation
    outputs TEXT                       -- JSON list of {path, localPath}
);
CREATE INDEX IF NOT EXISTS jobs_group ON jobs (group_id, seq);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (final_status, end_at);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS quota_events (at REAL NOT NULL, user_key TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS quota_events_at ON quota_events (at);
CREATE TABLE IF NOT EXISTS endpoint_quota_events (
    endpoint TEXT NOT NULL, at REAL NOT NULL, user_key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS endpoint_quota_events_at ON endpoint_quota_events (endpoint, at);
CREATE TABLE IF NOT EXISTS flow_runs (
    id INTEGER PRIMARY KEY,
    flow_id INTEGER NOT NULL,
    execution_id TEXT UNIQUE,
    body TEXT NOT NULL,                -- the request body as received (JSON)
    created_at REAL NOT NULL,
    user_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flow_run_groups (
    flow_run_id INTEGER NOT NULL REFERENCES flow_runs (id),
    group_id INTEGER NOT NULL REFERENCES job_groups (id),
    seq INTEGER NOT NULL,
    PRIMARY KEY (flow_run_id, seq)
);
CREATE INDEX IF NOT EXISTS flow_run_groups_group ON flow_run_groups (group_id);
CREATE TABLE IF NOT EXISTS plan_runs (
    id INTEGER PRIMARY KEY,            -- the planSnapshotRunId
    plan_id INTEGER NOT NULL,
    execution_id TEXT UNIQUE,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    user_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS plan_run_groups (
    plan_run_id INTEGER NOT NULL REFERENCES plan_runs (id),
    group_id INTEGER NOT NULL REFERENCES job_groups (id),
    seq INTEGER NOT NULL,
    PRIMARY KEY (plan_run_id, seq)
);
"""


class Store:
    """One SQLite connection; every write goes through `transaction()` (BEGIN IMMEDIATE)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        target = str(path) if path is not None else ":memory:"
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: transactions are explicit, so BEGIN IMMEDIATE serialises writers
        self._conn = sqlite3.connect(
            target, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA busy_timeout = 30000")
        if path is not None:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                with self.transaction() as conn:
                    conn.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: atomic against other apps and processes on the same file."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # ids and counters -------------------------------------------------------------------------

    @staticmethod
    def next_id(conn: sqlite3.Connection) -> int:
        """One global sequence for job groups, jobs and write settings, so ids never collide."""
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('next_id', 1)")
        value = int(conn.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()[0])
        conn.execute("UPDATE meta SET value = ? WHERE key = 'next_id'", (value + 1,))
        return value

    @staticmethod
    def bump(conn: sqlite3.Connection, name: str, by: int = 1) -> None:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def count(self, name: str, by: int = 1) -> None:
        with self.transaction() as conn:
            self.bump(conn, name, by)

    def counters(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT name, value FROM counters").fetchall()
        return {str(r["name"]): int(r["value"]) for r in rows}

    # reads ------------------------------------------------------------------------------------

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, args).fetchall())

    def group(self, group_id: int) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM job_groups WHERE id = ?", (group_id,))
        return rows[0] if rows else None

    def jobs(self, group_id: int) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM jobs WHERE group_id = ? ORDER BY seq", (group_id,))

    def reset(self) -> None:
        """Forget every group, job, counter and quota event; ids keep growing."""
        with self.transaction() as conn:
            for table in (
                "jobs",
                "job_groups",
                "counters",
                "quota_events",
                "endpoint_quota_events",
                "flow_run_groups",
                "flow_runs",
                "plan_run_groups",
                "plan_runs",
            ):
                conn.execute(f"DELETE FROM {table}")


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))

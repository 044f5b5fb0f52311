"""Shared rate stores: one POST budget, and one 429 block, across processes and machines.

``run.rate_store`` names the store: ``sqlite:///results/.rate.sqlite`` (every process on one
machine) or ``postgresql://user@host/db`` (every worker that reaches the database). The budget is
a pyrate-limiter bucket in that store; a 429 sets a shared "blocked until" beside it. Processes
with the same store and key share both. The key defaults to the API host and a short hash of the
credential (the per-user quota); ``run.rate_key`` names a shared one (the workspace quota).

A connection string never holds a password (libpq's PGPASSWORD or ~/.pgpass supply it) and is
never printed: errors name the kind of store only.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pyrate_limiter import AbstractBucket, Decision, Rate, RateItem
from pyrate_limiter.buckets.sqlite_bucket import Queries as SQLiteQueries
from pyrate_limiter.buckets.sqlite_bucket import SQLiteBucket

from sweeper.errors import ConfigError, RunAbortedError

SCHEMES = ("sqlite", "postgresql", "postgres")
CONTENTION_MS = (5, 25)  # another process holds the bucket's lock: try again this soon
SQLITE_BUSY_S = 10.0  # how long one SQLite call waits for another process's transaction


class RateStoreError(RunAbortedError):
    """The shared rate store cannot be used; the run stops before sending anything more."""


def check_rate_store(url: str, key: str = "run.rate_store") -> str:
    """``url`` if it names a usable store; ConfigError (never echoing it) otherwise."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(
            "Not a connection URL; use sqlite:///PATH or postgresql://USER@HOST/DB.", key=key
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            "Unknown store; use sqlite:///PATH (one machine) or postgresql://USER@HOST/DB "
            "(every machine that reaches the database).",
            key=key,
        )
    if scheme == "sqlite":
        if parts.netloc or not parts.path.strip("/"):
            raise ConfigError(
                "A SQLite store is sqlite:///relative/path or sqlite:////absolute/path.", key=key
            )
        return url
    has_password = False
    try:
        has_password = parts.password is not None
    except ValueError:
        has_password = True
    query = {k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    if has_password or "password" in query:
        raise ConfigError(
            "The connection string holds a password; remove it and supply the password as libpq "
            "does, through the PGPASSWORD variable or a ~/.pgpass file (PGPASSFILE).",
            key=key,
        )
    return url


def sqlite_path(url: str, root: Path) -> Path:
    """The file of a ``sqlite:///`` URL: relative to the project ``root``, like ledgers."""
    return root / urlsplit(url).path[1:]  # sqlite:///a/b -> root/a/b, sqlite:////a/b -> /a/b


def default_key(base_url: str, credentials: tuple[str, ...]) -> str:
    """The API host and a short hash of the credential: one key per user of one platform."""
    host = urlsplit(base_url).hostname or base_url
    digest = hashlib.sha256("\0".join(credentials).encode("utf-8")).hexdigest()[:12]
    return f"{host}|{digest}"


def _table(key: str) -> str:
    """A table name for ``key``: the key is free text, a table name is not."""
    return "sweeper_" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


class _Store:
    """What both stores share: the order of steps around a bucket and a block."""

    kind = "rate store"
    bucket: AbstractBucket | None = None

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def blocked_ms(self) -> int:
        raise NotImplementedError

    def give_back(self, name: str) -> None:
        raise NotImplementedError

    def acquire_step(self, name: str) -> int:
        """Wait while blocked, take a slot, and give it up if a block began meanwhile."""
        with self._errors():
            blocked = self.blocked_ms()
            if blocked > 0:
                return blocked
            assert self.bucket is not None, "bind() first"
            now = self.now_ms()
            self.bucket.leak(now)
            item = RateItem(name, now)
            decision = self.bucket.put_decision(item)
            assert isinstance(decision, Decision)  # both buckets answer synchronously
            if not decision.allowed:
                wait = decision.retry_after_ms
                if wait is None:  # lost a race for the bucket's lock, not a full window
                    return random.randint(*CONTENTION_MS)
                return max(1, int(wait))
            blocked = self.blocked_ms()
            if blocked > 0:
                self.give_back(name)
                return blocked
            return 0

    def _errors(self) -> _Translate:
        return _Translate(self.kind)


class _Translate:
    """Turns a store's own exceptions into RateStoreError, without the connection string."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, (RateStoreError, AssertionError)):
            return
        if isinstance(exc, Exception):
            raise RateStoreError(
                f"The shared {self.kind} failed ({type(exc).__name__}); sweeper stopped "
                "submitting. Check the store, then run the same command again to resume."
            ) from None


class _ImmediateLock:
    """SQLiteBucket's lock: a thread lock plus ``BEGIN IMMEDIATE``, so a count and the insert
    that follows it are one transaction that no other process can interleave with."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.mutex = threading.RLock()
        self._depth = 0

    def __enter__(self) -> None:
        self.mutex.acquire()
        self._depth += 1
        if self._depth == 1 and not self.conn.in_transaction:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self._depth -= 1
                self.mutex.release()
                raise

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            if self._depth == 1 and self.conn.in_transaction:
                if exc_type is None:
                    self.conn.commit()
                else:
                    self.conn.rollback()
        finally:
            self._depth -= 1
            self.mutex.release()


class SQLiteStore(_Store):
    """Every process on this machine: a SQLite file holding the bucket and the block."""

    kind = "SQLite rate store"

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.table = _table(key)
        with self._errors():
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(path),
                timeout=SQLITE_BUSY_S,
                isolation_level="DEFERRED",
                check_same_thread=False,
            )
            # WAL: readers never wait for the writer; NORMAL: a rate slot needs no fsync.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS sweeper_blocks (key TEXT PRIMARY KEY, until_ms INTEGER)"
            )
            conn.execute(SQLiteQueries.CREATE_BUCKET_TABLE.format(table=self.table))
            conn.execute(
                SQLiteQueries.CREATE_INDEX_ON_TIMESTAMP.format(
                    index_name=f"idx_{self.table}_ts", table_name=self.table
                )
            )
            conn.commit()
        self.conn = conn
        self.lock = _ImmediateLock(conn)

    def bind(self, rates: list[Rate]) -> None:
        self.bucket = SQLiteBucket(rates, self.conn, self.table, lock=self.lock)

    def blocked_ms(self) -> int:
        with self.lock.mutex:  # one connection, shared by the run's threads
            row = self.conn.execute(
                "SELECT until_ms FROM sweeper_blocks WHERE key = ?", (self.key,)
            ).fetchone()
            if self.conn.in_transaction:
                self.conn.commit()
        return max(0, int(row[0]) - self.now_ms()) if row else 0

    def give_back(self, name: str) -> None:
        with self.lock:
            self.conn.execute(f"DELETE FROM '{self.table}' WHERE name = ?", (name,))

    def block(self, seconds: float) -> None:
        until = self.now_ms() + int(seconds * 1000)
        with self._errors(), self.lock:
            self.conn.execute(
                "INSERT INTO sweeper_blocks (key, until_ms) VALUES (?, ?) ON CONFLICT(key) "
                "DO UPDATE SET until_ms = max(until_ms, excluded.until_ms)",
                (self.key, until),
            )

    def close(self) -> None:
        self.conn.close()


class PostgresStore(_Store):
    """Every worker that reaches one PostgreSQL database; the server's clock for every slot."""

    kind = "PostgreSQL rate store"

    def __init__(self, url: str, key: str, *, connect_timeout: float = 10.0) -> None:
        self.key = key
        self.table = _table(key)
        try:
            import psycopg  # noqa: F401  (checked here for the message)
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise ConfigError(
                "run.rate_store names PostgreSQL, which needs the postgres extra: "
                "pip install 'sweeper[postgres]'.",
                key="run.rate_store",
            ) from None

        def configure(conn: Any) -> None:
            # The bucket stores `timestamp without time zone`: every session must read and write
            # it in one zone, or clients in other zones shift each other's windows by hours.
            conn.execute("SET TIME ZONE 'UTC'")
            conn.commit()

        with self._errors():
            self.pool = ConnectionPool(
                url.replace("postgres://", "postgresql://", 1),
                min_size=1,
                max_size=2,
                kwargs={"autocommit": False, "connect_timeout": int(connect_timeout)},
                configure=configure,
                open=False,
            )
            self.pool.open(wait=True, timeout=connect_timeout)
            with self.pool.connection() as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS sweeper_blocks "
                    "(key TEXT PRIMARY KEY, until TIMESTAMPTZ NOT NULL)"
                )

    def bind(self, rates: list[Rate]) -> None:
        from pyrate_limiter.buckets.postgres import PostgresBucket

        with self._errors():
            self.bucket = PostgresBucket(self.pool, self.table, rates)

    def now_ms(self) -> int:
        # The server's clock: machines whose clocks drift apart still share one timeline.
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
            ).fetchone()
        return int(row[0])

    def blocked_ms(self) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT (extract(epoch FROM until - clock_timestamp()) * 1000)::bigint "
                "FROM sweeper_blocks WHERE key = %s",
                (self.key,),
            ).fetchone()
        return max(0, int(row[0])) if row else 0

    def give_back(self, name: str) -> None:
        from psycopg import sql

        table = sql.Identifier(f"ratelimit___{self.table}")
        with self.pool.connection() as conn:
            conn.execute(sql.SQL("DELETE FROM {} WHERE name = %s").format(table), (name,))

    def block(self, seconds: float) -> None:
        with self._errors(), self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO sweeper_blocks (key, until) VALUES "
                "(%s, clock_timestamp() + %s * interval '1 millisecond') ON CONFLICT (key) DO "
                "UPDATE SET until = GREATEST(sweeper_blocks.until, excluded.until)",
                (self.key, int(seconds * 1000)),
            )

    def close(self) -> None:
        self.pool.close()


def open_rate_store(url: str, key: str, *, root: Path) -> SQLiteStore | PostgresStore:
    """The store ``url`` names, opened (a database connection is made here); a SQLite path is
    relative to the project ``root``."""
    check_rate_store(url)
    if urlsplit(url).scheme.lower() == "sqlite":
        return SQLiteStore(sqlite_path(url, root), key)
    return PostgresStore(url, key)


def rate_key(
    rate_store_key: str | None, base_url: str, credentials: Callable[[], tuple[str, ...]]
) -> str:
    """``run.rate_key`` if set, else the default per-user key."""
    return rate_store_key or default_key(base_url, credentials())

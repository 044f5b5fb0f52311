"""Group commit of ledger rows for the asyncio tasks of a run (one fsync per loop pass)."""

from __future__ import annotations

import asyncio

from sweeper.ledger import Ledger, LedgerRow


class AsyncAppender:
    """Group commit for many asyncio tasks: the rows of one pass of the event loop, one fsync.

    Rows handed in during one pass of the event loop are written and fsynced together, in call
    order, at the start of the next pass. ``await append(row)`` returns only once the row is on
    disk, so a caller that writes an ``intent`` row and then sends its POST keeps the write-ahead
    rule; ``append_soon(row)`` does not wait (for rows nothing has to wait for: the same task's
    next ``append`` is committed after it, so it is on disk before that task's next request).

    The commit runs on the event loop, not in a thread: one write and one fsync per pass cost
    ~0.2 ms here, while handing each batch to a thread cost ~1 ms of CPU per combination in
    GIL hand-offs and several passes of latency per row (docs/performance.md). A failed commit
    is raised to every waiting caller and by every later ``append`` or ``drain``: rows after a
    failed write are never appended behind it.
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._rows: list[LedgerRow] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled: asyncio.Handle | None = None
        self._error: BaseException | None = None

    def append_soon(self, row: LedgerRow) -> None:
        """Queue a row for the next commit without waiting for it."""
        self._check()
        self._rows.append(row)
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self._commit)

    async def append(self, row: LedgerRow) -> None:
        """Queue a row and return once it is on disk (shared fsync with the pass's other rows)."""
        self.append_soon(row)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        # A caller cancelled while waiting cancels only its waiter: the row stays in the batch.
        await waiter

    def append_now(self, row: LedgerRow) -> None:
        """Write the queued rows and this one, in order, before returning (for sync callbacks)."""
        self._check()
        self._rows.append(row)
        self._commit()
        self._check()

    async def drain(self) -> None:
        """Write every queued row now; raise if any commit of this appender failed."""
        self._commit()
        self._check()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _commit(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        rows, self._rows = self._rows, []
        waiters, self._waiters = self._waiters, []
        error: BaseException | None = None
        if rows:
            try:
                self._ledger.append_many(rows)
            except Exception as exc:
                error = self._error = exc
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

"""Route SIGINT and SIGTERM to a running sweep for the whole life of a command.

``loop.add_signal_handler`` is not enough: when the loop closes, asyncio puts SIGTERM back to
the default action (terminate) and SIGINT back to ``KeyboardInterrupt``. A second Ctrl-C or a
second TERM that lands while the summary prints then kills the process mid-output, with an exit
code (-2, -15) that no cron wrapper expects. The relay owns both signals from start to finish:

- before the run starts, a signal aborts the command (``KeyboardInterrupt``): nothing was sent;
- while the run is attached, it is forwarded to the run's loop, thread-safely;
- after the run has returned, it is counted and ignored: the ledger is already consistent and
  the exit code is already decided.

When the command is the whole process (``restore=False``), both signals are ignored from the
end of the block on: the interpreter's shutdown puts Python-level handlers back to the default
action, which would turn the decided exit code into "killed by signal", but it keeps SIG_IGN.
Embedded uses (tests, a library caller) get their handlers back.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalRelay:
    """Install handlers for SIGINT and SIGTERM; on exit, restore the previous ones (or ignore
    both, with ``restore=False``)."""

    def __init__(self, *, restore: bool = True) -> None:
        self.restore = restore
        self._target: tuple[asyncio.AbstractEventLoop, Callable[[], None]] | None = None
        self._finished = False
        self._previous: dict[int, Any] = {}
        self.late = 0  # signals that arrived after the run had returned

    def __enter__(self) -> SignalRelay:
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (an embedding app owns signals)
                break
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._target = None
        self._finished = True
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if self.restore else signal.SIG_IGN)
        self._previous.clear()

    @contextlib.contextmanager
    def attached(self, callback: Callable[[], None]) -> Iterator[None]:
        """Forward signals to ``callback`` on the running loop until the block ends."""
        self._target = (asyncio.get_running_loop(), callback)
        try:
            yield
        finally:
            self._target = None
            self._finished = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        target = self._target
        if target is not None:
            loop, callback = target
            with contextlib.suppress(RuntimeError):  # the loop closed under us: a late signal
                loop.call_soon_threadsafe(callback)
                return
        if self._finished:
            self.late += 1
            return
        raise KeyboardInterrupt

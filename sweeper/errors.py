"""Every exception sweeper raises on purpose.

The tree::

    SweeperError                    base; the CLI catches this and nothing broader
    ├── ConfigError                 bad TOML, unknown key, bad value, missing token  -> exit 2
    │   └── MatrixError             empty axis, unknown parameter, colliding outputs -> exit 2
    ├── ApiError                    talking to the API failed (after any retries)
    │   ├── ApiConnectionError      never reached the server: connect error/timeout  [NOT_SENT]
    │   ├── ApiInDoubtError         may have been processed: read timeout, dropped
    │   │                           connection, 500/502/504                          [IN_DOUBT]
    │   ├── RateLimitedError        429 or 503: refused before processing            [REJECTED]
    │   ├── ApiRejectedError        400/404/409/415/422: processed and refused       [PERMANENT]
    │   ├── AuthError               401/403                                          [AUTH]
    │   └── ApiResponseError        2xx whose body is not what the API documents     [PERMANENT]
    ├── LedgerError                 unreadable ledger, other sweep, bad schema       -> exit 1
    │   └── LedgerLockedError       another sweeper holds the ledger                 -> exit 1
    ├── RunAbortedError             the run stopped itself (breaker, budget, signal) -> exit 1
    └── OutputError                 a report or plan file could not be written       -> exit 1

``exit_code_for`` is the one place where an error or a result becomes an ``ExitCode``.

Messages are complete sentences that name the place (file, key, URL path) and say what to do.
They never contain an access token, a password or a request header.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Protocol


class ExitCode(enum.IntEnum):
    """What ``sweeper`` exits with; scripts and schedulers branch on these."""

    OK = 0  # every combination in scope succeeded
    STOPPED = 1  # the run could not go on (auth, unreachable API, ledger locked, interrupted)
    USAGE = 2  # bad usage or configuration: nothing was submitted
    INCOMPLETE = 3  # finished, but some combinations failed, are in doubt or still running

    def __str__(self) -> str:
        # The number a shell sees, on every Python (3.10 would print "ExitCode.OK").
        return str(self.value)


class FailureClass(enum.Enum):
    """What an API failure tells us about whether the request took effect."""

    NOT_SENT = "not_sent"  # the request never left: resend freely
    REJECTED = "rejected"  # 429/503: refused before processing; wait, then resend
    IN_DOUBT = "in_doubt"  # may have been applied: resend only with the same x-execution-id
    PERMANENT = "permanent"  # processed and refused: record, never resend
    AUTH = "auth"  # credentials refused: stop the run


class SweeperError(Exception):
    """Base class of every error sweeper raises on purpose."""


class ConfigError(SweeperError):
    """The configuration (or command line) is wrong; nothing was submitted."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.path = path
        self.key = key
        self.line = line
        self.column = column
        self.message = message
        where = path or ""
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        if key:
            where += f" [{key}]" if where else f"[{key}]"
        super().__init__(f"{where}: {message}" if where else message)


class MatrixError(ConfigError):
    """The matrix cannot be expanded into a valid, collision-free set of combinations."""


class ApiError(SweeperError):
    """Talking to the API failed."""

    failure: FailureClass = FailureClass.PERMANENT

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        name: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.name = name  # the API's exception name, e.g. "ValidationFailed"
        self.request_id = request_id  # x-trifacta-request-id, for support tickets
        super().__init__(message)


class ApiConnectionError(ApiError):
    """The request never reached the server (connect error or connect timeout)."""

    failure = FailureClass.NOT_SENT


class ApiInDoubtError(ApiError):
    """The request may have been processed; only a resend with the same execution id is safe."""

    failure = FailureClass.IN_DOUBT


class RateLimitedError(ApiError):
    """The server refused the request before processing it (429 or 503)."""

    failure = FailureClass.REJECTED

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after  # seconds, the larger of x-retry-after and Retry-After


class ApiRejectedError(ApiError):
    """The server processed the request and refused it; resending cannot help."""

    failure = FailureClass.PERMANENT


class AuthError(ApiError):
    """The server refused the credentials (401) or the permission (403)."""

    failure = FailureClass.AUTH


class ApiResponseError(ApiError):
    """The server answered 2xx with a body that does not match the documented shape."""

    failure = FailureClass.PERMANENT


class LedgerError(SweeperError):
    """The ledger cannot be used: unreadable, from another sweep, or an unknown schema."""


class LedgerLockedError(LedgerError):
    """Another sweeper process is writing this ledger; ``holder`` says who, when known."""

    def __init__(self, message: str, *, holder: str = "") -> None:
        super().__init__(message)
        self.holder = holder  # "held by PID 1234 on host x since ..., run ...", or ""


class RunAbortedError(SweeperError):
    """The run stopped itself before the end; the ledger is consistent and resumable."""


class OutputError(SweeperError):
    """A file for people (report, plan CSV) could not be written; no partial file is left."""


class Outcome(Protocol):
    """A finished command's result: whether it stopped early, whether another process is still
    running the sweep, and its combinations by state."""

    @property
    def stopped_early(self) -> bool: ...

    @property
    def in_progress(self) -> bool: ...

    @property
    def states(self) -> Mapping[str, int]: ...


def exit_code_for(outcome: BaseException | Outcome) -> ExitCode:
    """The exit code for an error a command raised, or for the result it returned."""
    if isinstance(outcome, ConfigError):
        return ExitCode.USAGE
    if isinstance(outcome, BaseException):
        return ExitCode.STOPPED
    if outcome.stopped_early:
        return ExitCode.STOPPED
    if outcome.in_progress:
        return ExitCode.OK  # a look at a sweep another process is running: that run decides
    unsettled = sum(n for state, n in outcome.states.items() if state != "succeeded")
    return ExitCode.INCOMPLETE if unsettled else ExitCode.OK

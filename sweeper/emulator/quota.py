"""Per-endpoint quotas (runJobGroup, runFlow, runPlan): a 60-second sliding window per user and
workspace."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class QuotaAnswer:
    """Whether a POST may proceed, and the x-rate-limit-* headers to send either way."""

    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: int = 0
    scope: str = "user"  # which quota refused: "user" or "workspace"
    limit: int = 0


def too_many_details(
    retry_after: int, limit: int, scope: str, endpoint: str = "runJobGroup"
) -> str:
    """The v4 API's documented 429 details text, verbatim apart from the numbers and endpoint."""
    return (
        f'API quota reached for "{endpoint}". Wait {retry_after} seconds before making a new '
        f"request. (Max. {limit} requests allowed per minute per {scope}.)"
    )


class Quota:
    """Counts accepted POSTs in the store, so every app on one state file shares the quota.

    Each endpoint is its own bucket (the platform documents separate quotas): runJobGroup keeps
    the original ``quota_events`` table, any other endpoint counts in ``endpoint_quota_events``.
    """

    def __init__(
        self, user_limit: int, workspace_limit: int, endpoint: str = "runJobGroup"
    ) -> None:
        self.user_limit = user_limit
        self.workspace_limit = workspace_limit
        self.endpoint = endpoint
        self._args: tuple[str, ...]
        # runJobGroup stays in its own table, so state files written before flows keep counting.
        if endpoint == "runJobGroup":
            self._table, self._only, self._args = "quota_events", "", ()
        else:
            self._table, self._only, self._args = (
                "endpoint_quota_events",
                " AND endpoint = ?",
                (endpoint,),
            )

    def take(self, conn: sqlite3.Connection, user_key: str, now: float) -> QuotaAnswer:
        """Check both quotas; when allowed, record the POST in the window."""
        since = now - WINDOW_SECONDS
        table, only, extra = self._table, self._only, self._args
        conn.execute(f"DELETE FROM {table} WHERE at <= ?{only}", (since, *extra))
        scopes = []
        for scope, limit, where, args in (
            ("user", self.user_limit, "user_key = ?", (user_key,)),
            ("workspace", self.workspace_limit, "1 = 1", ()),
        ):
            if limit <= 0:
                continue
            row = conn.execute(
                f"SELECT count(*), min(at) FROM {table} WHERE {where}{only}",
                (*args, *extra),
            ).fetchone()
            used, oldest = int(row[0]), row[1]
            scopes.append((scope, limit, used, float(oldest) if oldest is not None else None))
        refused = [s for s in scopes if s[2] >= s[1]]
        headers: dict[str, str] = {}
        if refused:
            scope, limit, _, oldest = refused[0]
            free_at = (oldest if oldest is not None else now) + WINDOW_SECONDS
            retry_after = max(1, math.ceil(free_at - now))
            for name, lim, used, old in scopes:
                reset = (old if old is not None else now) + WINDOW_SECONDS
                headers.update(_headers(name, lim, max(0, lim - used), reset))
            headers["x-retry-after"] = str(retry_after)
            return QuotaAnswer(False, headers, retry_after, scope, limit)
        if self._table == "quota_events":
            conn.execute("INSERT INTO quota_events (at, user_key) VALUES (?, ?)", (now, user_key))
        else:
            conn.execute(
                "INSERT INTO endpoint_quota_events (endpoint, at, user_key) VALUES (?, ?, ?)",
                (self.endpoint, now, user_key),
            )
        for name, lim, used, old in scopes:
            reset = (old if old is not None else now) + WINDOW_SECONDS
            headers.update(_headers(name, lim, lim - used - 1, reset))
        return QuotaAnswer(True, headers)


def _headers(scope: str, limit: int, remaining: int, reset_at: float) -> dict[str, str]:
    return {
        f"x-rate-limit-{scope}-limit": str(limit),
        f"x-rate-limit-{scope}-remaining": str(remaining),
        f"x-rate-limit-{scope}-reset": str(int(reset_at * 1000)),  # epoch milliseconds
    }

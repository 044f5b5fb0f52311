"""The one vocabulary for where a combination stands, derived from its last ledger row.

Every view of a sweep (the run summary, ``status``, ``report``, ``plan``) speaks in these states;
``sweeper.ledger.state_of`` is the one function that derives them.
"""

from __future__ import annotations

import enum


class State(str, enum.Enum):
    """Where one combination stands in one run."""

    SUCCEEDED = "succeeded"  # finished Complete, outputs not found missing
    FAILED = "failed"  # finished Failed, or Complete with missing outputs
    REJECTED = "rejected"  # the platform refused the request for good (4xx)
    CANCELED = "canceled"  # the job group was canceled
    TIMED_OUT = "timed_out"  # still running when run.timeout was reached
    RUNNING = "running"  # a job group exists and has not ended as far as the ledger knows
    IN_DOUBT = "in_doubt"  # a request may have created a job group; a resume looks it up
    NOT_SENT = "not_sent"  # provably not created; the next run submits it
    PENDING = "pending"  # never attempted in this run

    @property
    def label(self) -> str:
        """The state as people read it: ``timed out``, ``in doubt``."""
        return self.value.replace("_", " ")

    @property
    def is_failure(self) -> bool:
        """Ended without success: failed, rejected or canceled."""
        return self in _FAILURES

    @property
    def is_open(self) -> bool:
        """A job group exists that may still be running (worth asking the API about)."""
        return self in _OPEN

    @property
    def is_terminal(self) -> bool:
        """Nothing more will happen to it in this run without a deliberate rerun."""
        return self is State.SUCCEEDED or self in _FAILURES


_FAILURES = frozenset({State.FAILED, State.REJECTED, State.CANCELED})
_OPEN = frozenset({State.RUNNING, State.TIMED_OUT})

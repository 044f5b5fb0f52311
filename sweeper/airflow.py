"""Airflow operators for sweeper (``pip install 'dataprep-sweeper[airflow]'``).

- ``SweepOperator``: the whole sweep in one task (``sweeper.run``).
- ``sweep_task_group``: a plan task, one mapped task per shard that submits its shard and then
  defers to ``SweepShardTrigger`` while the job groups run (no worker slot held), and a report
  task that fails the DAG run when any combination did not succeed.

The credential comes from an Airflow connection: its password is the token (for
``api.auth = "basic"`` the login is the username; for ``"oauth"`` the password is the refresh
token and the login the client id), its host, when set, replaces ``api.base_url``. It reaches
sweeper through the ``environ=`` of the library functions only: never logged, never in an XCom.

The run id defaults to the DAG run's logical date (``{{ ds }}``), so retries and clears resume
the same run; sweeper's execution ids and ledger make every submission idempotent.

Never imported by ``import sweeper``: importing Airflow takes more than a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from airflow.sdk import BaseHook, BaseOperator, TaskGroup, TriggerRule
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from sweeper.config import SweepConfig, load_config
from sweeper.errors import ConfigError, SweeperError
from sweeper.journal import RunEvent, RunSummary
from sweeper.state import State

__all__ = [
    "SweepOperator",
    "SweepPlanOperator",
    "SweepReportOperator",
    "SweepShardOperator",
    "SweepShardTrigger",
    "sweep_task_group",
]

DEFAULT_CONN_ID = "dataprep"
_T = TypeVar("_T")


# --- configuration and credentials --------------------------------------------------------------


def _base_url(conn: Any) -> str | None:
    """The connection's host as a base URL (scheme from the host, else its schema, else https)."""
    host = (getattr(conn, "host", None) or "").strip()
    if not host:
        return None
    if "://" not in host:
        host = f"{getattr(conn, 'schema', None) or 'https'}://{host}"
    port = getattr(conn, "port", None)
    if port and host.count(":") < 2:  # no port in the host already
        head, _, path = host.partition("://")[2].partition("/")
        host = f"{host.partition('://')[0]}://{head}:{int(port)}" + (f"/{path}" if path else "")
    return host


def configured(config: str | os.PathLike[str], conn: Any) -> tuple[SweepConfig, dict[str, str]]:
    """(the sweep's config with the connection's host as base URL, the environ holding its
    credential) for the library functions' ``environ=``."""
    cfg = load_config(Path(config))
    url = _base_url(conn)
    if url is not None:
        cfg = dataclasses.replace(cfg, api=dataclasses.replace(cfg.api, base_url=url))
    api = cfg.api
    env = dict(os.environ)
    login, password = getattr(conn, "login", None) or "", getattr(conn, "password", None) or ""
    if api.auth == "basic":
        env.update({api.username_env: login, api.password_env: password})
    elif api.auth == "oauth":
        env[api.refresh_token_env] = password
        if login:
            env[api.client_id_env] = login
    elif password:
        env[api.token_env] = password
    return cfg, env


def _guard(call: Callable[[], _T]) -> _T:
    """``call()``, with a bad config failing the task for good: a retry would fail the same way."""
    try:
        return call()
    except ConfigError as exc:
        raise AirflowFailException(str(exc)) from None
    except SweeperError as exc:
        raise AirflowException(str(exc)) from None


def _logical_date(context: Mapping[str, Any]) -> str | None:
    """The DAG run's logical date (``{{ ds }}``), or its run id when it has none (Airflow 3
    runs triggered by an asset or through the API may have no logical date)."""
    ds = context.get("ds")
    if ds:
        return str(ds)
    run = context.get("dag_run")
    return str(run.run_id) if run is not None else None


class _SweepBase(BaseOperator):
    """What every sweeper operator shares: the sweep file, run id, as-of and connection."""

    template_fields: Sequence[str] = ("config", "run_id", "as_of")

    def __init__(
        self,
        *,
        config: str | os.PathLike[str],
        run_id: str | None = None,
        as_of: str | None = None,
        conn_id: str = DEFAULT_CONN_ID,
        rerun: str = "incomplete",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = str(config)
        self.run_id = run_id
        self.as_of = as_of
        self.conn_id = conn_id
        self.rerun = rerun

    def sweep_run_id(self, context: Mapping[str, Any]) -> str | None:
        """The given run id, else the logical date: every retry and clear resumes one run."""
        return self.run_id or _logical_date(context)

    def sweep_as_of(self, context: Mapping[str, Any]) -> str | None:
        """The given as-of, else the logical date, so a backfill sweeps the days before it."""
        return self.as_of or context.get("ds") or None

    def credentials(self) -> tuple[SweepConfig, dict[str, str]]:
        """The config and environ for this task's connection."""
        conn = BaseHook.get_connection(self.conn_id)
        return _guard(lambda: configured(self.config, conn))

    def on_sweep_event(self, event: RunEvent) -> None:
        """Each progress event of the sweep: logged as ``sweeper run`` prints it off a terminal."""
        self.log.info("%s", event.message)


def summary_text(summary: RunSummary) -> str:
    """The run's summary as ``sweeper run`` ends it (no credential in it: it is redacted)."""
    from sweeper.render import summary_text as render

    return render(summary)


class SweepOperator(_SweepBase):
    """The whole sweep in one task (``sweeper.run``); fails on a non-zero exit code."""

    def execute(self, context: Any) -> dict[str, int]:
        import sweeper

        cfg, env = self.credentials()
        summary = _guard(
            lambda: sweeper.run(
                cfg,
                run_id=self.sweep_run_id(context),
                as_of=self.sweep_as_of(context),
                rerun=self.rerun,
                environ=env,
                on_event=self.on_sweep_event,
            )
        )
        if summary.exit_code != 0:
            raise AirflowException(summary_text(summary))
        return dict(summary.states)


class SweepPlanOperator(_SweepBase):
    """Check the whole plan (``sweeper.plan``) before anything runs; a bad config fails for good."""

    def execute(self, context: Any) -> str:
        import sweeper

        planned = _guard(
            lambda: sweeper.plan(
                self.config,
                run_id=self.sweep_run_id(context),
                as_of=self.sweep_as_of(context),
                rerun=self.rerun,
            )
        )
        self.log.info("%s", planned.message)
        return planned.message


class SweepShardOperator(_SweepBase):
    """Submit shard ``shard`` of ``shards`` without waiting, then defer until its job groups end.

    Resumed, it records how they ended (``sweeper.status`` on the shard's ledger) and fails
    when a combination of the shard did not succeed. A retry submits nothing twice.
    """

    def __init__(self, *, shard: int, shards: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shard = shard
        self.shards = shards

    def execute(self, context: Any) -> dict[str, int]:
        import sweeper

        cfg, env = self.credentials()
        run_id = self.sweep_run_id(context)
        summary = _guard(
            lambda: sweeper.run(
                cfg,
                run_id=run_id,
                as_of=self.sweep_as_of(context),
                rerun=self.rerun,
                wait=False,
                environ=env,
                shard=(self.shard, self.shards),
                on_event=self.on_sweep_event,
            )
        )
        if summary.stopped_early:
            raise AirflowException(summary_text(summary))
        open_ids, since = self._open_groups(cfg, summary.run_id)
        if not open_ids:
            return self.resume(context, {"status": "done", "run_id": summary.run_id})
        self.log.info("Waiting on %d job groups (deferred).", len(open_ids))
        self.defer(
            trigger=SweepShardTrigger(
                config=self.config,
                conn_id=self.conn_id,
                job_group_ids=",".join(str(i) for i in open_ids),
                deadline=int(time.time() + cfg.run.timeout),
                run_id=summary.run_id,
                since=since,
            ),
            method_name="resume",
        )
        raise AssertionError("unreachable: defer() hands the task to the triggerer by raising")

    def _ledger(self, cfg: SweepConfig) -> Path:
        from sweeper.shards import Shard

        return Shard(self.shard, self.shards).ledger(cfg.sweep.ledger)

    def _open_groups(self, cfg: SweepConfig, run_id: str) -> tuple[list[int], int]:
        """The shard's open job groups, and when its run began (epoch seconds; 0 if unknown),
        which bounds the job library pages the trigger reads."""
        from sweeper.ledger import current_state, read_ledger
        from sweeper.refreshing import open_groups, run_start

        path = self._ledger(cfg)
        if not path.exists():
            return [], 0
        history = read_ledger(path, sweep=cfg.sweep.name)
        rows = current_state(history, run_id=run_id)
        start = run_start(history, run_id)
        ids = sorted({r.job_group_id for r in open_groups(list(rows.values())) if r.job_group_id})
        return ids, int(start.timestamp()) if start is not None else 0

    def resume(self, context: Any, event: Mapping[str, Any]) -> dict[str, int]:
        """Record how the shard's job groups ended; fail unless all its combinations succeeded."""
        import sweeper

        run_id = str(event["run_id"])
        cfg, env = self.credentials()
        path = self._ledger(cfg)
        if not path.exists():
            return {}  # nothing of this sweep falls in this shard
        result = _guard(lambda: sweeper.status(path, config=cfg, run_id=run_id, environ=env))
        counts = result.counts()
        self.log.info("Shard %d/%d of run %s: %s", self.shard, self.shards, run_id, counts)
        problems = []
        if event.get("status") != "done":
            problems.append(str(event.get("message") or event.get("status")))
        if result.errors:
            problems.extend(result.errors)
        bad = {s: n for s, n in counts.items() if s != State.SUCCEEDED.value}
        if bad:
            problems.append(", ".join(f"{n} {State(s).label}" for s, n in sorted(bad.items())))
        if problems:
            raise AirflowException(
                f"shard {self.shard}/{self.shards} of run {run_id}: " + "; ".join(problems)
            )
        return counts


class SweepReportOperator(_SweepBase):
    """Merge the shard ledgers (``sweeper.report``); fail unless every combination succeeded."""

    def execute(self, context: Any) -> dict[str, int]:
        import sweeper
        from sweeper.planner import Action

        run_id = self.sweep_run_id(context)
        report = _guard(lambda: sweeper.report(self.config, run_id=run_id))
        states = report.combinations["state"].value_counts()
        counts = {str(s): int(n) for s, n in states.items()}
        self.log.info("Run %s: %s", run_id, counts)
        # A shard that never ran leaves no rows: what a plan of the same run would still do
        # tells an incomplete run from a complete one.
        left = _guard(lambda: sweeper.plan(self.config, run_id=run_id, rerun="incomplete"))
        todo = left.counts.total - left.counts.by_action[Action.SKIP.value]
        bad = {s: n for s, n in counts.items() if s != State.SUCCEEDED.value}
        if bad or todo:
            parts = [f"{n} {State(s).label}" for s, n in sorted(bad.items())]
            if todo:
                parts.append(f"{todo} not done (submit, resend or wait)")
            raise AirflowException(f"run {run_id}: " + ", ".join(parts))
        return counts


def _event(run_id: str, status: str, message: str = "") -> TriggerEvent:
    """The trigger's one event: done, timeout or error (Airflow's constructor is untyped)."""
    payload = {"status": status, "message": message, "run_id": run_id}
    return TriggerEvent(payload)  # type: ignore[no-untyped-call]


# --- the trigger ---------------------------------------------------------------------------------


class SweepShardTrigger(BaseTrigger):
    """Polls a shard's job groups from the triggerer until all have ended or ``deadline`` passes.

    ``job_group_ids`` is a comma-separated list and ``deadline`` epoch seconds: the kwargs are
    stored and rebuilt by Airflow, so they hold strings and ints only (and no credential: the
    trigger reads the connection itself). Every event carries ``run_id`` back to the task.
    """

    def __init__(
        self,
        *,
        config: str,
        conn_id: str,
        job_group_ids: str,
        deadline: int,
        run_id: str,
        since: int = 0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config = config
        self.conn_id = conn_id
        self.job_group_ids = job_group_ids
        self.deadline = deadline
        self.run_id = run_id
        self.since = since  # epoch seconds the shard's run began (0: unknown)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "config": self.config,
                "conn_id": self.conn_id,
                "job_group_ids": self.job_group_ids,
                "deadline": self.deadline,
                "run_id": self.run_id,
                "since": self.since,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from sweeper.connection import connect
        from sweeper.errors import ApiError, AuthError
        from sweeper.pacing import Pacer, PollSchedule
        from sweeper.polling import StatusPoller
        from sweeper.redact import redact

        waiting = {int(i) for i in self.job_group_ids.split(",") if i.strip()}
        try:
            conn = await BaseHook.aget_connection(self.conn_id)
            # Reading the sweep file (and a token file) blocks: off the triggerer's event loop.
            cfg, env = await asyncio.to_thread(configured, self.config, conn)
            client = await asyncio.to_thread(connect, cfg, environ=env)
        except ConfigError as exc:
            yield _event(self.run_id, "error", redact(str(exc)))
            return
        run = cfg.run
        since = datetime.fromtimestamp(self.since, timezone.utc) if self.since else None
        poller = StatusPoller(
            client,
            Pacer(1, 1.0 / run.max_polls_per_second, sleep=asyncio.sleep, margin=0.0),
            since=since,  # the groups were created after the run began: pages stop there
        )
        schedule = PollSchedule(run.poll_interval, run.poll_max_interval, started=time.monotonic())
        async with client:
            while True:
                remaining = self.deadline - time.time()
                if remaining <= 0:
                    yield _event(self.run_id, "timeout", f"{len(waiting)} still running")
                    return
                delay = schedule.next_delay(batched=poller.batching)
                await asyncio.sleep(min(delay, remaining))
                ids = sorted(waiting)
                answers = await asyncio.gather(
                    *(poller.get(i) for i in ids), return_exceptions=True
                )
                for gid, answer in zip(ids, answers, strict=True):
                    if isinstance(answer, AuthError):
                        yield _event(self.run_id, "error", redact(str(answer)))
                        return
                    if isinstance(answer, ApiError):
                        # A passing failure: the group is asked about again next round.
                        self.log.warning("polling job group %s: %s", gid, redact(str(answer)))
                    elif isinstance(answer, BaseException):
                        raise answer
                    elif answer.terminal:
                        waiting.discard(gid)
                if not waiting:
                    yield _event(self.run_id, "done")
                    return


# --- the task group ------------------------------------------------------------------------------


def sweep_task_group(
    config: str | os.PathLike[str],
    *,
    shards: int,
    conn_id: str = DEFAULT_CONN_ID,
    group_id: str = "sweep",
    run_id: str | None = None,
    as_of: str | None = None,
    rerun: str = "incomplete",
    retries: int = 2,
    retry_delay: timedelta = timedelta(minutes=5),
    **task_kwargs: Any,
) -> TaskGroup:
    """plan >> one deferring task per shard (mapped) >> report (runs even when a shard failed).

    ``task_kwargs`` go to every task (``pool``, ``queue``, ``execution_timeout``...).
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    common: dict[str, Any] = {
        "config": str(config),
        "conn_id": conn_id,
        "run_id": run_id,
        "as_of": as_of,
        "retries": retries,
        "retry_delay": retry_delay,
        **task_kwargs,
    }
    with TaskGroup(group_id=group_id) as group:
        plan = SweepPlanOperator(task_id="plan", rerun=rerun, **common)
        shard = SweepShardOperator.partial(
            task_id="shard", shards=shards, rerun=rerun, **common
        ).expand(shard=list(range(shards)))
        report = SweepReportOperator(task_id="report", trigger_rule=TriggerRule.ALL_DONE, **common)
        plan >> shard >> report
    return group

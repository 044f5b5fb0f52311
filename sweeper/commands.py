"""The library behind the CLI: plan, run, status and report, each wired exactly as `sweeper` does.

Every function loads the config (a path or a loaded ``SweepConfig``), opens the ledger, builds
the client, installs secrets redaction and routes SIGINT/SIGTERM as the command does, runs its
own event loop, and returns a typed result. None prints or exits: the CLI renders the result and
asks ``sweeper.errors.exit_code_for`` for the exit code. Errors are ``SweeperError``s;
``ConfigError`` means nothing was submitted.

Heavy modules (the HTTP stack, pandas) are imported inside the functions that need them, so
that planning never loads httpx and importing this module stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from sweeper.config import SweepConfig, load_config
from sweeper.errors import ConfigError
from sweeper.ledger import LedgerRow, current_state, latest_run_id, read_ledger
from sweeper.planner import PlanCounts, PlannedCombination, Planner, latest_as_of, plan_message
from sweeper.render import PlanCsv, PlanDigest
from sweeper.shards import LedgerSet, Shard, parse_shard, read_sweep_ledgers, shard_ledgers

if TYPE_CHECKING:
    import httpx

    from sweeper.journal import RunEvent, RunSummary
    from sweeper.ledger import Ledger
    from sweeper.pacing import SharedBucket
    from sweeper.refreshing import StatusResult
    from sweeper.reporting import Report
    from sweeper.signals import SignalRelay
    from sweeper.stopping import StopController

ConfigSource = str | os.PathLike[str] | SweepConfig
"""A sweep file's path, or a config already loaded with ``load_config``."""

ShardSpec = str | tuple[int, int] | Shard
"""Shard K of N: ``"K/N"``, ``(K, N)`` or a ``Shard``."""


@dataclass(frozen=True)
class SweepPlan:
    """What ``run`` would do for one run of a sweep, checked in full; nothing was submitted."""

    planner: Planner
    counts: PlanCounts
    digest: PlanDigest  # counts per axis, first/last and notable combinations (all: keep_all)
    output: Path | None = None  # the CSV plan written, if one was asked for
    history: Sequence[LedgerRow] = field(default=(), repr=False)

    @property
    def config(self) -> SweepConfig:
        return self.planner.config

    @property
    def run_id(self) -> str:
        return self.planner.run_id

    @property
    def as_of(self) -> datetime:
        return self.planner.as_of

    @property
    def message(self) -> str:
        """One line: how many combinations to submit, resend, wait on and skip."""
        return plan_message(self.counts, self.config.sweep.name, self.run_id)


def check_run_id(run_id: str) -> str:
    """``run_id``, or ConfigError if it holds a control character (it is written to CSV rows,
    output paths and lock files, where a tab or a newline would corrupt or split them)."""
    for char in run_id:
        if unicodedata.category(char) == "Cc":  # C0, DEL and C1
            raise ConfigError(
                f"the run id {run_id!r} contains a control character (U+{ord(char):04X}); "
                "use letters, digits and punctuation only (e.g. 2026-11-29 or backfill-oct).",
                key="--run-id",
            )
    return run_id


def parse_as_of(value: str | date | None) -> datetime | None:
    """An ``--as-of`` value as an aware datetime (UTC if no zone is given); ConfigError if bad."""
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time())
    else:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(
                f"{value!r} is not an ISO date or datetime (e.g. 2026-11-29 or 2026-11-29T06:00).",
                key="--as-of",
            ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _config(source: ConfigSource) -> SweepConfig:
    return source if isinstance(source, SweepConfig) else load_config(Path(source))


def _run_id(run_id: str | None) -> str:
    """The given run id, checked, or today's UTC date: a restarted nightly run resumes."""
    if run_id:
        return check_run_id(run_id)
    return datetime.now(timezone.utc).date().isoformat()


def _resolve_as_of(history: Sequence[LedgerRow], run_id: str, given: datetime | None) -> datetime:
    """The as-of the ledger recorded for this run wins (a resume must not drift), then the
    given one, then now."""
    return latest_as_of(history, run_id) or given or datetime.now(timezone.utc)


def _open_ledger(config: SweepConfig, path: Path, run_id: str | None) -> Ledger:
    from sweeper.errors import LedgerError
    from sweeper.ledger import SCHEMA, Ledger

    ledger = Ledger.open(
        path, sweep=config.sweep.name, param_names=config.matrix.param_names, run_id=run_id
    )
    if config.sweep.runs and ledger.schema != SCHEMA:
        # Refused before any POST: a flow run sent now could not be recorded in this file.
        ledger.close()
        raise LedgerError(
            f"The ledger {path} was written by an older sweeper ({ledger.schema}), which has no "
            "flow_run_id / job_group_ids columns, so it cannot record a flow run or a plan "
            f"run. Point sweep.ledger at a new file for the {config.sweep.target} sweep."
        )
    return ledger


def _missing_ledger(path: Path) -> ConfigError:
    return ConfigError(f"there is no ledger at {path}; run the sweep first.")


def _signals(relay: SignalRelay | None) -> contextlib.nullcontext[SignalRelay] | SignalRelay:
    """The caller's relay, already entered (left as it is), or one installed for this call."""
    from sweeper.signals import SignalRelay

    return contextlib.nullcontext(relay) if relay is not None else SignalRelay()


def _install_redaction(config: SweepConfig, environ: Mapping[str, str]) -> None:
    from sweeper.auth import secrets
    from sweeper.redact import install_redaction

    install_redaction(secrets(config.api, environ, config_path=config.path))


def plan(
    config: ConfigSource,
    *,
    run_id: str | None = None,
    as_of: str | date | None = None,
    rerun: str = "incomplete",
    only: Sequence[str] = (),
    limit: int | None = None,
    allow_large: bool = False,
    keep_all: bool = False,
    output: str | os.PathLike[str] | None = None,
    shard: ShardSpec | None = None,
) -> SweepPlan:
    """Check and count what ``run`` would do, without a token or the network.

    ``keep_all`` keeps every planned combination in ``digest.items``; ``output`` also writes the
    whole plan as CSV, streamed (bounded memory for large matrices). ``shard`` plans shard K of
    N only. Every ledger of the sweep (the main one and each shard's) is planned from.
    """
    rid = _run_id(run_id)
    given = parse_as_of(as_of)
    part = parse_shard(shard)
    cfg = _config(config)
    history = read_sweep_ledgers(cfg.sweep.ledger, sweep=cfg.sweep.name)
    planner = Planner(
        cfg,
        history=history,
        run_id=rid,
        as_of=_resolve_as_of(history, rid, given),
        rerun=rerun,
        only=only,
        limit=limit,
        requested_as_of=given,
        shard=part,
    )
    digest = PlanDigest(keep_all=keep_all)
    out = Path(output) if output is not None else None
    csv_plan = PlanCsv(out, cfg.matrix.param_names) if out is not None else None

    def take(item: PlannedCombination) -> None:
        digest.add(item)
        if csv_plan is not None:
            csv_plan.add(item)

    try:
        counts = planner.check(allow_large=allow_large, on_item=take)
    except BaseException:
        if csv_plan is not None:
            csv_plan.discard()  # a failed plan leaves no partial CSV behind
        raise
    if csv_plan is not None:
        csv_plan.close()
    return SweepPlan(planner, counts, digest, out, history)


def run(
    config: ConfigSource,
    *,
    run_id: str | None = None,
    as_of: str | date | None = None,
    rerun: str = "incomplete",
    only: Sequence[str] = (),
    limit: int | None = None,
    wait: bool | None = None,
    allow_large: bool = False,
    cancel_on_interrupt: bool = False,
    on_event: Callable[[RunEvent], None] | None = None,
    stop: StopController | None = None,
    relay: SignalRelay | None = None,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    shard: ShardSpec | None = None,
) -> RunSummary:
    """Submit one job group per combination, wait, record it all; safe to call again (resumes).

    ``shard`` (``"K/N"`` or ``(K, N)``) runs only shard K of N, recorded in its own ledger beside
    the sweep's and planned from every ledger of the sweep. With ``run.rate_store`` the rate
    budget is shared with every process using that store and key.

    ``on_event`` sees each progress event. SIGINT/SIGTERM stop the run cleanly while it runs
    (a second one also cancels the running job groups): through ``relay`` if the caller has
    entered one (to cover its own output too), else through one installed for this call.
    ``stop`` lets an embedding program stop the run itself (``stop.interrupt()``); its own
    ``cancel_on_interrupt`` then applies. ``environ`` replaces ``os.environ`` for credentials;
    ``transport`` replaces the HTTP transport (for tests and embedding).
    """
    from sweeper.connection import connect
    from sweeper.runner import run_sweep
    from sweeper.stopping import StopController

    env = os.environ if environ is None else environ
    with _signals(relay) as signals:
        rid = _run_id(run_id)
        given = parse_as_of(as_of)
        part = parse_shard(shard)
        cfg = _config(config)
        ledger_path = cfg.sweep.ledger
        lock_path = ledger_path.with_name(ledger_path.name + ".lock")
        if not (ledger_path.exists() and lock_path.exists()):
            # Opening the ledger creates it and its lock file; a plan that is refused must leave
            # no trace, so check it first. With no ledger there is no history to plan against,
            # and the run checks the plan again under the lock.
            history = read_ledger(ledger_path, sweep=cfg.sweep.name) if ledger_path.exists() else []
            Planner(
                cfg,
                history=history,
                run_id=rid,
                as_of=_resolve_as_of(history, rid, given),
                rerun=rerun,
                only=only,
                limit=limit,
                shard=part,
            ).check(allow_large=allow_large)
        client = connect(cfg, environ=env, transport=transport)
        _install_redaction(cfg, env)
        stopper = (
            stop if stop is not None else StopController(cancel_on_interrupt=cancel_on_interrupt)
        )
        main_ledger = cfg.sweep.ledger
        ledger_path = part.ledger(main_ledger) if part is not None else main_ledger

        async def main() -> RunSummary:
            with (
                signals.attached(stopper.interrupt),
                _open_ledger(cfg, ledger_path, rid) as ledger,
                _rate_store(cfg, env) as store,
            ):
                # The sweep's other ledgers (other shards, other shard counts, the main one),
                # read without locking: their combinations are planned from, never written.
                others = read_sweep_ledgers(main_ledger, sweep=cfg.sweep.name, exclude=ledger_path)
                history = ledger.history()
                async with client:
                    return await run_sweep(
                        cfg,
                        client=client,
                        ledger=ledger,
                        run_id=rid,
                        as_of=_resolve_as_of([*others, *history], rid, given),
                        rerun=rerun,
                        only=only,
                        limit=limit,
                        wait=wait,
                        allow_large=allow_large,
                        stop=stopper,
                        on_event=on_event,
                        requested_as_of=given,
                        shard=part,
                        others=others,
                        rate_store=store,
                    )

        return asyncio.run(main())


@contextlib.contextmanager
def _rate_store(config: SweepConfig, environ: Mapping[str, str]) -> Iterator[SharedBucket | None]:
    """The shared rate store of ``run.rate_store``, opened for the block (None without one)."""
    url = config.run.rate_store
    if url is None:
        yield None
        return
    from sweeper.auth import secrets
    from sweeper.ratestore import default_key, open_rate_store

    key = config.run.rate_key or default_key(
        config.api.base_url, secrets(config.api, environ, config_path=config.path)
    )
    store = open_rate_store(url, key, root=config.root)
    try:
        yield store
    finally:
        store.close()


def _status_target(
    target: ConfigSource, config: ConfigSource | None
) -> tuple[SweepConfig | None, Path]:
    """(config, ledger) for a status target: a sweep file or config, or a ledger path."""
    from sweeper.refreshing import find_config_for

    if isinstance(target, SweepConfig) or Path(target).suffix == ".toml":
        cfg = _config(target)
        return cfg, cfg.sweep.ledger
    ledger = Path(target)
    source = config if config is not None else find_config_for(ledger)
    return (_config(source) if source is not None else None), ledger


def status(
    target: ConfigSource,
    *,
    config: ConfigSource | None = None,
    run_id: str | None = None,
    watch: bool = False,
    refresh: bool = True,
    on_change: Callable[[StatusResult], None] | None = None,
    relay: SignalRelay | None = None,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> StatusResult:
    """Ask the API about the run's job groups still running, record those that ended, and
    return where every combination stands.

    ``target`` is a sweep file (or config) or a ledger; for a ledger, the sweep file is
    ``config`` or the one in ``configs/`` or ``.`` that names it. Without one, or with
    ``refresh=False``, the ledger is shown as it is (``sweep_file`` is then None). ``watch``
    keeps asking until every group has ended or ``run.timeout`` passes; a signal ends it early
    (``interrupted``). ``on_change`` sees the result after each round.
    """
    from sweeper.connection import connect
    from sweeper.refreshing import StatusResult
    from sweeper.refreshing import refresh as refresh_groups
    from sweeper.stopping import StopController, Stopped

    if run_id:
        check_run_id(run_id)
    env = os.environ if environ is None else environ
    with _signals(relay) as signals:
        cfg, ledger_path = _status_target(target, config)
        # Given the sweep (or its main ledger), status covers every shard's ledger too.
        sharded = bool(shard_ledgers(ledger_path))
        if not ledger_path.exists() and not sharded:
            raise _missing_ledger(ledger_path)
        if cfg is None or not refresh:
            sweep = cfg.sweep.name if cfg is not None else None
            history = (
                read_sweep_ledgers(ledger_path, sweep=sweep)
                if sharded
                else read_ledger(ledger_path, sweep=sweep)
            )
            rid = run_id or latest_run_id(history)
            rows = list(current_state(history, run_id=rid).values())
            base_url = cfg.api.base_url if cfg is not None else None
            return StatusResult(run_id=rid, rows=rows, base_url=base_url)
        known = cfg
        client = connect(known, environ=env, transport=transport)
        _install_redaction(known, env)
        stopper = StopController()
        latest: list[StatusResult] = []

        def changed(result: StatusResult) -> None:
            latest[:] = [result]
            if on_change is not None:
                on_change(result)

        def ledgers() -> contextlib.AbstractContextManager[LedgerSet]:
            # A ledger that a running sweep holds is read as is, never written: that run
            # refreshes its own groups, and the result says who holds it.
            return LedgerSet.open(
                ledger_path,
                sweep=known.sweep.name,
                param_names=known.matrix.param_names,
                run_id=run_id,
            )

        async def main() -> StatusResult:
            with signals.attached(stopper.interrupt), ledgers() as ledger:
                async with client:
                    try:
                        result = await refresh_groups(
                            known,
                            client=client,
                            ledger=ledger,
                            run_id=run_id,
                            watch=watch,
                            on_change=changed,
                            sleep=stopper.sleep,  # a signal ends the wait between rounds
                        )
                    except Stopped:
                        result = latest[0]  # a round always reports before the run sleeps
            result.interrupted = stopper.stopped
            result.base_url = known.api.base_url
            return result

        return asyncio.run(main())


def report(
    target: ConfigSource,
    *,
    config: ConfigSource | None = None,
    run_id: str | None = None,
) -> Report:
    """Summarise one run of a ledger (default: the latest) against the run before it.

    ``target`` is a ledger, or a sweep file (or config) whose ledger to read, as for ``status``;
    the sweep file, when known, gives the platform's base URL for links to job pages. Reads
    the ledger without locking it: safe while a run is writing it.
    """
    from sweeper.reporting import build_report

    if run_id:
        check_run_id(run_id)
    cfg, path = _status_target(target, config)
    sharded = bool(shard_ledgers(path))
    if not path.exists() and not sharded:
        raise _missing_ledger(path)
    sweep = cfg.sweep.name if cfg is not None else None
    rows = read_sweep_ledgers(path, sweep=sweep) if sharded else read_ledger(path, sweep=sweep)
    base_url = cfg.api.base_url if cfg is not None else None
    try:
        # The latest run is the one whose first row is newest, as `status` says; not the
        # lexically greatest run id.
        return build_report(rows, run_id=run_id or latest_run_id(rows) or None, base_url=base_url)
    except ValueError as exc:  # a run id the ledger does not have: bad usage
        raise ConfigError(f"{exc}; pick one with --run-id.", path=str(path)) from None

"""The ``sweeper`` command: a thin shell over the library (``sweeper.commands``).

Each command parses its options, calls one library function, renders the result and exits with
``sweeper.errors.exit_code_for`` of it. Errors take the one way out, ``_exit_codes``:

    0  every combination succeeded
    1  the run could not go on (auth, unreachable API, ledger locked, interrupted)
    2  bad usage or configuration; nothing was submitted
    3  the run finished but some combinations failed, are in doubt or still running
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import click

from sweeper import __version__
from sweeper.errors import ConfigError, Outcome, SweeperError, exit_code_for
from sweeper.terminal import printable, printable_lines

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
log = logging.getLogger("sweeper")


ERROR_SCHEMA = "sweeper.error/1"


class _IntRange(click.IntRange):
    """An IntRange whose bounds are enforced but not shown as ``[x>=0]`` in --help (the help
    text says them in words)."""

    def _describe_range(self) -> str:
        return ""


class _FloatRange(click.FloatRange):
    """A FloatRange whose bounds are enforced but not shown in --help."""

    def _describe_range(self) -> str:
        return ""


@contextlib.contextmanager
def _exit_codes(as_json: bool = False) -> Iterator[None]:
    """The CLI's one error handler: a message on stderr, then the error's exit code.

    With ``as_json`` the error is also a JSON document on stdout, so a script that reads
    stdout gets a document whatever happened.
    """
    try:
        yield
    except (SweeperError, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt):
            # Every ledger row written so far is on disk (fsynced), so stopping here is safe.
            message = "Interrupted. The ledger is consistent: run the same command again to resume."
            click.echo(message, err=True)
        else:
            message = printable_lines(str(exc))
            click.echo(f"Error: {message}", err=True)
        code = exit_code_for(exc)
        if as_json:
            error = {"type": type(exc).__name__, "message": str(exc)}
            document = {"schema": ERROR_SCHEMA, "error": error, "exit_code": int(code)}
            click.echo(json.dumps(document, indent=2))
        sys.exit(code)


def _exit(outcome: Outcome) -> NoReturn:
    """Exit with the code a finished command's result calls for."""
    sys.exit(exit_code_for(outcome))


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    if quiet:
        level = logging.ERROR
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )


# Options shared by run and plan.
_run_id = click.option(
    "--run-id",
    metavar="ID",
    help="Names the logical run. Default: today's UTC date, so a "
    "restarted nightly run resumes and tomorrow's run is new.",
)
_as_of = click.option(
    "--as-of",
    metavar="DATE",
    help="Resolve relative dates (today-7d) against this instead of "
    "now. A resumed run reuses the as-of recorded in the ledger.",
)
_rerun = click.option(
    "--rerun",
    type=click.Choice(["incomplete", "failed", "all"]),
    default="incomplete",
    show_default=True,
    help="Which combinations of this run to run again: incomplete ones only, "
    "also failed ones, or all.",
)
_only = click.option(
    "--only",
    "only",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keep only combinations with this parameter value (repeatable). Identities don't change.",
)
_limit = click.option(
    "--limit",
    type=_IntRange(min=0),
    metavar="N",
    help="Take only the first N combinations (a canary run). The full run later skips them.",
)
_allow_large = click.option(
    "--allow-large", is_flag=True, help="Allow more combinations than sweep.max_combinations."
)
_json = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON document on stdout (= --format json)."
)
_format = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people, json for scripts.",
)
_shard = click.option(
    "--shard",
    metavar="K/N",
    help="Only shard K of N (0 <= K < N): the combinations whose id is K modulo N, recorded in "
    "their own ledger beside the sweep's (results/NAME.shard-K-of-N.csv).",
)
_quiet = click.option("-q", "--quiet", is_flag=True, help="Print only errors and the result.")
_verbose = click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv: debug).")


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="sweeper")
def cli() -> None:
    """Run a Dataprep recipe once for every combination of run parameters.

    sweeper reads a TOML sweep file, expands its matrix of run-parameter values, submits one
    job group per combination (paced under the platform's quota, retried safely, never twice),
    waits for the jobs, and records every step in a CSV ledger that the next run resumes from.

    \b
    Examples:
        sweeper plan configs/regions.toml
        sweeper run configs/regions.toml
        sweeper status results/regions.csv
        sweeper report results/regions.csv --format markdown
    """


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@_run_id
@_as_of
@_rerun
@_only
@_limit
@_allow_large
@_shard
@click.option("--dry-run", is_flag=True, help="Plan and validate, submit nothing (same as `plan`).")
@click.option(
    "--wait/--no-wait", default=None, help="Wait for job groups to end (default: run.wait)."
)
@click.option(
    "--cancel-on-interrupt",
    is_flag=True,
    help="On Ctrl-C or SIGTERM, also cancel the job groups still running (default: only on a "
    "second signal).",
)
@_format
@_json
@_quiet
@_verbose
def run(
    config_path: Path,
    run_id: str | None,
    as_of: str | None,
    rerun: str,
    only: tuple[str, ...],
    limit: int | None,
    allow_large: bool,
    shard: str | None,
    dry_run: bool,
    wait: bool | None,
    cancel_on_interrupt: bool,
    fmt: str,
    as_json: bool,
    quiet: bool,
    verbose: int,
) -> None:
    """Submit one job group per combination in CONFIG, wait, and record it all.

    Safe to run again: combinations that succeeded in this run are skipped, anything left in
    doubt by a crash is reconciled with the same execution id, so nothing is created twice.

    \b
    Examples:
        sweeper run configs/regions.toml
        sweeper run configs/regions.toml --only Region=01 --limit 1   # canary
        sweeper run configs/regions.toml --rerun failed
        sweeper run configs/backfill.toml --as-of 2026-11-01 --run-id backfill-oct
        sweeper run configs/regions.toml --shard "$JOB_COMPLETION_INDEX/8"
    """
    as_json = as_json or fmt == "json"
    if dry_run:
        ctx = click.get_current_context()
        ctx.invoke(
            plan,
            config_path=config_path,
            run_id=run_id,
            as_of=as_of,
            rerun=rerun,
            only=only,
            limit=limit,
            allow_large=allow_large,
            shard=shard,
            fmt="json" if as_json else "table",
            output=None,
            show_all=False,
            quiet=quiet,
        )
        return
    _setup_logging(verbose, quiet)
    from sweeper import commands, render
    from sweeper.progress import RunProgress
    from sweeper.signals import SignalRelay

    # The relay spans the summary too: a late second Ctrl-C must not cut it off mid-line.
    with _exit_codes(as_json), SignalRelay(restore=not _whole_process) as relay:
        progress = RunProgress(verbose=verbose, quiet=quiet or as_json)
        try:
            summary = commands.run(
                config_path,
                run_id=run_id,
                as_of=as_of,
                rerun=rerun,
                only=only,
                limit=limit,
                wait=wait,
                allow_large=allow_large,
                shard=shard,
                cancel_on_interrupt=cancel_on_interrupt,
                on_event=progress.event,
                relay=relay,
            )
        finally:
            progress.close()
        if as_json:
            click.echo(json.dumps(render.run_json(summary), indent=2))
        else:
            click.echo(render.summary_text(summary))
        _exit(summary)


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@_run_id
@_as_of
@_rerun
@_only
@_limit
@_allow_large
@_shard
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people, json for scripts (includes every request body).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the whole plan as CSV (one row per combination, with action and reason; "
    "formula-like cells neutralised, written atomically).",
)
@click.option(
    "--all", "show_all", is_flag=True, help="List every combination, not just the first and last."
)
@_json
@_quiet
def plan(
    config_path: Path,
    run_id: str | None,
    as_of: str | None,
    rerun: str,
    only: tuple[str, ...],
    limit: int | None,
    allow_large: bool,
    shard: str | None,
    fmt: str,
    output: Path | None,
    show_all: bool,
    as_json: bool = False,
    quiet: bool = False,
) -> None:
    """Show what `sweeper run CONFIG` would do, and why, without submitting anything.

    Counts per axis and in total, the first and last combinations with their request bodies,
    what will be skipped or rerun and why, and output paths that collide. Needs no token.

    \b
    Examples:
        sweeper plan configs/regions.toml
        sweeper plan configs/backfill.toml --as-of 2026-11-01 --output plan.csv
        sweeper plan configs/regions.toml --format json | jq '.combinations[0].body'
    """
    from sweeper import commands, render

    json_out = fmt == "json" or as_json
    with _exit_codes(json_out):
        planned = commands.plan(
            config_path,
            run_id=run_id,
            as_of=as_of,
            rerun=rerun,
            only=only,
            limit=limit,
            allow_large=allow_large,
            keep_all=show_all or json_out,
            output=output,
            shard=shard,
        )
        parts = (planned.planner, planned.counts, planned.digest)
        if json_out or quiet:  # the table shows them; elsewhere they must still be said
            for notice in planned.counts.notices:
                click.echo(f"note: {printable(notice)}", err=True)
        if json_out:
            click.echo(json.dumps(render.plan_json(*parts), indent=2))
        else:
            click.echo(printable(planned.message) if quiet else render.plan_text(*parts))


@cli.command()
@click.argument("target", metavar="LEDGER|CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_opt",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="CONFIG",
    help="The sweep file, when LEDGER is given and its sweep file isn't found in configs/.",
)
@click.option("--run-id", metavar="ID", help="The run to show. Default: the latest in the ledger.")
@click.option("--watch", is_flag=True, help="Keep refreshing until every job group has ended.")
@click.option("--no-refresh", is_flag=True, help="Show the ledger as it is; ask the API nothing.")
@_format
@_json
@_quiet
@_verbose
def status(
    target: Path,
    config_opt: Path | None,
    run_id: str | None,
    watch: bool,
    no_refresh: bool,
    fmt: str,
    as_json: bool,
    quiet: bool,
    verbose: int,
) -> None:
    """Refresh job groups that were still running, and show each combination's state.

    Appends a `finished` row to the ledger for every job group that has ended since the run
    (for example after `run --no-wait`, a timeout or an interrupt). Exit code as for `run`.

    \b
    Examples:
        sweeper status configs/regions.toml
        sweeper status results/regions.csv --watch
        sweeper status results/regions.csv --no-refresh --json
    """
    _setup_logging(verbose, quiet)
    as_json = as_json or fmt == "json"
    from sweeper import commands, render
    from sweeper.refreshing import StatusResult
    from sweeper.signals import SignalRelay

    def show(res: StatusResult) -> None:
        if watch and not quiet and not as_json:
            counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in res.counts().items())
            click.echo(f"[sweeper] {counts}", err=True)

    with _exit_codes(as_json), SignalRelay(restore=not _whole_process) as relay:
        result = commands.status(
            target,
            config=config_opt,
            run_id=run_id,
            watch=watch,
            refresh=not no_refresh,
            on_change=show,
            relay=relay,
        )
        if result.sweep_file is None and not no_refresh and not quiet:
            click.echo(
                f"No sweep file found for {target}: showing the ledger without asking the API "
                "(pass --config to refresh).",
                err=True,
            )
        if as_json:
            click.echo(json.dumps(render.status_json(result), indent=2))
        else:
            click.echo(render.status_text(result))
        _exit(result)


@cli.command()
@click.argument("target", metavar="LEDGER|CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_opt",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The sweep file, when TARGET is a ledger and it isn't found in configs/ "
    "(its base URL links job groups to their job pages).",
)
@click.option(
    "--run-id",
    metavar="ID",
    help="The run to report on. Default: the latest (the run whose first row is newest).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "csv", "json"]),
    default="table",
    show_default=True,
    help="table for terminals, markdown for tickets, csv for spreadsheets "
    "(formula-safe), json for scripts.",
)
@click.option(
    "--table",
    "csv_table",
    type=click.Choice(["combinations", "failures", "by-parameter", "diff", "summary", "runs"]),
    default=None,
    help="With --format csv: the table to write. Default: combinations, one row per "
    "combination with its parameters as columns.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the report to FILE (atomically) instead of stdout.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Also write a self-contained HTML page: headline, status grids, charts, failures.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def report(
    target: Path,
    config_opt: Path | None,
    run_id: str | None,
    fmt: str,
    csv_table: str | None,
    output: Path | None,
    html_path: Path | None,
    as_json: bool,
) -> None:
    """Summarise a ledger (or a sweep file's): states, durations, failures, success by parameter,
    and the diff against the previous run.

    TARGET is a ledger or the sweep file whose ledger to read. Reads the ledger only; safe
    while a run is writing it.

    \b
    Examples:
        sweeper report results/regions.csv
        sweeper report configs/regions.toml --html results/regions.html
        sweeper report results/regions.csv --format markdown --run-id 2026-11-28
        sweeper report results/regions.csv --format csv --table failures --output failures.csv
        sweeper report configs/regions.toml          # the sweep file's ledger
    """
    from sweeper import commands, reporting
    from sweeper.export import write_atomic

    if as_json:
        fmt = "json"
    with _exit_codes(fmt == "json"):
        if csv_table is not None and fmt != "csv":
            raise ConfigError("--table applies to --format csv only.", key="--table")
        built = commands.report(target, config=config_opt, run_id=run_id)
        if fmt == "csv":
            text = reporting.render_csv(built, csv_table or "combinations")
        else:
            text = reporting.render(built, cast(reporting.Format, fmt))
        if output is not None:
            write_atomic(output, text)
            click.echo(f"wrote {output}", err=True)
        else:
            click.echo(text, nl=not text.endswith("\n"))
        if html_path is not None:
            reporting.write_html(built, html_path)
            click.echo(f"wrote {html_path}", err=True)


@cli.group()
def emulator() -> None:
    """The built-in Dataprep v4 API emulator."""


# The emulator's per-minute quotas per endpoint, per user and per workspace: the platform's,
# which are EmulatorSettings' defaults too (importing those here would load Starlette for --help).
EMULATOR_QUOTAS = (
    ("quota", "runJobGroup", 30, 60),
    ("flow-quota", "runFlow", 20, 40),
    ("plan-quota", "runPlan", 30, 60),
)
_Command = TypeVar("_Command", bound=Callable[..., Any])


def _quota_options(command: _Command) -> _Command:
    """``--quota-user``, ``--quota-workspace`` and the runFlow and runPlan pairs, in that order."""
    for prefix, endpoint, user, workspace in reversed(EMULATOR_QUOTAS):
        for scope, default in (("workspace", workspace), ("user", user)):
            command = click.option(
                f"--{prefix}-{scope}",
                type=_IntRange(min=0),
                default=default,
                show_default=True,
                help=f"{endpoint} requests per {scope} per minute (0: no quota).",
            )(command)
    return command


@emulator.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=0,
    type=_IntRange(0, 65535),
    show_default=True,
    help="Port (0 picks a free one).",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="SQLite file that keeps job groups across restarts (default: in memory).",
)
@click.option(
    "--catalog",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="A catalog TOML of recipes (default: the demo catalog).",
)
@click.option(
    "--faults",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="A faults TOML: latency, 429 bursts, 5xx, dropped connections, failing jobs.",
)
@click.option(
    "--token-env",
    "token_env",
    metavar="VAR",
    default=None,
    help="Require the token held in this environment variable (default: accept any "
    "token). The token itself is never taken on the command line.",
)
@_quota_options
@click.option(
    "--output-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("emulator-output"),
    show_default=True,
    help="Where job outputs are written.",
)
@click.option(
    "--time-scale",
    type=_FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    metavar="FACTOR",
    help="How many times faster than real time the emulator's clock runs: 2 makes jobs take half "
    "as long, 0.5 twice as long (more than 0).",
)
@click.option(
    "--access-token-seconds",
    type=_FloatRange(min=1.0),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How long an access token issued by POST /as/token is accepted, in real seconds "
    "(at least 1; Designer Cloud: 300). Not changed by --time-scale.",
)
@click.option(
    "--oauth-refresh-token-env",
    "oauth_refresh_token_env",
    metavar="VAR",
    default=None,
    help="POST /as/token first accepts only the refresh token held in this environment "
    "variable (default: any refresh token it has not seen, once).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for fault injection.")
def emulator_serve(
    host: str,
    port: int,
    state: Path | None,
    catalog: Path | None,
    faults: Path | None,
    token_env: str | None,
    quota_user: int,
    quota_workspace: int,
    flow_quota_user: int,
    flow_quota_workspace: int,
    plan_quota_user: int,
    plan_quota_workspace: int,
    output_root: Path,
    time_scale: float,
    access_token_seconds: float,
    oauth_refresh_token_env: str | None,
    seed: int,
) -> None:
    """Serve the emulator over HTTP until Ctrl-C or SIGTERM.

    \b
    Examples:
        sweeper emulator serve --port 3005
        sweeper emulator serve --faults faults.toml --state emulator.sqlite --quota-user 300
    """
    import secrets as token_source

    from sweeper.emulator import EmulatorSettings, load_faults
    from sweeper.emulator.serve import exposure_warning, serve

    with _exit_codes():
        token = os.environ.get(token_env) if token_env else None
        if token_env and not token:
            raise ConfigError(f"--token-env names ${token_env}, but it is not set.")
        refresh_token = os.environ.get(oauth_refresh_token_env) if oauth_refresh_token_env else None
        if oauth_refresh_token_env and not refresh_token:
            raise ConfigError(
                f"--oauth-refresh-token-env names ${oauth_refresh_token_env}, but it is not set."
            )
        settings = EmulatorSettings(
            state_path=state,
            catalog_path=catalog,
            faults=load_faults(faults) if faults else None,
            quota_user_per_min=quota_user,
            quota_workspace_per_min=quota_workspace,
            flow_quota_user_per_min=flow_quota_user,
            flow_quota_workspace_per_min=flow_quota_workspace,
            plan_quota_user_per_min=plan_quota_user,
            plan_quota_workspace_per_min=plan_quota_workspace,
            token=token,
            output_root=output_root,
            time_scale=time_scale,
            seed=seed,
            oauth_refresh_token=refresh_token,
            access_token_seconds=access_token_seconds,
        )
        demo_token = token_source.token_urlsafe(16)

        def ready(base_url: str) -> None:
            click.echo(f"sweeper emulator listening on {base_url}")
            if token:
                click.echo(f"token: the value of ${token_env}")
            else:
                click.echo(
                    f"token: any bearer token is accepted, e.g. export DATAPREP_TOKEN={demo_token}"
                )
            click.echo(f'point a sweep at it with: [api] base_url = "{base_url}"', err=True)

        warning = exposure_warning(host, token_required=bool(token))
        if warning:
            click.echo(warning, err=True)
        serve(settings, host=host, port=port, on_ready=ready)


# True when the CLI is the process (console script, python -m sweeper), not a test or a caller
# invoking `cli`: then signal handlers need not be handed back before the interpreter exits.
_whole_process = False


def main() -> None:
    """Console-script entry point."""
    global _whole_process
    _whole_process = True
    cli(prog_name="sweeper")

"""Helpers for the reliability tests: a served emulator in its own process, sweep files, ledgers.

The emulator runs as ``python -m sweeper emulator serve`` in a subprocess, so it keeps its state
while a ``sweeper run`` subprocess is killed and restarted; ``/_emulator/`` is its oracle.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx

URL_LINE = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


def sweeper_argv(*args: str) -> list[str]:
    """The argv of a ``sweeper`` command run with this interpreter."""
    return [sys.executable, "-m", "sweeper", *args]


def _stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@contextmanager
def served_emulator(
    workdir: Path,
    *,
    faults: str | None = None,
    token: str | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    start_timeout: float = 30.0,
) -> Iterator[str]:
    """Serve the emulator from a subprocess on a free loopback port; yield its base URL.

    ``faults`` is the text of a faults TOML file (docs/emulator.md); ``token``, when given, is the
    only bearer token the server accepts; ``env`` adds variables to the server's environment (for
    options that name one, such as ``--oauth-refresh-token-env``). The server is stopped
    (SIGTERM, then SIGKILL) on exit.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    argv = sweeper_argv(
        "emulator",
        "serve",
        "--port",
        "0",
        "--state",
        str(workdir / "emulator.sqlite"),
        "--output-root",
        str(workdir / "emulator-output"),
        *args,
    )
    server_env = {**os.environ, **(env or {})}
    if faults is not None:
        path = workdir / "faults.toml"
        path.write_text(textwrap.dedent(faults), encoding="utf-8")
        argv += ["--faults", str(path)]
    if token is not None:
        server_env["RELIAB_EMULATOR_TOKEN"] = token
        argv += ["--token-env", "RELIAB_EMULATOR_TOKEN"]
    log = (workdir / "emulator.log").open("w+", encoding="utf-8")
    proc = subprocess.Popen(argv, cwd=workdir, env=server_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout
        url = None
        while url is None:
            log.seek(0)
            found = URL_LINE.search(log.read())
            if found:
                url = found.group(1)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"The emulator did not start: {log.read()[-2000:]}")
            time.sleep(0.05)
        yield url
    finally:
        _stop(proc)
        log.close()


def stats(base_url: str) -> dict[str, Any]:
    """The emulator's counters (/_emulator/stats)."""
    data: dict[str, Any] = httpx.get(f"{base_url}/_emulator/stats", timeout=30).json()
    return data


def created_groups(base_url: str) -> list[dict[str, Any]]:
    """Every job group the emulator really created (/_emulator/jobGroups)."""
    groups: list[dict[str, Any]] = httpx.get(f"{base_url}/_emulator/jobGroups", timeout=60).json()[
        "data"
    ]
    return groups


TARGET_IDS = {"dataset": 33, "flow": 12, "plan": 5}  # write_sweep's targets, in the catalog


def write_sweep(
    path: Path,
    *,
    name: str,
    base_url: str,
    matrix: str,
    run: Mapping[str, object] | None = None,
    retry: Mapping[str, object] | None = None,
    token_env: str = "RELIAB_TOKEN",
    output: str = "results/out/{run_id}/{combo_id}.csv",
    extra: str = "",
    target: Literal["dataset", "flow", "plan"] = "dataset",
    api: Mapping[str, object] | None = None,
) -> Path:
    """Write a sweep file pointed at ``base_url``; returns its path.

    ``target``: recipe 33 (``dataset``); flow 12 (recipes 33 and 1; ``output`` is recipe 33's,
    POS-regions); or plan 5 (flows 12 and 13; a plan takes no overrides, so no ``output``, and
    runs one POST at a time: ``run.concurrency`` 1). ``api`` adds keys to the ``[api]`` table
    (``auth``, ``token_url``, ``token_file``, ...).
    """

    def table(name: str, values: Mapping[str, object]) -> str:
        lines = [f"[{name}]"]
        for key, value in values.items():
            if isinstance(value, str):
                text = f'"{value}"'
            elif isinstance(value, bool):
                text = str(value).lower()
            else:
                text = str(value)
            lines.append(f"{key} = {text}")
        return "\n".join(lines)

    run_table = {
        "rate": "6000/min",
        "concurrency": 1 if target == "plan" else 4,
        "poll_interval": "0.1s",
        "poll_max_interval": "0.5s",
        "max_polls_per_second": 200,
        "timeout": "2m",
        "settle": "0s",
        **(run or {}),
    }
    retry_table = {"attempts": 4, "max_wait": "0.05s", "total": "5s", **(retry or {})}
    where = {"dataset": "overrides", "flow": 'overrides."POS-regions"'}.get(target)
    overrides = (
        f"""\
[[{where}.writeSettings]]
path = "{output}"
action = "create"
format = "csv"
header = true
asSingleFile = true
"""
        if where
        else ""
    )
    api_table = {"base_url": base_url, "token_env": token_env, "timeout": "10s", **(api or {})}
    text = f"""\
[sweep]
name = "{name}"
{target} = {TARGET_IDS[target]}

{table("api", api_table)}

[matrix]
{textwrap.dedent(matrix).strip()}

{overrides}
{table("run", run_table)}

{table("retry", retry_table)}
{extra}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def ledger_rows(path: Path) -> list[dict[str, str]]:
    """The ledger's rows as dicts (the raw CSV, as an auditor would read it)."""
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def last_rows(rows: Sequence[Mapping[str, str]]) -> dict[str, Mapping[str, str]]:
    """combo_id -> its last row."""
    out: dict[str, Mapping[str, str]] = {}
    for row in rows:
        out[row["combo_id"]] = row
    return out


# In-process: the emulator app behind httpx.ASGITransport, and the runner called as a library. --


def emulator_app(workdir: Path, **settings: Any) -> Any:
    """An emulator app with a fast job lifecycle, its state in ``workdir``."""
    from sweeper.emulator import EmulatorSettings, create_app

    workdir.mkdir(parents=True, exist_ok=True)
    defaults: dict[str, Any] = {
        "state_path": workdir / "emulator.sqlite",
        "output_root": workdir / "emulator-output",
        "time_scale": 50.0,
    }
    return create_app(EmulatorSettings(**{**defaults, **settings}))


def oracle(app: Any, what: str = "stats") -> Any:
    """GET /_emulator/<what> from an in-process app: ``stats``, or the list of a listing
    (``jobGroups``, ``flowRuns``, ``planRuns``)."""
    import asyncio

    async def get() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
            return (await client.get(f"/_emulator/{what}")).json()

    data = asyncio.run(get())
    return data if what == "stats" else data["data"]


def run_library(
    config_path: Path,
    transport: httpx.AsyncBaseTransport | None,
    *,
    run_id: str = "r1",
    token: str = "test-token",
    **kwargs: Any,
) -> tuple[Any, list[Any]]:
    """``sweeper.run`` on a config over ``transport`` (None: sweeper's own connection set-up),
    the token in the sweep's ``RELIAB_TOKEN``; returns (summary, events)."""
    from datetime import datetime, timezone

    import sweeper
    from sweeper.journal import RunEvent

    events: list[RunEvent] = []
    on_event = kwargs.pop("on_event", None)

    def record(event: RunEvent) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    summary = sweeper.run(
        config_path,
        run_id=run_id,
        as_of=datetime(2026, 11, 29, tzinfo=timezone.utc),
        on_event=record,
        environ={"RELIAB_TOKEN": token},
        transport=transport,
        **kwargs,
    )
    return summary, events

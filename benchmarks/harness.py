"""Shared plumbing for the benchmarks: a served emulator, generated sweeps, oracle figures.

Every server runs as a subprocess (`python -m sweeper emulator serve`) on 127.0.0.1 with a
port the OS picks, so the client under test and the server never share a Python interpreter
(or a GIL); each is stopped (SIGTERM, then SIGKILL) when its `with` block ends.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

TOKEN_ENV = "BENCH_DATAPREP_TOKEN"
TOKEN = "benchmark-token-not-a-secret"  # the emulator accepts any bearer token
DATASET = 33  # a recipe of the emulator's demo catalog
AXIS = "Item"  # the one run parameter of generated sweeps (unknown params are accepted)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


def bench_env() -> dict[str, str]:
    """The environment for child processes: unbuffered output and the benchmark token."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env[TOKEN_ENV] = TOKEN
    return env


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


class Emulator:
    """A handle on one served emulator: its URL and its /_emulator/ oracle."""

    def __init__(self, base_url: str, process: subprocess.Popen[str]) -> None:
        self.base_url = base_url
        self.process = process

    def _get(self, path: str) -> Any:
        response = httpx.get(self.base_url + path, timeout=60.0)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/_emulator/stats")
        return result

    def job_groups(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._get("/_emulator/jobGroups")["data"]
        return data

    def reset(self) -> None:
        httpx.post(self.base_url + "/_emulator/reset", timeout=30.0).raise_for_status()


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


def _ready_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The base URL from the server's "listening on URL" line, read with a deadline."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"The emulator did not start within {timeout:.0f} s.") from None
        if line is None:
            raise RuntimeError("The emulator exited before it was listening; its log follows.")
        if "listening on" in line:
            return line.rsplit(" ", 1)[-1].strip()
        if time.monotonic() > deadline:
            raise RuntimeError(f"The emulator did not start within {timeout:.0f} s.")


@contextmanager
def served_emulator(
    *,
    workdir: Path,
    quota_user: int = 0,
    quota_workspace: int = 0,
    time_scale: float = 0.001,
    faults: str | None = None,
    seed: int = 0,
) -> Iterator[Emulator]:
    """Serve the emulator in a subprocess for the block; always stopped afterwards.

    The default ``time_scale`` of 0.001 makes jobs last ~25 minutes, so nothing runs a pandas
    job behind the submission benchmarks.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "sweeper",
        "emulator",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--quota-user",
        str(quota_user),
        "--quota-workspace",
        str(quota_workspace),
        "--time-scale",
        str(time_scale),
        "--output-root",
        str(workdir / "emulator-output"),
        "--seed",
        str(seed),
    ]
    if faults:
        fault_file = workdir / "faults.toml"
        fault_file.write_text(faults, encoding="utf-8")
        cmd += ["--faults", str(fault_file)]
    with _served(cmd, workdir) as emulator:
        yield emulator


@contextmanager
def served_stub(*, workdir: Path, latency: float) -> Iterator[Emulator]:
    """Serve benchmarks/stub_server.py (a bare asyncio POST server) for the block."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).with_name("stub_server.py")
    cmd = [sys.executable, str(script), "--port", "0", "--latency", str(latency)]
    with _served(cmd, workdir) as stub:
        yield stub


@contextmanager
def _served(cmd: Sequence[str], workdir: Path) -> Iterator[Emulator]:
    """Start a server process that prints "... listening on URL"; stop it afterwards."""
    log_path = workdir / "server.log"
    log = log_path.open("w", encoding="utf-8")
    process = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=bench_env(),
        cwd=workdir,
        start_new_session=True,
    )
    try:
        try:
            url = _ready_line(process, START_TIMEOUT)
        except RuntimeError:
            log.flush()
            sys.stderr.write(log_path.read_text(encoding="utf-8")[-2000:])
            raise
        yield Emulator(url, process)
    finally:
        _stop(process)
        log.close()


def write_sweep(
    path: Path,
    *,
    name: str,
    base_url: str,
    n: int,
    rate: str,
    concurrency: int,
    wait: bool = False,
    extra_run: Mapping[str, object] | None = None,
    extra_retry: Mapping[str, object] | None = None,
) -> Path:
    """A sweep config of ``n`` combinations (``Item = 1..n``) against ``base_url``."""
    run: dict[str, object] = {
        "rate": rate,
        "concurrency": concurrency,
        "wait": wait,
        "timeout": "2h",
        **(extra_run or {}),
    }
    lines = [
        "[sweep]",
        f'name = "{name}"',
        f"dataset = {DATASET}",
        f'ledger = "{(path.parent / (name + ".csv")).as_posix()}"',
        f"max_combinations = {max(n, 10_000)}",
        "",
        "[api]",
        f'base_url = "{base_url}"',
        f'token_env = "{TOKEN_ENV}"',
        "timeout = 30.0",
        "",
        "[matrix]",
        f"{AXIS} = {{ start = 1, end = {n} }}",
        "",
        "[overrides]",
        'execution = "photon"',
        "profiler = false",
        "",
        "[run]",
        *(f"{k} = {json.dumps(v)}" for k, v in run.items()),
    ]
    if extra_retry:
        lines += ["", "[retry]", *(f"{k} = {json.dumps(v)}" for k, v in extra_retry.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class SweeperRun:
    wall_s: float  # the sweeper process, start to exit
    cpu_s: float  # its user + system CPU time (with any children it started)
    exit_code: int
    summary: dict[str, Any]
    stderr_tail: str


# Runs a command and writes its wall time and CPU time (RUSAGE_CHILDREN: that command alone) to a
# JSON file, so several measured processes can run side by side from one benchmark process.
RUSAGE_WRAPPER = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
rc = subprocess.run(sys.argv[2:], check=False).returncode
wall = time.perf_counter() - started
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump({"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime}, out)
sys.exit(rc)
"""


def run_sweeper(
    config: Path, *, timeout: float, run_id: str = "bench", wait: bool = False
) -> SweeperRun:
    """`sweeper run CONFIG [--no-wait] --json` in a subprocess: its summary, wall and CPU time."""
    cmd = [sys.executable, "-m", "sweeper", "run", str(config), "--run-id", run_id]
    cmd += ["--json", "-q"] + ([] if wait else ["--no-wait"])
    usage = config.with_name(f"{config.stem}-{run_id}-rusage.json")
    proc = subprocess.run(
        [sys.executable, "-c", RUSAGE_WRAPPER, str(usage), *cmd],
        capture_output=True,
        text=True,
        env=bench_env(),
        cwd=config.parent,
        timeout=timeout,
        check=False,
    )
    measured = json.loads(usage.read_text(encoding="utf-8"))
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        summary = {}
    return SweeperRun(
        float(measured["wall_s"]),
        float(measured["cpu_s"]),
        proc.returncode,
        summary,
        proc.stderr[-600:],
    )


@dataclass(frozen=True)
class Creations:
    """What the oracle says was created for a sweep of items 1..n."""

    created: int  # job groups created
    distinct: int  # combinations with at least one group
    duplicates: int  # groups beyond the first of their combination
    lost: int  # combinations with no group at all
    span_s: float  # first to last creation (server clock)
    rate_per_s: float  # (distinct - 1) / span: the submission rate


def creations(groups: Sequence[Mapping[str, Any]], n: int) -> Creations:
    """Count creations per combination, keyed by the ``Item`` run parameter."""
    per_item: dict[str, int] = {}
    times: list[float] = []
    for group in groups:
        item = str(group.get("params", {}).get(AXIS, ""))
        per_item[item] = per_item.get(item, 0) + 1
        times.append(float(group["createdAt"]))
    wanted = {str(i) for i in range(1, n + 1)}
    distinct = len(wanted & per_item.keys())
    span = (max(times) - min(times)) if len(times) > 1 else 0.0
    rate = (distinct - 1) / span if span > 0 else 0.0
    return Creations(
        created=len(groups),
        distinct=distinct,
        duplicates=sum(c - 1 for c in per_item.values() if c > 1),
        lost=n - distinct,
        span_s=span,
        rate_per_s=rate,
    )


class HandClock:
    """A clock the arithmetic moves by hand (``clock.now += delay``)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def sweep_in_process(
    config_path: Path, transport: httpx.AsyncBaseTransport, *, run_id: str
) -> int:
    """A waiting sweep through the library, in this process, over ``transport``: its exit code."""
    from datetime import datetime, timezone

    from sweeper.config import load_config
    from sweeper.connection import connect
    from sweeper.ledger import Ledger
    from sweeper.runner import run_sweep

    config = load_config(config_path)
    client = connect(config, environ={TOKEN_ENV: TOKEN}, transport=transport)
    with Ledger.open(
        config.sweep.ledger, sweep=config.sweep.name, param_names=config.matrix.param_names
    ) as ledger:
        async with client:
            summary = await run_sweep(
                config,
                client=client,
                ledger=ledger,
                run_id=run_id,
                as_of=datetime.now(timezone.utc),
                wait=True,
            )
    return summary.exit_code


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary working directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"sweeper-bench-{prefix}-") as tmp:
        yield Path(tmp)

"""SIGINT / SIGTERM on a real ``sweeper run`` process against a served emulator with slow jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from sweeper.emulator import EmulatorSettings, FaultSettings
from tests.emulator_server import running_emulator
from tests.reliab_support import created_groups, last_rows, ledger_rows, sweeper_argv, write_sweep

POST_SECONDS = 3.0
MATRIX = 'Region = ["01", "02", "03", "04"]\nvarReferenceType = ["PROD", "TEST"]'


def _settings(tmp_path: Path) -> EmulatorSettings:
    # Jobs that never end during the test, and POSTs slow enough that one is surely still in
    # flight when a second signal follows the first.
    faults = FaultSettings(slow_factor=10_000.0, latency={"post": (POST_SECONDS, POST_SECONDS)})
    return EmulatorSettings(faults=faults, output_root=tmp_path / "emu", quota_user_per_min=0)


def _wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the run to get going")
        time.sleep(0.05)


def _submitted(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    return sum(1 for r in ledger_rows(ledger) if r["event"] == "submitted")


class _Lines:
    """Collect a pipe's lines on a thread, so the test can wait for one while the process runs."""

    def __init__(self, pipe: IO[str] | None) -> None:
        self._lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[str] | None) -> None:
        for line in pipe or ():
            self._lines.append(line)

    def text(self) -> str:
        return "".join(self._lines)

    def join(self) -> str:
        self._thread.join(timeout=30)
        return self.text()


@pytest.mark.parametrize(
    ("signals", "flags", "canceled"),
    [
        ([signal.SIGINT], [], False),
        ([signal.SIGTERM], [], False),
        ([signal.SIGTERM, signal.SIGTERM], [], True),
        ([signal.SIGINT, signal.SIGINT], [], True),
        ([signal.SIGINT], ["--cancel-on-interrupt"], True),
    ],
    ids=["sigint", "sigterm", "sigterm-twice", "sigint-twice", "cancel-on-interrupt"],
)
def test_signal_stops_submitting_records_in_flight_and_exits_resumable(
    tmp_path: Path, signals: list[signal.Signals], flags: list[str], canceled: bool
) -> None:
    with running_emulator(_settings(tmp_path)) as url:
        config = write_sweep(
            tmp_path / "project" / "s.toml",
            name="s",
            base_url=url,
            matrix=MATRIX,
            run={"concurrency": 2, "rate": "120/min", "poll_interval": "0.2s"},
        )
        ledger = tmp_path / "project" / "results" / "s.csv"
        env = {**os.environ, "RELIAB_TOKEN": "signal-test-token"}
        proc = subprocess.Popen(
            sweeper_argv("run", str(config), "--run-id", "r1", *flags),
            cwd=tmp_path / "project",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stderr = _Lines(proc.stderr)
        try:
            _wait_for(lambda: _submitted(ledger) >= 2)
            proc.send_signal(signals[0])
            for sig in signals[1:]:
                # Only once the run has taken the first signal (and a POST is still in flight),
                # so the test does not depend on how fast a loaded machine delivers it.
                _wait_for(lambda: "Interrupted" in stderr.text())
                proc.send_signal(sig)
            out = proc.stdout.read() if proc.stdout else ""
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = stderr.join()
        groups = {g["id"]: g for g in created_groups(url)}

    assert proc.returncode == 1, out + err
    assert "Interrupted" in err and "resume" in out + err
    last = last_rows(ledger_rows(ledger))
    # Nothing was left half-recorded: every group the server made is in the ledger with its id.
    assert {int(r["job_group_id"]) for r in last.values() if r["job_group_id"]} == set(groups)
    assert all(r["event"] != "intent" for r in last.values()), last
    assert len(last) < 8  # it stopped submitting
    events = {r["event"] for r in last.values()}
    if canceled:
        assert events == {"canceled"}
        assert all(g["status"] == "Canceled" for g in groups.values())
    else:
        assert events == {"submitted"}
        assert all(g["status"] in ("Created", "InProgress") for g in groups.values())

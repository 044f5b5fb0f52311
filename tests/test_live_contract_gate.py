"""The live contract test (tests/live) is inert without its variables, and correct with them.

Both run it in a subprocess, as a user would: once with every SWEEPER_LIVE_* variable removed
(it must skip at collection and say how to enable it), once pointed at an emulator served on
127.0.0.1 (it must pass: the contract's assertions hold against the v4 API sweeper targets).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.harness import served_emulator
from tests.live.settings import REQUIRED, TIMEOUT

ROOT = Path(__file__).resolve().parent.parent


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEPER_LIVE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pytest_live(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/live", "-n", "0", "-ra", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def test_without_the_variables_the_live_test_skips_and_says_how_to_enable_it() -> None:
    result = _pytest_live(_clean_env())
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "1 skipped" in out and "failed" not in out and "error" not in out.lower()
    for name in REQUIRED:
        assert name in out  # the skip reason names every variable to set
    assert "docs/operations.md" in out


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[str]:
    # Jobs of ~1.5 s, no quota: the canary ends within a few polls.
    with served_emulator(workdir=tmp_path, time_scale=1.0) as served:
        yield served.base_url


def test_against_a_loopback_emulator_the_live_test_passes(emulator: str) -> None:
    token = "live-gate-token-not-a-secret"
    env = _clean_env() | {
        "SWEEPER_LIVE_BASE_URL": emulator,
        "SWEEPER_LIVE_TOKEN": token,
        "SWEEPER_LIVE_DATASET": "33",
        "SWEEPER_LIVE_PARAM": "Region=01,02",
        TIMEOUT: "90s",
    }
    result = _pytest_live(env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "1 passed" in out
    assert token not in out  # never printed, even in the summary

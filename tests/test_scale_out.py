"""Scale out: 4 shard processes share one SQLite rate store against one served emulator.

The emulator enforces a scaled quota (600/min per user, 1200 per workspace); the shards ask for
590/min between them. Its oracle must show every combination created once and no 429, and the
merged status and report must show the whole sweep, also after a shard is SIGKILLed mid-way and
started again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.reliab_support import created_groups, served_emulator, stats, sweeper_argv, write_sweep

SHARDS = 4
N = 200


def _config(project: Path, url: str) -> Path:
    return write_sweep(
        project / "scale.toml",
        name="scale",
        base_url=url,
        matrix='Region = ["01", "02", "03", "04"]\nbatch = { start = 1, end = 50 }',
        run={
            "rate": "590/min",
            "rate_store": "sqlite:///results/.rate.sqlite",
            "concurrency": 4,
            "timeout": "2m",
        },
        retry={"attempts": 6, "max_wait": "2s", "total": "30s"},
    )


def _start(project: Path, config: Path, k: int) -> subprocess.Popen[bytes]:
    argv = sweeper_argv("run", str(config), "--run-id", "night", "--shard", f"{k}/{SHARDS}", "-q")
    env = {**os.environ, "RELIAB_TOKEN": "scale-token-0123456789"}
    return subprocess.Popen(
        argv, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _check(project: Path, config: Path, url: str) -> None:
    counters = stats(url)
    per_combo = Counter(tuple(sorted(g["params"].items())) for g in created_groups(url))
    assert counters["served_429"] == 0, counters
    assert len(per_combo) == N, f"{len(per_combo)} combinations created"
    assert all(n == 1 for n in per_combo.values()), "a combination was created twice"
    assert counters["duplicate_creations_by_params"] == 0
    env = {**os.environ, "RELIAB_TOKEN": "scale-token-0123456789"}
    status = subprocess.run(
        sweeper_argv("status", str(config), "--json"),
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"] == {"succeeded": N}
    report = subprocess.run(
        sweeper_argv("report", str(config), "--format", "json"),
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["summary"]["succeeded"] == N


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_four_shards_share_one_quota(tmp_path: Path) -> None:
    with served_emulator(
        tmp_path / "server",
        args=["--quota-user", "600", "--quota-workspace", "1200", "--time-scale", "10"],
    ) as url:
        project = tmp_path / "project"
        config = _config(project, url)
        procs = [_start(project, config, k) for k in range(SHARDS)]
        for proc in procs:
            _, err = proc.communicate(timeout=100)
            assert proc.returncode == 0, err.decode()[-2000:]
        _check(project, config, url)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_shard_killed_mid_way_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    with served_emulator(
        tmp_path / "server",
        args=["--quota-user", "600", "--quota-workspace", "1200", "--time-scale", "10"],
    ) as url:
        project = tmp_path / "project"
        config = _config(project, url)
        procs = [_start(project, config, k) for k in range(SHARDS)]
        victim = procs[1]
        ledger = project / "results" / "scale.shard-1-of-4.csv"
        deadline = time.monotonic() + 30
        # Kill it once it has recorded some submissions, mid-sweep.
        while time.monotonic() < deadline:
            if ledger.exists() and ledger.read_text(encoding="utf-8").count(",submitted,") >= 10:
                break
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        for proc in procs:
            if proc is not victim:
                _, err = proc.communicate(timeout=100)
                assert proc.returncode == 0, err.decode()[-2000:]
        again = _start(project, config, 1)
        _, err = again.communicate(timeout=100)
        assert again.returncode == 0, err.decode()[-2000:]
        _check(project, config, url)

"""Chaos: SIGKILL a 220-combination sweep five times under faults, resume it, count creations.

The emulator runs in its own process (it survives the client's death) with 5% "created, then
500", up to 1 s of POST latency and 429 bursts. ``sweeper run`` runs as a subprocess and is killed
with SIGKILL at seeded random moments, then resumed to the end. The oracle must show every
combination created exactly once, and every combination's last ledger row must be an outcome.

A flow sweep and a plan sweep get the same treatment: killed while their POSTs are in flight,
resumed, and every combination's flow run or plan run must exist exactly once.

Seeded: set SWEEPER_CHAOS_SEED to replay a failure (the seed is in every assertion message).
"""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.reliab_support import (
    created_groups,
    last_rows,
    ledger_rows,
    served_emulator,
    stats,
    sweeper_argv,
    write_sweep,
)

KILLS = 5
BATCHES = 55  # x 4 regions = 220 combinations
LATENCY_MAX = 1.0  # seconds of injected POST latency, at most
FAULTS = """\
seed = {seed}

[latency]
post = [0.0, {latency}]
get = [0.0, 0.05]
list = [0.0, 0.05]

[errors]
after_rate = 0.05
status = 500

[rate_limit]
every = 40
burst = 3
retry_after = 1
"""


def _seed() -> int:
    raw = os.environ.get("SWEEPER_CHAOS_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(1_000_000)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_five_times_then_resume_creates_each_combination_once(tmp_path: Path) -> None:
    seed = _seed()
    print(f"chaos seed: {seed} (replay with SWEEPER_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    where = f"[SWEEPER_CHAOS_SEED={seed}]"
    with served_emulator(
        tmp_path / "server",
        faults=FAULTS.format(seed=seed, latency=LATENCY_MAX),
        args=["--quota-user", "6000", "--quota-workspace", "12000", "--time-scale", "10"],
    ) as url:
        project = tmp_path / "project"
        config = write_sweep(
            project / "chaos.toml",
            name="chaos",
            base_url=url,
            matrix=f"""
            Region = ["01", "02", "03", "04"]
            batch = {{ start = 1, end = {BATCHES}, format = "03d" }}
            """,
            run={
                "rate": "3000/min",
                "concurrency": 8,
                "poll_interval": "0.2s",
                "poll_max_interval": "1s",
                "timeout": "4m",
                # The longest a request sent before a kill can still be in flight on the server.
                "settle": f"{LATENCY_MAX + 0.5}s",
            },
            retry={
                "attempts": 10,
                "max_wait": "1s",
                "total": "30s",
                "budget": 2.0,
                "breaker_threshold": 50,
                "breaker_pause": "1s",
                "breaker_max_opens": 100,
            },
        )
        env = {**os.environ, "RELIAB_TOKEN": "chaos-token"}
        argv = sweeper_argv("run", str(config), "--run-id", "chaos", "-q")
        kills: list[float] = []
        for _ in range(KILLS):
            proc = subprocess.Popen(
                argv, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            moment = rng.uniform(0.8, 4.0)  # the interpreter needs ~0.5 s to start
            kills.append(round(moment, 2))
            try:
                proc.wait(moment)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            time.sleep(rng.uniform(0.0, 0.3))
        final = subprocess.run(
            argv, cwd=project, env=env, capture_output=True, text=True, timeout=200
        )
        detail = f"{where} kills at {kills}\n{final.stdout}\n{final.stderr[-3000:]}"
        counters = stats(url)
        groups = created_groups(url)

    assert final.returncode == 0, detail
    per_combo = Counter(tuple(sorted(g["params"].items())) for g in groups)
    twice = {k: n for k, n in per_combo.items() if n > 1}
    assert not twice, f"{where} combinations created more than once: {twice}"
    assert len(per_combo) == 4 * BATCHES, f"{where} {len(per_combo)} combinations created"
    assert counters["duplicate_creations_by_params"] == 0, where
    assert not counters["duplicates_by_execution_id"], where
    assert counters["faults_served"].get("error_after", 0) > 0, f"{where} no fault was injected"

    rows = ledger_rows(project / "results" / "chaos.csv")
    last = last_rows(rows)
    assert len(last) == 4 * BATCHES, where
    lacking = {c: r["event"] for c, r in last.items() if r["event"] not in ("finished", "rejected")}
    assert not lacking, f"{where} last rows without an outcome: {lacking}"
    # Every group the server created is the one the ledger ended with, under one execution id.
    ledger_ids = {int(r["job_group_id"]) for r in last.values()}
    assert ledger_ids == {g["id"] for g in groups}, where
    xids: dict[str, set[str]] = {}
    for row in rows:
        xids.setdefault(row["combo_id"], set()).add(row["execution_id"])
    assert all(len(x) == 1 for x in xids.values()), f"{where} a combination changed identity"
    print(
        f"chaos seed {seed}: kills at {kills}; {len(groups)} created, "
        f"{sum(per_combo.values()) - len(per_combo)} duplicates, "
        f"{counters['served_304']} 304s, faults {counters['faults_served']}"
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_a_flow_sweep_then_resume_starts_each_flow_run_once(tmp_path: Path) -> None:
    """The same for a flow sweep: every combination gets exactly one flow run, and the ledger
    ends with that run and all of its job groups."""
    seed = _seed()
    rng = random.Random(seed)
    where = f"[SWEEPER_CHAOS_SEED={seed}]"
    with served_emulator(
        tmp_path / "server",
        faults=f"seed = {seed}\n\n[latency]\npost = [0.0, {LATENCY_MAX}]\n",
        args=[
            *("--flow-quota-user", "6000", "--flow-quota-workspace", "12000"),
            *("--time-scale", "10"),
        ],
    ) as url:
        project = tmp_path / "project"
        config = write_sweep(
            project / "flowchaos.toml",
            name="flowchaos",
            base_url=url,
            matrix=f"""
            Region = ["01", "02", "03", "04"]
            batch = {{ start = 1, end = {BATCHES}, format = "03d" }}
            """,
            run={
                "rate": "3000/min",
                "concurrency": 8,
                "poll_interval": "0.2s",
                "poll_max_interval": "1s",
                "timeout": "4m",
                "settle": f"{LATENCY_MAX + 0.5}s",
            },
            retry={"attempts": 10, "max_wait": "1s", "total": "30s", "budget": 2.0},
            target="flow",  # flow 12 runs recipes 33 and 1, each with its own output
        )
        env = {**os.environ, "RELIAB_TOKEN": "chaos-token"}
        argv = sweeper_argv("run", str(config), "--run-id", "chaos", "-q")
        for _ in range(3):
            proc = subprocess.Popen(
                argv, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                proc.wait(rng.uniform(0.8, 3.0))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        final = subprocess.run(
            argv, cwd=project, env=env, capture_output=True, text=True, timeout=200
        )
        detail = f"{where}\n{final.stdout}\n{final.stderr[-3000:]}"
        runs = httpx.get(f"{url}/_emulator/flowRuns", timeout=60).json()["data"]

    assert final.returncode == 0, detail
    per_combo = Counter(
        tuple(
            sorted((d["key"], d["value"]) for d in r["body"]["runParameters"]["overrides"]["data"])
        )
        for r in runs
    )
    assert len(per_combo) == 4 * BATCHES, f"{where} {len(per_combo)} combinations run"
    assert set(per_combo.values()) == {1}, f"{where} a combination ran twice"
    last = last_rows(ledger_rows(project / "results" / "flowchaos.csv"))
    assert {r["event"] for r in last.values()} == {"finished"}, where
    by_run = {r["id"]: r["jobGroupIds"] for r in runs}
    for row in last.values():
        groups = [int(g) for g in row["job_group_ids"].split()]
        assert groups == by_run[int(row["flow_run_id"])], where


PLAN_RUNS = 24
PLAN_LATENCY = (0.1, 0.3)  # seconds of injected POST latency: every kill catches one in flight


def _kill_while_a_post_is_in_flight(
    proc: subprocess.Popen[bytes],
    ledger: Path,
    not_before: float,
    pause: float,
    give_up: float = 30.0,
) -> bool:
    """SIGKILL ``proc`` ``pause`` seconds after the ledger's last row becomes an ``intent``
    (written just before its POST), once ``not_before`` seconds have passed. False if it ended
    first or no POST came within ``give_up`` seconds (the caller kills it then)."""
    started = time.monotonic()
    while proc.poll() is None and time.monotonic() - started < give_up:
        if time.monotonic() - started >= not_before and ledger.is_file():
            text = ledger.read_text(encoding="utf-8")
            rows = list(csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1])))
            if rows and rows[-1]["event"] == "intent":
                time.sleep(pause)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                return True
        time.sleep(0.005)
    return False


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_a_plan_sweep_mid_post_then_resume_starts_each_plan_run_once(
    tmp_path: Path,
) -> None:
    """The same for a plan sweep, each kill landing while a runPlan POST is in flight. A plan
    run carries no run parameters, so a 304 is reconciled by adopting the one plan run no ledger
    row holds; one POST in flight at a time (concurrency 1) keeps that run unambiguous. Every
    combination must get exactly one plan run, under its execution id, and the ledger must end
    with that run's id."""
    seed = _seed()
    rng = random.Random(seed)
    where = f"[SWEEPER_CHAOS_SEED={seed}]"
    low, high = PLAN_LATENCY
    with served_emulator(
        tmp_path / "server",
        faults=f"seed = {seed}\n\n[latency]\npost = [{low}, {high}]\n",
        args=[
            *("--plan-quota-user", "6000", "--plan-quota-workspace", "12000"),
            *("--time-scale", "10"),
        ],
    ) as url:
        project = tmp_path / "project"
        config = write_sweep(
            project / "planchaos.toml",
            name="planchaos",
            base_url=url,
            matrix=f'repeat = {{ start = 1, end = {PLAN_RUNS}, format = "02d" }}',
            run={
                "rate": "3000/min",
                "concurrency": 1,
                "poll_interval": "0.2s",
                "poll_max_interval": "1s",
                "timeout": "2m",
                "settle": f"{high + 0.5}s",
            },
            retry={"attempts": 10, "max_wait": "1s", "total": "30s", "budget": 2.0},
            target="plan",  # plan 5 runs flows 12 and 13; it takes no overrides
        )
        ledger = project / "results" / "planchaos.csv"
        env = {**os.environ, "RELIAB_TOKEN": "chaos-token"}
        argv = sweeper_argv("run", str(config), "--run-id", "chaos", "-q")
        kills = 0
        for _ in range(3):
            proc = subprocess.Popen(
                argv, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                not_before, pause = rng.uniform(0.3, 1.5), rng.uniform(0.0, low)
                kills += _kill_while_a_post_is_in_flight(proc, ledger, not_before, pause)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        final = subprocess.run(
            argv, cwd=project, env=env, capture_output=True, text=True, timeout=90
        )
        detail = f"{where}\n{final.stdout}\n{final.stderr[-3000:]}"
        runs = httpx.get(f"{url}/_emulator/planRuns", timeout=60).json()["data"]
        counters = stats(url)

    assert final.returncode == 0, detail
    assert kills == 3, f"{where} only {kills} kills landed during a POST"
    rows = ledger_rows(ledger)
    last = last_rows(rows)
    assert len(last) == PLAN_RUNS, where
    ended = {(r["event"], r["status"]) for r in last.values()}
    assert ended == {("finished", "Complete")}, f"{where} {ended}"
    xids: dict[str, set[str]] = {}
    for row in rows:
        xids.setdefault(row["combo_id"], set()).add(row["execution_id"])
    assert all(len(x) == 1 for x in xids.values()), f"{where} a combination changed identity"
    # The oracle: one plan run per combination, created under its execution id, nothing else.
    per_xid = Counter(r["executionId"] for r in runs)
    assert per_xid == Counter(x for ids in xids.values() for x in ids), f"{where} {per_xid}"
    # The ledger holds each combination's plan snapshot run id in flow_run_id.
    run_of = {r["executionId"]: r["id"] for r in runs}
    for end in last.values():
        assert int(end["flow_run_id"]) == run_of[end["execution_id"]], where
        assert end["job_group_id"] == "" and end["job_group_ids"] == "", where
    # At least one kill left a POST the server went on to complete: the resume's resend got 304.
    reconciled = sum(r["event"] == "reconciled" and r["http_status"] == "304" for r in rows)
    assert reconciled >= 1 and counters["served_304"] >= reconciled, where
    print(
        f"plan chaos seed {seed}: {kills} kills mid-POST; {len(runs)} plan runs, "
        f"{counters['served_304']} 304s, {reconciled} reconciled rows"
    )

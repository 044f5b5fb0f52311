"""The clients people use today, reduced to their submission loop, for side-by-side figures.

* `naive_async`: one httpx.AsyncClient, every POST fired at once with asyncio.gather, a 429
  retried blindly after a small fixed sleep, no x-execution-id; any other error gives up.
* `airflow_style`: Airflow's GoogleDataprepHook.run_job_group loop: sequential blocking POSTs,
  ``@retry(stop=stop_after_attempt(5), wait=wait_exponential(multiplier=1, max=10))`` around
  every call whatever the error, no x-execution-id, the platform's ``x-retry-after`` header
  ignored (the hook's decorator has no wait that reads it). httpx's sync client stands in for
  ``requests``.
* `bare_async`: a single httpx.AsyncClient at a fixed concurrency (the latency reference).

Each returns a `ClientRun`; what was really created is read from the emulator's oracle.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from harness import AXIS, DATASET, auth_headers
from tenacity import RetryError, retry, stop_after_attempt, wait_exponential


@dataclass(frozen=True)
class ClientRun:
    wall_s: float
    posts: int  # requests sent
    received_429: int
    gave_up: int  # combinations the client itself reported as failed
    cpu_s: float = 0.0  # CPU time of the thread that ran the client


def body_for(item: int) -> dict[str, Any]:
    return {
        "wrangledDataset": {"id": DATASET},
        "overrides": {"execution": "photon", "profiler": False},
        "runParameters": {"overrides": {"data": [{"key": AXIS, "value": str(item)}]}},
    }


async def _naive(base_url: str, n: int, retry_sleep: float, deadline_s: float) -> ClientRun:
    posts = rejected = gave_up = 0
    deadline = time.monotonic() + deadline_s
    async with httpx.AsyncClient(base_url=base_url, headers=auth_headers(), timeout=30.0) as http:

        async def submit(item: int) -> None:
            nonlocal posts, rejected, gave_up
            while True:
                posts += 1
                try:
                    response = await http.post("/v4/jobGroups", json=body_for(item))
                except httpx.HTTPError:
                    gave_up += 1
                    return
                if response.status_code == 429 and time.monotonic() < deadline:
                    rejected += 1
                    await asyncio.sleep(retry_sleep)
                    continue
                if response.status_code == 429:
                    rejected += 1
                if response.status_code != 201:
                    gave_up += 1
                return

        started, cpu = time.perf_counter(), time.thread_time()
        await asyncio.gather(*(submit(i) for i in range(1, n + 1)))
        wall = time.perf_counter() - started
        return ClientRun(wall, posts, rejected, gave_up, time.thread_time() - cpu)


def naive_async(
    base_url: str, n: int, *, retry_sleep: float = 1.0, deadline_s: float = 600.0
) -> ClientRun:
    """Fire all n POSTs at once; retry each 429 after ``retry_sleep`` until ``deadline_s``."""
    return asyncio.run(_naive(base_url, n, retry_sleep, deadline_s))


def airflow_style(base_url: str, n: int) -> ClientRun:
    """Submit items 1..n one after the other, each wrapped in Airflow's tenacity decorator."""
    posts = rejected = gave_up = 0
    with httpx.Client(base_url=base_url, headers=auth_headers(), timeout=30.0) as http:
        # The hook's exact decorator: no retry= predicate, so every exception is retried.
        @retry(stop=stop_after_attempt(5), wait=wait_exponential(multiplier=1, max=10))
        def run_job_group(body: dict[str, Any]) -> dict[str, Any]:
            nonlocal posts, rejected
            posts += 1
            response = http.post("/v4/jobGroups", json=body)
            if response.status_code == 429:
                rejected += 1
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

        started, cpu = time.perf_counter(), time.thread_time()
        for item in range(1, n + 1):
            try:
                run_job_group(body_for(item))
            except RetryError:
                gave_up += 1  # the Airflow task fails; the DAG would move on or stop
        wall = time.perf_counter() - started
        return ClientRun(wall, posts, rejected, gave_up, time.thread_time() - cpu)


async def _bare(base_url: str, n: int, concurrency: int) -> ClientRun:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    failures = 0
    async with httpx.AsyncClient(
        base_url=base_url,
        headers=auth_headers(),
        timeout=httpx.Timeout(30.0, pool=None),
        limits=limits,
    ) as http:

        async def submit(item: int) -> None:
            nonlocal failures
            async with gate:
                response = await http.post(
                    "/v4/jobGroups",
                    json=body_for(item),
                    headers={"x-execution-id": uuid.uuid4().hex},
                )
                if response.status_code != 201:
                    failures += 1

        started, cpu = time.perf_counter(), time.thread_time()
        await asyncio.gather(*(submit(i) for i in range(1, n + 1)))
        wall = time.perf_counter() - started
        return ClientRun(wall, n, 0, failures, time.thread_time() - cpu)


def bare_async(base_url: str, n: int, concurrency: int) -> ClientRun:
    """n POSTs through one httpx.AsyncClient with ``concurrency`` in flight."""
    return asyncio.run(_bare(base_url, n, concurrency))

"""The shared rate store: one budget and one 429 block across processes, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweeper.config import load_config
from sweeper.errors import ConfigError
from sweeper.pacing import Pacer, pacer_rates
from sweeper.ratestore import (
    PostgresStore,
    SQLiteStore,
    check_rate_store,
    default_key,
    open_rate_store,
    sqlite_path,
)
from tests.pg_support import postgres_bin, postgres_server

MINIMAL = '[sweep]\nname = "s"\ndataset = 1\n[matrix]\nRegion = ["01"]\n[run]\n'


def _load(tmp_path: Path, run: str) -> object:
    path = tmp_path / "s.toml"
    path.write_text(MINIMAL + run, encoding="utf-8")
    return load_config(path)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://airflow:hunter22@db/airflow",
        "postgres://u:p@db:5432/x",
        "postgresql://airflow@db/airflow?password=hunter22",
    ],
)
def test_a_password_in_the_config_is_refused_and_never_echoed(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, f'rate_store = "{url}"\n')
    text = str(caught.value)
    assert "PGPASSWORD" in text and ".pgpass" in text and "run.rate_store" in text
    assert "hunter22" not in text and url not in text


@pytest.mark.parametrize("url", ["redis://h/0", "sqlite://", "sqlite:///", "sqlite://host/x"])
def test_unusable_stores_are_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match=r"run\.rate_store"):
        _load(tmp_path, f'rate_store = "{url}"\n')


def test_good_stores_load(tmp_path: Path) -> None:
    config = _load(tmp_path, 'rate_store = "sqlite:///results/.rate.sqlite"\nrate_key = "ws-1"\n')
    assert config.run.rate_store == "sqlite:///results/.rate.sqlite"  # type: ignore[attr-defined]
    assert check_rate_store("postgresql://airflow@db/airflow")
    root = tmp_path / "project"
    assert sqlite_path("sqlite:///results/.rate.sqlite", root) == root / "results/.rate.sqlite"
    assert sqlite_path("sqlite:////var/x.sqlite", root) == Path("/var/x.sqlite")


def test_the_default_key_is_the_host_and_a_hash_of_the_credential() -> None:
    one = default_key("https://api.clouddataprep.com", ("token-a",))
    assert one.startswith("api.clouddataprep.com|") and "token-a" not in one
    assert one == default_key("https://api.clouddataprep.com/v4", ("token-a",))
    assert one != default_key("https://api.clouddataprep.com", ("token-b",))


class Recorder:
    """An injected sleep that records every wait and really sleeps it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(seconds)


def _max_in_window(stamps: list[int], window_ms: int) -> int:
    stamps = sorted(stamps)
    best, start = 0, 0
    for end, ts in enumerate(stamps):
        while ts - stamps[start] > window_ms:
            start += 1
        best = max(best, end - start + 1)
    return best


async def _race(stores: list[object], count: int, per_seconds: float, grants: int) -> Recorder:
    """``grants`` acquisitions spread over one Pacer per store, all at once."""
    sleep = Recorder()
    pacers = [
        Pacer(count, per_seconds, sleep=sleep, burst=3, store=s)  # type: ignore[arg-type]
        for s in stores
    ]

    async def take(pacer: Pacer, n: int) -> None:
        for _ in range(n):
            await pacer.acquire()

    share = grants // len(pacers)
    await asyncio.gather(*(take(p, share) for p in pacers))
    return sleep


@pytest.fixture
def sqlite_stores(tmp_path: Path) -> Iterator[list[SQLiteStore]]:
    stores = [SQLiteStore(tmp_path / "rate.sqlite", "key-1") for _ in range(3)]
    yield stores
    for store in stores:
        store.close()


def test_sqlite_stores_with_one_key_share_one_budget(
    sqlite_stores: list[SQLiteStore], tmp_path: Path
) -> None:
    sleep = asyncio.run(_race(list(sqlite_stores), 10, 1.0, 24))
    assert sleep.waits, "every wait goes through the injected sleep"
    conn = sqlite3.connect(tmp_path / "rate.sqlite")
    stamps = [
        ts for (ts,) in conn.execute(f"SELECT item_timestamp FROM '{sqlite_stores[0].table}'")
    ]
    conn.close()
    assert 0 < len(stamps) <= 24
    window = pacer_rates(10, 1.0, margin=0.01, burst=3)[-1].interval
    assert _max_in_window(stamps, window - 1) <= 10  # never more than the quota in any window


def test_another_key_has_its_own_budget(tmp_path: Path) -> None:
    rates = pacer_rates(2, 60.0, margin=0.0, burst=2)
    one, two = SQLiteStore(tmp_path / "r.sqlite", "a"), SQLiteStore(tmp_path / "r.sqlite", "b")
    try:
        one.bind(rates)
        two.bind(rates)
        assert one.acquire_step("a1") == 0 and one.acquire_step("a2") == 0
        assert one.acquire_step("a3") > 0  # a's budget is spent
        assert two.acquire_step("b1") == 0  # b's is not
    finally:
        one.close()
        two.close()


def test_a_block_is_honoured_by_every_store_and_a_slot_taken_meanwhile_is_given_back(
    tmp_path: Path,
) -> None:
    rates = pacer_rates(100, 1.0, margin=0.0, burst=3)
    one, two = SQLiteStore(tmp_path / "r.sqlite", "k"), SQLiteStore(tmp_path / "r.sqlite", "k")
    try:
        one.bind(rates)
        two.bind(rates)
        one.block(30.0)
        wait = two.acquire_step("x")
        assert 25_000 < wait <= 30_000  # blocked: nothing taken
        one.block(1.0)  # a block is only ever lengthened
        assert two.acquire_step("y") > 25_000
        assert two.bucket is not None and two.bucket.count() == 0

        # A block that begins between the grant and the check gives the slot up.
        three = SQLiteStore(tmp_path / "r.sqlite", "k2")
        three.bind(rates)
        answers = iter([0, 5000])
        three.blocked_ms = lambda: next(answers)  # type: ignore[method-assign]
        assert three.acquire_step("z") == 5000
        assert three.bucket is not None and three.bucket.count() == 0
        three.close()
    finally:
        one.close()
        two.close()


def test_a_stop_ends_a_wait_for_a_shared_slot(tmp_path: Path) -> None:
    """Waits go through the run's interruptible sleep, even for a shared store."""
    store = SQLiteStore(tmp_path / "r.sqlite", "k")
    store.block(60.0)

    class Stopped(Exception):
        pass

    async def stop_now(seconds: float) -> None:
        raise Stopped

    pacer = Pacer(10, 1.0, sleep=stop_now, store=store)
    with pytest.raises(Stopped):
        asyncio.run(pacer.acquire())
    store.close()


def test_open_rate_store_makes_the_sqlite_folder(tmp_path: Path) -> None:
    store = open_rate_store(f"sqlite:///{tmp_path}/deep/er/rate.sqlite", "k", root=tmp_path)
    assert (tmp_path / "deep" / "er" / "rate.sqlite").exists()
    store.close()


needs_postgres = pytest.mark.skipif(
    postgres_bin() is None, reason="no PostgreSQL binaries (apt-get install postgresql)"
)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if postgres_bin() is None:
        pytest.skip("no PostgreSQL binaries (apt-get install postgresql)")
    with postgres_server() as url:
        yield url


@needs_postgres
@pytest.mark.timeout(90)
def test_postgres_stores_share_one_budget_and_one_block(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = [PostgresStore(pg_url, "pg-key")]
    # A client in another time zone must not shift the shared windows.
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")
    stores.append(PostgresStore(pg_url, "pg-key"))
    try:
        sleep = asyncio.run(_race(list(stores), 10, 1.0, 24))
        assert sleep.waits
        with stores[0].pool.connection() as conn:
            rows = conn.execute(
                f"SELECT (extract(epoch FROM item_timestamp) * 1000)::bigint "
                f'FROM "ratelimit___{stores[0].table}"'
            ).fetchall()
        stamps = [int(r[0]) for r in rows]
        window = pacer_rates(10, 1.0, margin=0.01, burst=3)[-1].interval
        assert len(stamps) > 0 and _max_in_window(stamps, window - 1) <= 10
        stores[0].block(30.0)
        assert stores[1].acquire_step("after-block") > 25_000
    finally:
        for store in stores:
            store.close()


@needs_postgres
def test_an_unreachable_postgres_stops_the_run_without_printing_the_url() -> None:
    from sweeper.ratestore import RateStoreError

    url = "postgresql://nobody@127.0.0.1:1/none"
    with pytest.raises(RateStoreError) as caught:
        PostgresStore(url, "k", connect_timeout=2)
    assert url not in str(caught.value) and "127.0.0.1" not in str(caught.value)

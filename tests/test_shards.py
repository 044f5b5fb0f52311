"""Shards: K/N parsing, an exact partition of any matrix, one ledger per shard planned from all."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import sweeper
from sweeper.cli import cli
from sweeper.config import load_config
from sweeper.errors import ConfigError
from sweeper.ledger import read_ledger
from sweeper.matrix_parse import parse_matrix
from sweeper.planner import Planner
from sweeper.shards import Shard, parse_shard, shard_ledgers
from tests.reliab_support import emulator_app, oracle, run_library, write_sweep

ROOT = Path(__file__).resolve().parent.parent
BASE = load_config(ROOT / "configs" / "regions.toml")
AS_OF = datetime(2026, 11, 29, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"), [("0/1", Shard(0, 1)), ("2/8", Shard(2, 8)), (" 7 / 8 ", Shard(7, 8))]
)
def test_parse_shard(text: str, expected: Shard) -> None:
    assert parse_shard(text) == expected
    assert parse_shard((expected.index, expected.count)) == expected


@pytest.mark.parametrize("text", ["x", "1", "1/", "-1/4", "a/b", "1/2/3", "4/4", "5/4", "0/0"])
def test_bad_shards_exit_2_before_anything(text: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        parse_shard(text)
    result = CliRunner().invoke(
        cli, ["run", str(ROOT / "configs" / "regions.toml"), "--shard", text]
    )
    assert result.exit_code == 2, result.output
    assert "--shard" in result.output


def test_shard_ledger_sits_beside_the_main_one() -> None:
    assert Shard(2, 8).ledger(Path("results/regions.csv")) == Path(
        "results/regions.shard-2-of-8.csv"
    )


axis_values = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=5, unique=True)


@settings(max_examples=60, deadline=None)
@given(
    axes=st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,7}", fullmatch=True),
        axis_values,
        min_size=1,
        max_size=3,
    ),
    count=st.integers(min_value=1, max_value=12),
)
def test_n_shards_partition_any_matrix_exactly(axes: dict[str, list[str]], count: int) -> None:
    spec = parse_matrix(axes, source=Path("t.toml"), base_dir=ROOT)
    config = dataclasses.replace(BASE, matrix=spec)

    def ids(shard: Shard | None) -> list[str]:
        planner = Planner(config, history=[], run_id="r", as_of=AS_OF, shard=shard)
        return [c.combo_id for c in planner.combinations()]

    everything = ids(None)
    seen = Counter(cid for k in range(count) for cid in ids(Shard(k, count)))
    assert set(seen) == set(everything)  # every combination in some shard
    assert all(n == 1 for n in seen.values())  # and in exactly one


MATRIX = 'Region = ["01", "02", "03", "04"]\nbatch = { start = 1, end = 6 }'


def _sweep(tmp_path: Path, **run: object) -> Path:
    return write_sweep(
        tmp_path / "project" / "shards.toml",
        name="shards",
        base_url="embedded",
        matrix=MATRIX,
        run=run,
    )


def test_shards_cover_the_sweep_and_a_new_n_resubmits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _sweep(tmp_path)
    monkeypatch.chdir(config.parent)
    app = emulator_app(tmp_path / "server")
    import httpx

    def transport() -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=app)

    done = 0
    for k in range(3):
        summary, _ = run_library(config, transport(), shard=(k, 3))
        assert summary.exit_code == 0
        done += summary.succeeded
        assert Path(summary.ledger).name == f"shards.shard-{k}-of-3.csv"
    assert done == 24
    # Another night's N (same run): every combination is already done, in some other ledger.
    for k in range(2):
        summary, _ = run_library(config, transport(), shard=f"{k}/2")
        assert summary.posts == 0 and summary.exit_code == 0
    summary, _ = run_library(config, transport())  # and unsharded
    assert summary.posts == 0 and summary.succeeded == 24
    assert oracle(app)["created"] == 24
    assert len(shard_ledgers(config.parent / "results" / "shards.csv")) == 5
    # Every shard ledger holds only its own shard's combinations.
    for path in shard_ledgers(config.parent / "results" / "shards.csv"):
        k, n = (int(x) for x in path.name.split(".")[1].removeprefix("shard-").split("-of-"))
        assert all(Shard(k, n).holds(row.combo_id) for row in read_ledger(path))

    status = sweeper.status(config, refresh=False, run_id="r1")
    assert status.counts() == {"succeeded": 24}
    from sweeper.reporting import report_dict

    for target in (config, config.parent / "results" / "shards.csv"):
        summary_of = report_dict(sweeper.report(target, run_id="r1"))["summary"]
        assert summary_of["succeeded"] == 24  # type: ignore[index]


def test_status_refreshes_each_shard_in_its_own_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    config = _sweep(tmp_path)
    monkeypatch.chdir(config.parent)
    app = emulator_app(tmp_path / "server")
    for k in range(2):
        summary, _ = run_library(config, httpx.ASGITransport(app=app), shard=(k, 2), wait=False)
        assert summary.running > 0
    result = sweeper.status(
        config,
        run_id="r1",
        watch=True,
        environ={"RELIAB_TOKEN": "test-token"},
        transport=httpx.ASGITransport(app=app),
    )
    assert result.counts() == {"succeeded": 24}
    for k in range(2):
        rows = read_ledger(config.parent / "results" / f"shards.shard-{k}-of-2.csv")
        finished = {r.combo_id for r in rows if r.event.value == "finished"}
        submitted = {r.combo_id for r in rows if r.event.value == "submitted"}
        assert finished == submitted and submitted  # each shard's groups, in its own ledger

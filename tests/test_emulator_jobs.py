"""Real execution (recipes, outputs), the catalog, and job-level faults, in-process."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from sweeper.emulator import EmulatorSettings, FaultSettings, create_app, load_faults
from sweeper.emulator.catalog import load_catalog
from sweeper.errors import ConfigError

try:
    from tests.emulator_server import FakeClock, asgi_client
except ImportError:  # pragma: no cover
    from emulator_server import FakeClock, asgi_client  # type: ignore[no-redef]


def params(**values: str) -> dict[str, Any]:
    return {"overrides": {"data": [{"key": k, "value": v} for k, v in values.items()]}}


def run_jobs(
    tmp_path: Path, requests: list[dict[str, Any]], **settings: Any
) -> list[dict[str, Any]]:
    """POST each request, let every job finish, and return each group with its jobs and outputs."""
    clock = FakeClock()
    app = create_app(
        EmulatorSettings(
            output_root=tmp_path,
            clock=clock,
            quota_user_per_min=0,
            quota_workspace_per_min=0,
            **settings,
        )
    )

    async def main() -> list[dict[str, Any]]:
        results = []
        async with asgi_client(app) as client:
            for request in requests:
                r = await client.post("/v4/jobGroups", json=request)
                assert r.status_code == 201, r.text
                clock.advance(60)
                gid = r.json()["id"]
                group = (await client.get(f"/v4/jobGroups/{gid}?embed=jobs")).json()
                group["outputs"] = (await client.get(f"/v4/jobGroups/{gid}/outputs")).json()
                results.append(group)
        return results

    return asyncio.run(main())


def ws(path: str, **extra: Any) -> dict[str, Any]:
    return {
        "path": path,
        "action": "create",
        "format": "csv",
        "compression": "none",
        "header": True,
        "asSingleFile": True,
    } | extra


def job33(region: str, ref: str, *settings: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "wrangledDataset": {"id": 33},
        "runParameters": params(Region=region, varReferenceType=ref),
    }
    if settings:
        body["overrides"] = {"writesettings": list(settings)}
    return body


def test_dataset_33_filters_by_reference_type_and_derives_columns(tmp_path: Path) -> None:
    [group] = run_jobs(tmp_path, [job33("05", "TEST", ws("out/r05.csv"))])
    assert group["status"] == "Complete"
    frame = pd.read_csv(tmp_path / "out/r05.csv", dtype={"region": str})
    source = pd.read_csv(Path("sweeper/emulator/data/regions/region-05.csv"))
    assert len(frame) == (source["reference_type"] == "TEST").sum() > 0
    assert set(frame["reference_type"]) == {"TEST"}
    assert set(frame["region"]) == {"05"}
    assert (frame["revenue"] - frame["units"] * frame["unit_price"]).abs().max() < 1e-6
    assert group["outputs"]["files"][0]["path"] == "out/r05.csv"


def test_missing_region_fails_the_wrangle_job_with_a_clear_message(tmp_path: Path) -> None:
    [group] = run_jobs(tmp_path, [job33("13", "PROD", ws("out/r13.csv"))])
    wrangle, writer = group["jobs"]["data"]
    assert group["status"] == "Failed"
    assert wrangle["status"] == "Failed" and "Region='13'" in wrangle["errorMessage"]
    assert writer["status"] == "Canceled"
    assert not (tmp_path / "out").exists() and group["outputs"]["files"] == []


def test_default_outputs_and_the_minimal_request(tmp_path: Path) -> None:
    [seven, one] = run_jobs(
        tmp_path, [{"wrangledDataset": {"id": 7}}, {"wrangledDataset": {"id": 1}}]
    )
    assert seven["status"] == one["status"] == "Complete"
    orders = pd.read_csv(tmp_path / seven["outputs"]["files"][0]["path"])
    assert "unit_amount" in orders.columns and list(orders["order_id"]) == sorted(
        orders["order_id"]
    )
    products = pd.read_csv(tmp_path / one["outputs"]["files"][0]["path"])
    assert list(products.columns) == ["product_id", "product_name", "category", "price"]
    assert (products["product_name"] == products["product_name"].str.upper()).all()
    assert "P-050" not in set(products["product_id"])  # discontinued rows filtered out


def test_json_gzip_and_headerless_csv(tmp_path: Path) -> None:
    [group] = run_jobs(
        tmp_path,
        [
            job33(
                "01",
                "PROD",
                ws("out/a.json.gz", format="json", compression="gzip"),
                ws("out/b.csv", header=False),
                ws("gs://bkt/dir/c.csv.gz", compression="gzip"),
            )
        ],
    )
    assert group["status"] == "Complete"
    with gzip.open(tmp_path / "out/a.json.gz") as handle:
        frame = pd.read_json(handle, lines=True)
    assert set(frame["reference_type"]) == {"PROD"}
    first_line = (tmp_path / "out/b.csv").read_text().splitlines()[0]
    assert not first_line.startswith("order_id")
    with gzip.open(tmp_path / "_buckets/gs/bkt/dir/c.csv.gz", "rt") as handle:
        assert len(pd.read_csv(handle)) == len(frame)
    paths = [f["path"] for f in group["outputs"]["files"]]
    assert paths == ["out/a.json.gz", "out/b.csv", "gs://bkt/dir/c.csv.gz"]


def test_actions_create_never_clobbers_append_and_overwrite(tmp_path: Path) -> None:
    groups = run_jobs(
        tmp_path,
        [
            job33("02", "PROD", ws("out/x.csv")),
            job33("02", "PROD", ws("out/x.csv")),  # create again: a new file beside it
            job33("02", "PROD", ws("out/y.csv")),
            job33("02", "PROD", ws("out/y.csv", action="append")),
            job33("02", "PROD", ws("out/z.csv.gz", compression="gzip", action="append")),
            job33("02", "PROD", ws("out/z.csv.gz", compression="gzip", action="append")),
            job33("03", "DEV", ws("out/y.csv", action="overwrite")),
        ],
    )
    assert {g["status"] for g in groups} == {"Complete"}
    second = groups[1]["outputs"]["files"][0]["path"]
    writer_id = groups[1]["jobs"]["data"][1]["id"]
    assert second == f"out/x_{writer_id}.csv"
    assert (tmp_path / "out/x.csv").read_text() == (tmp_path / second).read_text()
    one = len(pd.read_csv(tmp_path / "out/x.csv"))
    with gzip.open(tmp_path / "out/z.csv.gz", "rt") as handle:
        assert len(pd.read_csv(handle)) == 2 * one  # two gzip members, one header
    overwritten = pd.read_csv(tmp_path / "out/y.csv")
    assert set(overwritten["reference_type"]) == {"DEV"}


def test_appended_csv_has_one_header(tmp_path: Path) -> None:
    run_jobs(
        tmp_path,
        [job33("02", "PROD", ws("o.csv")), job33("02", "PROD", ws("o.csv", action="append"))],
    )
    lines = (tmp_path / "o.csv").read_text().splitlines()
    assert sum(line.startswith("order_id") for line in lines) == 1


def test_folder_of_parts_when_not_single_file(tmp_path: Path) -> None:
    [group] = run_jobs(tmp_path, [job33("04", "PROD", ws("out/parts", asSingleFile=False))])
    parts = sorted((tmp_path / "out/parts").glob("part-*.csv"))
    assert len(parts) == len(group["outputs"]["files"]) >= 1
    total = sum(len(pd.read_csv(p)) for p in parts)
    source = pd.read_csv(Path("sweeper/emulator/data/regions/region-04.csv"))
    assert total == (source["reference_type"] == "PROD").sum()


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        (ws("../escape.csv"), ".."),
        (ws("/etc/passwd-out.csv"), "absolute"),
        (ws("a\x00b.csv"), "NUL"),
        (ws("hdfs://nn/x.csv"), "hdfs"),
        (ws("out/p.pqt", format="pqt"), "pqt"),
        (ws("out/h.hyper", format="hyper"), "hyper"),
        (ws("out/c.csv.bz2", compression="bzip2"), "bzip2"),
        (ws("out/nogz.csv", compression="gzip"), ".gz"),
        (ws("out/act.csv", action="replace"), "replace"),
    ],
)
def test_bad_write_settings_fail_only_that_job(
    tmp_path: Path, setting: dict[str, Any], fragment: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    [group] = run_jobs(root, [job33("01", "PROD", ws("ok.csv"), setting)])
    wrangle, good, bad = group["jobs"]["data"]
    assert group["status"] == "Failed"
    assert (wrangle["status"], good["status"], bad["status"]) == ("Complete", "Complete", "Failed")
    assert fragment in bad["errorMessage"]
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["ok.csv"]
    assert not (tmp_path / "escape.csv").exists()


def test_outputs_are_written_exactly_once_across_two_apps(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    clock = FakeClock()
    apps = [
        create_app(EmulatorSettings(output_root=tmp_path, clock=clock, state_path=state))
        for _ in range(2)
    ]

    async def main() -> None:
        async with asgi_client(apps[0]) as a, asgi_client(apps[1]) as b:
            r = await a.post(
                "/v4/jobGroups", json=job33("01", "PROD", ws("once.csv", action="append"))
            )
            gid = r.json()["id"]
            clock.advance(60)
            answers = await asyncio.gather(
                *(c.get(f"/v4/jobGroups/{gid}/status") for c in (a, b) * 3)
            )
            assert {x.json() for x in answers} == {"Complete"}

    asyncio.run(main())
    lines = (tmp_path / "once.csv").read_text().splitlines()
    assert sum(line.startswith("order_id") for line in lines) == 1
    assert len(lines) == 1 + len(pd.read_csv(tmp_path / "once.csv"))


def test_fail_params_and_fail_rate_fail_the_wrangle_job(tmp_path: Path) -> None:
    faults = FaultSettings(fail_params={"Region": ("02",)})
    groups = run_jobs(tmp_path, [job33("01", "PROD"), job33("02", "PROD")], faults=faults)
    assert [g["status"] for g in groups] == ["Complete", "Failed"]
    assert "Region=02" in groups[1]["jobs"]["data"][0]["errorMessage"]
    everything = run_jobs(tmp_path, [job33("01", "PROD")], faults=FaultSettings(job_fail_rate=1.0))
    assert everything[0]["status"] == "Failed"
    nothing = run_jobs(tmp_path, [job33("01", "PROD")], faults=FaultSettings(job_fail_rate=0.0))
    assert nothing[0]["status"] == "Complete"


def test_slow_params_stretch_only_matching_groups(tmp_path: Path) -> None:
    clock = FakeClock()
    faults = FaultSettings(slow_factor=10.0, slow_params={"Region": ("03",)})
    app = create_app(EmulatorSettings(output_root=tmp_path, clock=clock, faults=faults))

    async def main() -> None:
        async with asgi_client(app) as client:
            fast = (await client.post("/v4/jobGroups", json=job33("01", "PROD"))).json()["id"]
            slow = (await client.post("/v4/jobGroups", json=job33("03", "PROD"))).json()["id"]
            clock.advance(5)
            assert (await client.get(f"/v4/jobGroups/{fast}/status")).json() == "Complete"
            assert (await client.get(f"/v4/jobGroups/{slow}/status")).json() == "InProgress"
            clock.advance(20)
            assert (await client.get(f"/v4/jobGroups/{slow}/status")).json() == "Complete"

    asyncio.run(main())


def test_in_process_drop_raises_what_httpx_raises_for_a_real_drop(tmp_path: Path) -> None:
    app = create_app(
        EmulatorSettings(output_root=tmp_path, faults=FaultSettings(drop_after_rate=1))
    )

    async def main() -> None:
        async with asgi_client(app) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post("/v4/jobGroups", json={"wrangledDataset": {"id": 7}})
            stats = (await client.get("/_emulator/stats")).json()
            assert stats["created"] == 1 and stats["faults_served"] == {"drop_after": 1}

    asyncio.run(main())


def test_faults_are_deterministic_for_a_seed(tmp_path: Path) -> None:
    def statuses(seed: int) -> list[int]:
        app = create_app(
            EmulatorSettings(
                output_root=tmp_path,
                seed=seed,
                quota_user_per_min=0,
                faults=FaultSettings(error_before_rate=0.5),
            )
        )

        async def main() -> list[int]:
            async with asgi_client(app) as client:
                body = {"wrangledDataset": {"id": 7}}
                return [
                    (await client.post("/v4/jobGroups", json=body)).status_code for _ in range(20)
                ]

        return asyncio.run(main())

    first = statuses(1)
    assert first == statuses(1) and {201, 500} == set(first)
    assert statuses(2) != first


def test_load_faults_reads_every_table(tmp_path: Path) -> None:
    path = tmp_path / "faults.toml"
    path.write_text(
        "seed = 7\n[latency]\npost = [0.0, 1.0]\nall = 0.01\n"
        "[rate_limit]\nevery = 5\nburst = 2\nrate = 0.1\nretry_after = 3\n"
        "[errors]\nbefore_rate = 0.1\nafter_rate = 0.2\nstatus = 503\ndrop_after_rate = 0.05\n"
        '[jobs]\nfail_rate = 0.1\nfail_params = {Region = ["02", "05"]}\nslow_factor = 3.0\n'
        'slow_params = {Region = "07"}\n'
    )
    faults = load_faults(path)
    assert faults.seed == 7 and faults.latency == {"post": (0.0, 1.0), "all": (0.01, 0.01)}
    assert (faults.rate_limit_every, faults.rate_limit_burst, faults.rate_limit_retry_after) == (
        5,
        2,
        3,
    )
    assert (faults.error_after_rate, faults.error_status, faults.drop_after_rate) == (
        0.2,
        503,
        0.05,
    )
    assert faults.fail_params == {"Region": ("02", "05")}
    assert faults.slow_params == {"Region": ("07",)} and faults.slow_factor == 3.0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[errors]\nbefore_rate = 2\n", "errors.before_rate"),
        ("[errors]\nbefor_rate = 0.1\n", "errors.befor_rate"),
        ("[latency]\nposts = [0, 1]\n", "latency.posts"),
        ("[latency]\npost = [1, 0]\n", "latency.post"),
        ("[errors]\nstatus = 404\n", "errors.status"),
        ("colour = 1\n", "colour"),
    ],
)
def test_load_faults_names_the_bad_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "faults.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_faults(path)
    assert info.value.key == key and str(path) in str(info.value)


def test_custom_catalog(tmp_path: Path) -> None:
    (tmp_path / "src.csv").write_text("name,qty\na,1\nb,5\nc,9\n")
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        '[datasets.500]\nname = "mine"\nsource = "src.csv"\n[datasets.500.parameters]\nmin = "2"\n'
        '[[datasets.500.recipe]]\nop = "filter"\ncolumn = "qty"\ncmp = "gt"\nvalue = "{min}"\n'
        '[[datasets.500.recipe]]\nop = "derive"\ncolumn = "label"\nfunc = "concat"\n'
        'args = ["name", "-", "qty"]\n'
    )
    assert set(load_catalog(catalog)) == {500}
    out = tmp_path / "out"
    [group] = run_jobs(
        out,
        [
            {
                "wrangledDataset": {"id": 500},
                "runParameters": params(min="4"),
                "overrides": {"writeSettings": [ws("r.json", format="json")]},
            }
        ],
        catalog_path=catalog,
    )
    assert group["status"] == "Complete"
    rows = [json.loads(line) for line in (out / "r.json").read_text().splitlines()]
    assert [r["label"] for r in rows] == ["b-5", "c-9"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[datasets.x]\nsource = 'a.csv'\n",
        "[datasets.1]\nname = 'n'\n",
        "[datasets.1]\nsource = 'a.csv'\n[[datasets.1.recipe]]\nop = 'eval'\n",
    ],
)
def test_bad_catalogs_raise_config_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_catalog(path)

"""Rendering the request body from the overrides template; placeholders and path safety."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeper.errors import MatrixError
from sweeper.matrix import Combination, MatrixSpec, expand_matrix
from sweeper.matrix_parse import parse_matrix
from sweeper.template import RequestTemplate, check_template

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

AS_OF = datetime(2024, 3, 15, tzinfo=timezone.utc)


def spec_of(text: str) -> MatrixSpec:
    return parse_matrix(tomllib.loads(text), source=Path("s.toml"), base_dir=Path("."))


def combos(text: str) -> list[Combination]:
    return list(expand_matrix(spec_of(text), dataset=33, as_of=AS_OF))


def overrides_with_path(path: str) -> dict[str, Any]:
    return {"execution": "photon", "writesettings": [{"path": path, "action": "create"}]}


def render_request(
    dataset: int, overrides: dict[str, Any], combo: Combination, run_id: str
) -> dict[str, Any]:
    return RequestTemplate(dataset, overrides).render(combo, run_id)[0]


def render_path(text: str, combo: Combination, run_id: str) -> str:
    """One write setting's path, rendered (so with path safety)."""
    body = render_request(33, overrides_with_path(text), combo, run_id)
    path: str = body["overrides"]["writesettings"][0]["path"]
    return path


def test_render_request_exact_body() -> None:
    combo = combos('Region = ["01"]\nvarReferenceType = ["PROD"]')[0]
    body = render_request(
        33,
        {
            "execution": "photon",
            "profiler": False,
            "writesettings": ({"path": "out/{run_id}/r-{Region}-{varReferenceType}.csv"},),
        },
        combo,
        "2024-03-15",
    )
    assert body == {
        "wrangledDataset": {"id": 33},
        "overrides": {
            "execution": "photon",
            "profiler": False,
            "writesettings": [{"path": "out/2024-03-15/r-01-PROD.csv"}],
        },
        "runParameters": {
            "overrides": {
                "data": [
                    {"key": "Region", "value": "01"},
                    {"key": "varReferenceType", "value": "PROD"},
                ]
            }
        },
    }


def test_empty_overrides_are_omitted() -> None:
    combo = combos('Region = ["01"]')[0]
    body = render_request(7, {}, combo, "r")
    assert "overrides" not in body
    assert body["runParameters"]["overrides"]["data"] == [{"key": "Region", "value": "01"}]


def test_date_format_spec_and_escapes_and_builtins() -> None:
    combo = combos('day = { start = 2024-01-05, end = 2024-01-05, format = "%Y%m%d" }')[0]
    rendered = render_path("x/{day:%Y/%m/%d}/{day}/{{literal}}/{combo_id}/{run_id}", combo, "R")
    assert rendered == f"x/2024/01/05/20240105/{{literal}}/{combo.combo_id}/R"


def test_a_strftime_pattern_on_a_value_that_is_not_a_date_is_refused() -> None:
    combo = combos('Region = ["01"]')[0]
    with pytest.raises(MatrixError, match=r"\{Region:%Y\} writes a date.*not a date"):
        render_request(33, {"execution": "{Region:%Y}"}, combo, "r")


@pytest.mark.parametrize("text", ["n{n:03d}", "n{n:>200000000}", "{n!r}", "{n!s:%Y}"])
def test_format_specs_and_conversions_are_refused(text: str) -> None:
    with pytest.raises(MatrixError, match="placeholders take no format spec"):
        check_template({"execution": text}, spec_of("n = [7]"))


def test_unknown_placeholder_names_key_path_and_suggests() -> None:
    spec = spec_of('Region = ["01"]')
    with pytest.raises(MatrixError, match=r"overrides\.writesettings\[0\]\.path.*'Region'") as err:
        check_template(overrides_with_path("out/{Regoin}.csv"), spec)
    assert "Known: Region, run_id, combo_id" in str(err.value)
    combo = combos('Region = ["01"]')[0]
    with pytest.raises(MatrixError, match="Regoin"):
        render_request(33, overrides_with_path("out/{Regoin}.csv"), combo, "r")


@pytest.mark.parametrize("text", ["out/{", "out/{}", "out/{Region!r}", "out/{Region:{x}}"])
def test_malformed_templates(text: str) -> None:
    with pytest.raises(MatrixError):
        check_template(overrides_with_path(text), spec_of('Region = ["01"]'))


@pytest.mark.parametrize(
    "value",
    ["a/b", "..", ".", "a\\b", "a\x00b", "%2e%2e", "%2Fetc", "\uff0e\uff0e", "x\ny"],
)
def test_unsafe_values_in_paths_are_refused(value: str) -> None:
    spec = parse_matrix({"Region": [value]}, source=Path("s.toml"), base_dir=Path("."))
    combo = next(expand_matrix(spec, dataset=33, as_of=AS_OF))
    with pytest.raises(MatrixError, match="Region") as err:
        render_request(33, overrides_with_path("out/{Region}.csv"), combo, "r")
    assert combo.combo_id in str(err.value)


def test_empty_value_in_path_is_refused() -> None:
    combo = combos('Region = [""]')[0]
    with pytest.raises(MatrixError, match="empty"):
        render_request(33, overrides_with_path("out/{Region}/x.csv"), combo, "r")


def test_unsafe_run_id_in_path_is_refused() -> None:
    combo = combos('Region = ["01"]')[0]
    with pytest.raises(MatrixError, match="run_id"):
        render_request(33, overrides_with_path("out/{run_id}/x.csv"), combo, "../etc")


def test_slash_values_are_fine_outside_paths() -> None:
    combo = combos('Region = ["a/b"]')[0]
    body = render_request(33, {"execution": "{Region}"}, combo, "r")
    assert body["overrides"]["execution"] == "a/b"


def test_include_combination_missing_a_placeholder_parameter() -> None:
    found = combos('Region = ["01"]\n[[include]]\nRegion = "02"\nextra = "x"\n')
    assert len(found) == 2
    with pytest.raises(MatrixError, match="no value in combination"):
        render_request(33, overrides_with_path("o/{extra}.csv"), found[0], "r")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_rendered_path_stays_in_its_directory(value: str) -> None:
    """AC-S3: any value either renders to exactly one component under out/, or is refused."""
    combo = Combination({"p": value}, {"p": value}, "c" * 16)
    try:
        path = render_path("out/{p}.csv", combo, "r")
    except MatrixError:
        return
    parts = path.split("/")
    assert len(parts) == 2 and parts[0] == "out"
    assert "\\" not in path and "\x00" not in path and parts[1][:-4] != ".."


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"execution": "photon", "profiler": True},
        overrides_with_path("out/{Region}/{day:%Y/%m}.csv"),
        {
            "writeSettings": [
                {"path": "a/{Region}.csv", "action": "create"},
                {"action": "append"},  # no path: not an output path
                "not a table",
            ],
            "writesettings": [{"path": "fixed.csv"}],
            "nested": {"deep": ["{Region}", {"k": "{run_id}"}], "n": 3},
        },
    ],
    ids=["none", "no-paths", "one-path", "both-spellings"],
)
def test_output_paths_are_the_rendered_write_setting_paths(overrides: dict[str, Any]) -> None:
    template = RequestTemplate(33, overrides)
    text = 'Region = ["01", "02"]\nday = { start = 2024-01-30, end = 2024-02-01 }'
    for combo in combos(text):
        body, paths = template.render(combo, "r1")
        rendered = body.get("overrides", {})
        expected = [
            entry["path"]
            for spelling in ("writesettings", "writeSettings")
            for entry in rendered.get(spelling, ())
            if isinstance(entry, dict) and "path" in entry
        ]
        assert paths == tuple(expected)


def test_request_template_still_checks_every_path_value() -> None:
    template = RequestTemplate(33, overrides_with_path("out/{Region}.csv"))
    good, bad = combos('Region = ["ok", "../up"]')
    assert template.render(good, "r")[1] == ("out/ok.csv",)
    with pytest.raises(MatrixError, match="path separator"):
        template.render(bad, "r")


def test_nested_template_renders_every_string_into_fresh_containers() -> None:
    overrides = {
        "execution": "photon-{Region}",
        "profiler": False,
        "writesettings": (
            {"path": "out/{run_id}/{Region}/{day:%Y/%m/%d}/{{x}}-{combo_id}.csv", "n": 1},
            {"action": "append"},
        ),
        "nested": {"deep": ["{day}", {"k": "{run_id}-{Region}"}, 3], "fixed": {"a": "b"}},
    }
    combo = combos('Region = ["01"]\nday = { start = 2024-01-30, end = 2024-01-30 }')[0]
    body = render_request(33, overrides, combo, "r1")
    assert body["overrides"] == {
        "execution": "photon-01",
        "profiler": False,
        "writesettings": [
            {"path": f"out/r1/01/2024/01/30/{{x}}-{combo.combo_id}.csv", "n": 1},
            {"action": "append"},
        ],
        "nested": {"deep": ["2024-01-30", {"k": "r1-01"}, 3], "fixed": {"a": "b"}},
    }
    again = render_request(33, overrides, combo, "r1")
    assert not _containers(again) & _containers(body)  # nothing shared between bodies


def _containers(value: Any) -> set[int]:
    """The ids of every dict and list in a rendered body."""
    if isinstance(value, dict):
        return {id(value)}.union(*(_containers(v) for v in value.values()))
    if isinstance(value, list):
        return {id(value)}.union(*(_containers(v) for v in value))
    return set()

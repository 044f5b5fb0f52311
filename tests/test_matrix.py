"""The matrix grammar: axes, ranges, files, zip, GitHub include/exclude, size bound, laziness."""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
import tracemalloc
import types
from collections.abc import Mapping
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeper.errors import ConfigError, MatrixError
from sweeper.identity import combo_id
from sweeper.matrix import (
    MatrixSpec,
    combinations_bound,
    expand_matrix,
    parse_only,
    select,
)
from sweeper.matrix_parse import parse_matrix

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

AS_OF = datetime(2024, 3, 15, 6, 30, tzinfo=timezone.utc)
SOURCE = Path("sweep.toml")


def spec_of(text: str, base_dir: Path = Path(".")) -> MatrixSpec:
    return parse_matrix(tomllib.loads(text), source=SOURCE, base_dir=base_dir)


def expand(spec: MatrixSpec, as_of: datetime = AS_OF) -> list[dict[str, str]]:
    return [dict(c.params) for c in expand_matrix(spec, dataset=33, as_of=as_of)]


def both(spec: MatrixSpec, as_of: datetime = AS_OF) -> list[dict[str, str]]:
    """Expand and check the size bound holds."""
    combos = expand(spec, as_of)
    assert len(combos) <= combinations_bound(spec, as_of=as_of)
    return combos


# ---------------------------------------------------------------- GitHub's documented examples


def test_github_include_example_gives_the_documented_six() -> None:
    spec = spec_of(
        """
        fruit = ["apple", "pear"]
        animal = ["cat", "dog"]
        [[include]]
        color = "green"
        [[include]]
        color = "pink"
        animal = "cat"
        [[include]]
        fruit = "apple"
        shape = "circle"
        [[include]]
        fruit = "banana"
        [[include]]
        fruit = "banana"
        animal = "cat"
        """
    )
    assert both(spec) == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]
    assert spec.param_names == ("fruit", "animal", "color", "shape")


def test_github_exclude_example() -> None:
    spec = spec_of(
        """
        os = ["macos-latest", "windows-latest"]
        version = [12, 14, 16]
        environment = ["staging", "production"]
        [[exclude]]
        os = "macos-latest"
        version = 12
        environment = "production"
        [[exclude]]
        os = "windows-latest"
        version = 16
        """
    )
    combos = both(spec)
    assert len(combos) == 12 - 1 - 2
    assert {"os": "macos-latest", "version": "12", "environment": "production"} not in combos
    assert not [c for c in combos if c["os"] == "windows-latest" and c["version"] == "16"]


def test_github_adding_configurations_example() -> None:
    spec = spec_of(
        """
        os = ["windows-latest", "ubuntu-latest"]
        node = [14, 16]
        [[include]]
        os = "windows-latest"
        node = 16
        npm = 6
        """
    )
    combos = both(spec)
    assert len(combos) == 4
    assert {"os": "windows-latest", "node": "16", "npm": "6"} in combos
    assert sum("npm" in c for c in combos) == 1


def test_github_expanding_example_adds_new_combination() -> None:
    spec = spec_of(
        """
        os = ["windows-latest", "ubuntu-latest", "macos-latest"]
        version = [10, 12, 14]
        [[include]]
        os = "windows-latest"
        version = 17
        """
    )
    combos = both(spec)
    assert len(combos) == 10
    assert combos[-1] == {"os": "windows-latest", "version": "17"}


def test_regions_contract_six_combinations() -> None:
    spec = spec_of(
        """
        Region = ["01", "02", "03"]
        varReferenceType = ["PROD", "TEST"]
        [[exclude]]
        Region = "03"
        varReferenceType = "TEST"
        [[include]]
        Region = "04"
        varReferenceType = "PROD"
        """
    )
    combos = both(spec)
    assert len(combos) == 6
    assert {"Region": "03", "varReferenceType": "TEST"} not in combos
    assert combos[-1] == {"Region": "04", "varReferenceType": "PROD"}


def test_include_is_applied_after_exclude() -> None:
    """An include matching only excluded combinations becomes a new combination."""
    spec = spec_of(
        """
        a = ["x", "y"]
        [[exclude]]
        a = "y"
        [[include]]
        a = "y"
        extra = 1
        """
    )
    assert both(spec) == [{"a": "x"}, {"a": "y", "extra": "1"}]


# ---------------------------------------------------------------- values and kinds


def test_value_canonical_strings_and_typed_values() -> None:
    spec = spec_of(
        """
        s = ["a"]
        i = [7]
        f = [0.1, 2.0]
        b = [true]
        d = [2024-02-29]
        """
    )
    combos = list(expand_matrix(spec, dataset=1, as_of=AS_OF))
    assert [dict(c.params) for c in combos] == [
        {"s": "a", "i": "7", "f": "0.1", "b": "true", "d": "2024-02-29"},
        {"s": "a", "i": "7", "f": "2.0", "b": "true", "d": "2024-02-29"},
    ]
    assert combos[0].values["d"] == date(2024, 2, 29)
    assert combos[0].combo_id == combo_id(1, combos[0].params)


def test_int_range_inclusive_with_step_and_format() -> None:
    spec = spec_of('Region = { start = 1, end = 12, step = 5, format = "02d" }')
    assert [c["Region"] for c in both(spec)] == ["01", "06", "11"]


def test_date_range_inclusive_end_and_format() -> None:
    spec = spec_of('day = { start = 2024-01-30, end = 2024-02-02, format = "%Y%m%d" }')
    combos = list(expand_matrix(spec, dataset=1, as_of=AS_OF))
    assert [c.params["day"] for c in combos] == ["20240130", "20240131", "20240201", "20240202"]
    assert combos[0].values["day"] == date(2024, 1, 30)


def test_month_steps_clamp_to_month_end() -> None:
    spec = spec_of('m = { start = 2024-01-31, end = 2024-05-31, step = "1mo" }')
    assert [c["m"] for c in both(spec)] == [
        "2024-01-31",
        "2024-02-29",
        "2024-03-31",
        "2024-04-30",
        "2024-05-31",
    ]


def test_week_steps() -> None:
    spec = spec_of('w = { start = 2024-01-01, end = 2024-01-29, step = "2w" }')
    assert [c["w"] for c in both(spec)] == ["2024-01-01", "2024-01-15", "2024-01-29"]


def test_relative_anchors_resolve_against_as_of() -> None:
    spec = spec_of('day = { start = "today-1mo", end = "today-1d", step = "1w" }')
    assert [c["day"] for c in both(spec)] == [
        "2024-02-15",
        "2024-02-22",
        "2024-02-29",
        "2024-03-07",
        "2024-03-14",
    ]
    later = expand(spec, datetime(2024, 3, 22, tzinfo=timezone.utc))
    assert later[0]["day"] == "2024-02-22"


def test_datetime_range_with_hour_steps() -> None:
    spec = spec_of('t = { start = "now-2h", end = "now", step = "1h", format = "%H:%M" }')
    assert [c["t"] for c in both(spec)] == ["04:30", "05:30", "06:30"]


def test_relative_range_that_resolves_empty_is_an_error() -> None:
    spec = spec_of('day = { start = 2030-01-01, end = "today" }')
    with pytest.raises(MatrixError, match=r"matrix\.day.*empty"):
        combinations_bound(spec, as_of=AS_OF)
    with pytest.raises(MatrixError, match="empty"):
        expand(spec)


def test_csv_column_axis(tmp_path: Path) -> None:
    (tmp_path / "regions.csv").write_text("region,name\n01,North\n02,South\n01,North again\n")
    spec = spec_of('Region = { csv = "regions.csv", column = "region" }', tmp_path)
    assert [c["Region"] for c in both(spec)] == ["01", "02"]


def test_csv_column_unknown_suggests(tmp_path: Path) -> None:
    (tmp_path / "regions.csv").write_text("region,name\n01,North\n")
    with pytest.raises(MatrixError, match="Did you mean 'region'"):
        spec_of('Region = { csv = "regions.csv", column = "regoin" }', tmp_path)


def test_glob_axis_captures_star(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    for name in ("orders-2024-01-02.csv", "orders-2024-01-01.csv", "other.csv"):
        (landing / name).write_text("x\n")
    spec = spec_of('day = { glob = "landing/orders-*.csv" }', tmp_path)
    assert [c["day"] for c in both(spec)] == ["2024-01-01", "2024-01-02"]


def test_glob_matching_nothing_is_an_empty_axis(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match=r"matrix\.day\.glob.*empty"):
        spec_of('day = { glob = "landing/orders-*.csv" }', tmp_path)


def test_rows_file_each_row_one_combination_times_other_axes(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("Region,varReferenceType\n01,PROD\n02,TEST\n")
    spec = spec_of('rows = "p.csv"\nmode = ["a", "b"]', tmp_path)
    assert both(spec) == [
        {"Region": "01", "varReferenceType": "PROD", "mode": "a"},
        {"Region": "01", "varReferenceType": "PROD", "mode": "b"},
        {"Region": "02", "varReferenceType": "TEST", "mode": "a"},
        {"Region": "02", "varReferenceType": "TEST", "mode": "b"},
    ]


def test_rows_file_ragged_row_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(MatrixError, match="Row 3"):
        spec_of('rows = "p.csv"', tmp_path)


def test_zip_groups_vary_together() -> None:
    spec = spec_of(
        """
        mode = ["x", "y"]
        [[zip]]
        Region = ["01", "02", "03"]
        day = { start = 2024-01-01, end = 2024-01-03 }
        """
    )
    combos = both(spec)
    assert len(combos) == 6
    assert {"mode": "x", "Region": "02", "day": "2024-01-02"} in combos
    assert {"mode": "x", "Region": "02", "day": "2024-01-03"} not in combos


def test_zip_unequal_lengths_names_both() -> None:
    with pytest.raises(MatrixError, match=r"'Region' has 3 values but 'day' has 2"):
        spec_of(
            """
            [[zip]]
            Region = ["01", "02", "03"]
            day = ["a", "b"]
            """
        )


def test_empty_axis_is_an_error_naming_it() -> None:
    with pytest.raises(MatrixError, match=r"matrix\.Region.*'Region' is empty"):
        spec_of("Region = []")


def test_empty_matrix_is_zero_combinations() -> None:
    spec = spec_of("")
    assert combinations_bound(spec, as_of=AS_OF) == 0
    assert expand(spec) == []


def test_exclude_with_unknown_parameter_is_refused() -> None:
    with pytest.raises(MatrixError, match=r"matrix\.exclude\[0\]\.Regoin.*Did you mean 'Region'"):
        spec_of('Region = ["01"]\n[[exclude]]\nRegoin = "01"')


def test_include_may_add_new_keys() -> None:
    spec = spec_of('Region = ["01"]\n[[include]]\nshards = 8')
    assert both(spec) == [{"Region": "01", "shards": "8"}]


def test_duplicate_values_and_names_are_errors() -> None:
    with pytest.raises(MatrixError, match="appears twice"):
        spec_of('a = ["x", "x"]')
    with pytest.raises(MatrixError, match="defined twice"):
        spec_of('a = ["x"]\n[[zip]]\na = ["y"]')


def test_unknown_axis_table_key_suggests() -> None:
    with pytest.raises(MatrixError, match=r"matrix\.day\.stpe.*Did you mean 'step'"):
        spec_of('day = { start = 2024-01-01, end = 2024-01-02, stpe = "1d" }')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('d = { start = 2024-01-01, end = 2024-01-02, step = "1 fortnight" }', "step"),
        ('d = { start = 2024-01-01, end = 2024-01-02, step = "1h" }', "sub-day"),
        ('d = { start = "yesterday", end = 2024-01-02 }', "relative anchor"),
        ("d = { start = 5, end = 1 }", "empty"),
        ("d = { start = 1 }", "explicit 'end'"),
        ("d = { start = 2024-01-05, end = 2024-01-01 }", "empty"),
        ("d = 5", "array of values or a table"),
        ("d = [[1]]", "must be strings, numbers"),
    ],
)
def test_bad_axis_definitions(text: str, message: str) -> None:
    with pytest.raises(MatrixError, match=message):
        spec_of(text)


# ---------------------------------------------------------------- selection


def test_parse_only_and_select() -> None:
    spec = spec_of('Region = ["01", "02", "03"]\nvarReferenceType = ["PROD", "TEST"]')
    only = parse_only(["Region=01", "Region=03", "varReferenceType=TEST"], spec)
    picked = list(select(expand_matrix(spec, dataset=33, as_of=AS_OF), only, None))
    assert [dict(c.params) for c in picked] == [
        {"Region": "01", "varReferenceType": "TEST"},
        {"Region": "03", "varReferenceType": "TEST"},
    ]
    full = {c.combo_id for c in expand_matrix(spec, dataset=33, as_of=AS_OF)}
    assert {c.combo_id for c in picked} <= full
    assert len(list(select(expand_matrix(spec, dataset=33, as_of=AS_OF), {}, 2))) == 2


def test_parse_only_unknown_key_suggests() -> None:
    spec = spec_of('Region = ["01"]')
    with pytest.raises(ConfigError, match="Did you mean 'Region'"):
        parse_only(["region=01"], spec)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_only(["Region"], spec)


# ---------------------------------------------------------------- laziness


def test_100k_combinations_expand_lazily_in_small_memory() -> None:
    spec = spec_of(
        """
        a = { start = 1, end = 100 }
        b = { start = 1, end = 100 }
        c = { start = 1, end = 10 }
        [[exclude]]
        a = 1
        """
    )
    assert combinations_bound(spec, as_of=AS_OF) == 100_000  # before the exclude
    combos = expand_matrix(spec, dataset=1, as_of=AS_OF)
    assert isinstance(combos, types.GeneratorType)
    tracemalloc.start()
    try:
        # An implementation that built the product up front would allocate it on first next().
        head = sum(1 for _ in itertools.islice(combos, 5_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # all 99k combinations at once would need well over 50 MB
    assert head + sum(1 for _ in combos) == 99_000


# ---------------------------------------------------------------- properties

NAMES = ["A", "B", "C", "D"]
VALUES = ["1", "2", "3"]


def reference(
    axes: Mapping[str, list[str]],
    exclude: list[dict[str, str]],
    include: list[dict[str, str]],
) -> list[dict[str, str]]:
    """GitHub Actions' rules, written out naively over a materialised product."""
    names = list(axes)
    combos = (
        [dict(zip(names, vs, strict=True)) for vs in itertools.product(*axes.values())]
        if names
        else []
    )
    combos = [c for c in combos if not any(all(c[k] == v for k, v in e.items()) for e in exclude)]
    originals = [dict(c) for c in combos]
    extra: list[dict[str, str]] = []
    for entry in include:
        hit = False
        for combo, original in zip(combos, originals, strict=True):
            if all(original[k] == v for k, v in entry.items() if k in original):
                hit = True
                combo.update(entry)
        if not hit:
            extra.append(dict(entry))
    return combos + extra


@st.composite
def matrices(
    draw: st.DrawFn,
) -> tuple[dict[str, list[str]], list[dict[str, str]], list[dict[str, str]]]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3))
    axes = {n: draw(st.lists(st.sampled_from(VALUES), unique=True, min_size=1)) for n in names}
    entry_keys = (
        st.lists(st.sampled_from(names), unique=True, min_size=1) if names else st.nothing()
    )
    exclude = draw(
        st.lists(
            entry_keys.flatmap(
                lambda ks: st.fixed_dictionaries({k: st.sampled_from(VALUES) for k in ks})
            ),
            max_size=4,
        )
        if names
        else st.just([])
    )
    include_keys = st.lists(st.sampled_from([*NAMES, "X", "Y"]), unique=True, min_size=1)
    include = draw(
        st.lists(
            include_keys.flatmap(
                lambda ks: st.fixed_dictionaries({k: st.sampled_from(VALUES) for k in ks})
            ),
            max_size=4,
            unique_by=lambda d: tuple(sorted(d.items())),
        )
    )
    # Includes may only name axes that exist or new keys, like any config.
    include = [{k: v for k, v in e.items() if k in names or k in ("X", "Y")} for e in include]
    include = [e for e in include if e]
    unique: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for e in include:
        unique.setdefault(tuple(sorted(e.items())), e)
    return axes, exclude, list(unique.values())


def to_table(axes: Mapping[str, list[str]], exclude: Any, include: Any) -> dict[str, Any]:
    table: dict[str, Any] = dict(axes)
    if exclude:
        table["exclude"] = exclude
    if include:
        table["include"] = include
    return table


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(matrices())
def test_include_exclude_agree_with_reference_and_the_bound(
    m: tuple[dict[str, list[str]], list[dict[str, str]], list[dict[str, str]]],
) -> None:
    axes, exclude, include = m
    spec = parse_matrix(to_table(axes, exclude, include), source=SOURCE, base_dir=Path("."))
    got = expand(spec)
    assert got == reference(axes, exclude, include)
    product = math.prod(len(v) for v in axes.values()) if axes else 0
    assert combinations_bound(spec, as_of=AS_OF) == product + len(include) >= len(got)


@settings(max_examples=60, deadline=None)
@given(matrices(), st.randoms(use_true_random=False), st.sampled_from(["9", "8"]))
def test_combo_ids_survive_reordering_and_appending(
    m: tuple[dict[str, list[str]], list[dict[str, str]], list[dict[str, str]]],
    rnd: Any,
    new_value: str,
) -> None:
    axes, _, _ = m
    spec = parse_matrix(dict(axes), source=SOURCE, base_dir=Path("."))
    ids = {c.combo_id for c in expand_matrix(spec, dataset=5, as_of=AS_OF)}
    names = list(axes)
    rnd.shuffle(names)
    reordered = parse_matrix({n: axes[n] for n in names}, source=SOURCE, base_dir=Path("."))
    assert {c.combo_id for c in expand_matrix(reordered, dataset=5, as_of=AS_OF)} == ids
    if names:
        grown = {n: [*axes[n], new_value] for n in names}
        bigger = parse_matrix(grown, source=SOURCE, base_dir=Path("."))
        assert ids < {c.combo_id for c in expand_matrix(bigger, dataset=5, as_of=AS_OF)}


@settings(max_examples=60, deadline=None)
@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
    st.integers(0, 40),
    st.sampled_from(["1d", "2d", "1w", "1mo", "2mo"]),
)
def test_date_ranges_are_deterministic_and_counted(as_of: datetime, back: int, step: str) -> None:
    spec = parse_matrix(
        {"day": {"start": f"today-{back}d", "end": "today", "step": step}, "r": ["a", "b"]},
        source=SOURCE,
        base_dir=Path("."),
    )
    first = [c.combo_id for c in expand_matrix(spec, dataset=3, as_of=as_of)]
    second = [c.combo_id for c in expand_matrix(spec, dataset=3, as_of=as_of)]
    assert first == second
    assert combinations_bound(spec, as_of=as_of) == len(first)  # no excludes or includes
    days = [c.values["day"] for c in expand_matrix(spec, dataset=3, as_of=as_of)]
    assert all(isinstance(d, date) and d <= as_of.date() for d in days)


@st.composite
def mixed_tables(draw: st.DrawFn) -> dict[str, Any]:
    """Ranges, zip groups and lists together, with excludes and includes over them."""
    table: dict[str, Any] = {
        "n": {"start": 1, "end": draw(st.integers(1, 4)), "format": "02d"},
        "d": {"start": "today-3d", "end": "today", "step": draw(st.sampled_from(["1d", "2d"]))},
    }
    length = draw(st.integers(1, 3))
    table["zip"] = [{"z1": [f"a{i}" for i in range(length)], "z2": list(range(length))}]
    pools: dict[str, list[Any]] = {
        "n": ["01", "02", "05"],
        "z1": ["a0", "a1"],
        "z2": [0, 1, 2],
        "d": ["2024-03-14"],
    }
    entry = st.dictionaries(
        st.sampled_from(list(pools)), st.sampled_from(["01"]), min_size=1
    ).flatmap(lambda d: st.fixed_dictionaries({k: st.sampled_from(pools[k]) for k in d}))
    table["exclude"] = draw(st.lists(entry, max_size=4))
    includes = draw(
        st.lists(
            entry.map(lambda e: {**e, "extra": "x"}),
            max_size=3,
            unique_by=lambda e: tuple(sorted((k, str(v)) for k, v in e.items())),
        )
    )
    if includes:
        table["include"] = includes
    return table


@settings(max_examples=80, deadline=None)
@given(mixed_tables())
def test_bound_holds_for_ranges_and_zips(table: dict[str, Any]) -> None:
    spec = parse_matrix(table, source=SOURCE, base_dir=Path("."))
    combos = expand(spec)
    product = len(expand(dataclasses.replace(spec, exclude=(), include=())))
    assert combinations_bound(spec, as_of=AS_OF) == product + len(spec.include) >= len(combos)
    assert len({tuple(sorted(c.items())) for c in combos}) == len(combos)

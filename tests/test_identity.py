"""Identities are content-derived and stable: ids in existing ledgers must never change."""

from __future__ import annotations

import hashlib

import pytest

from sweeper.identity import combo_id, config_hash, execution_id


def test_combo_id_ignores_parameter_order_and_depends_on_the_dataset() -> None:
    a = combo_id(33, {"Region": "01", "varReferenceType": "PROD"})
    assert a == combo_id(33, {"varReferenceType": "PROD", "Region": "01"})
    assert combo_id(34, {"Region": "01"}) != combo_id(33, {"Region": "01"})


def test_execution_id_changes_with_run_and_generation_only() -> None:
    base = execution_id("regions", "2026-11-29", "abc")
    assert base == execution_id("regions", "2026-11-29", "abc", 0)
    assert base != execution_id("regions", "2026-11-30", "abc")
    assert base != execution_id("regions", "2026-11-29", "abc", 1)
    assert base.startswith("swp-") and len(base) == 40


# Computed by the code that wrote existing ledgers; a resume matches ledger rows by these ids, so
# any change here orphans every recorded combination.
GOLDEN_COMBO_IDS: list[tuple[int, dict[str, str], str]] = [
    (33, {}, "324d24e279c2f817"),
    (33, {"Region": "01"}, "8eaddca049e5db65"),
    (33, {"Region": "01", "varReferenceType": "PROD"}, "e07599748dda2dde"),
    (1, {"varReferenceType": "PROD", "Region": "01"}, "766c21ce06ff0cd6"),
    (33, {"Région": "Zürich", "名前": "東京"}, "0df581a633262a72"),
    (33, {"q": 'say "hi"', "b": "C:\\dir\\file"}, "af5748f491085e24"),
    (33, {"ctl": "a\nb\rc\td\x00e\x1f\x7f\x85"}, "c9e81ccd9d0efe00"),
    (33, {"emoji": "🚀🇫🇷", "zw": "a\u200bb\u202e"}, "1739732a7f45851f"),
    (33, {"": "", "empty": ""}, "f86b1d999c95357f"),
    (33, {f"p{i:02d}": str(i) for i in range(40)}, "7abcbc6ba4cbbefe"),
    (
        33,
        {"n": "7", "f": "0.1", "neg": "-3", "big": "12345678901234567890", "t": "true"},
        "3a5dbb9810f259d9",
    ),
    (1099511627776, {"slash": "a/b", "lt": "<&>", "u2028": "\u2028\u2029"}, "61f2922cf1dec425"),
]


@pytest.mark.parametrize(("dataset", "params", "expected"), GOLDEN_COMBO_IDS)
def test_combo_ids_match_the_ids_existing_ledgers_hold(
    dataset: int, params: dict[str, str], expected: str
) -> None:
    assert combo_id(dataset, params) == expected
    assert combo_id(dataset, dict(reversed(params.items()))) == expected


def test_combo_id_hashes_compact_sorted_utf8_json() -> None:
    # The definition, spelled out: keys sorted, no spaces, non-ASCII written raw (UTF-8) rather
    # than as \u escapes, quotes and backslashes escaped.
    text = r'{"dataset":33,"params":{"Région":"0\"1","a":"\\"}}'
    expected = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    assert combo_id(33, {"a": "\\", "Région": '0"1'}) == expected


def test_execution_ids_and_config_hashes_match_existing_ledgers() -> None:
    assert execution_id("regions", "2026-11-29", combo_id(33, {"Region": "01"})) == (
        "swp-52d86341e7ac7fa90a7b6759607c723ae74d"
    )
    assert (
        execution_id("régions", "2026-11-29", "abc", 3)
        == "swp-b2fed87471a2e3d4b5a1d7b2a3c08624bef8"
    )
    template = {
        "execution": "photon",
        "writesettings": [
            {"path": "out/{run_id}/é-{Region}.csv", "header": True, "n": 1, "x": 0.5}
        ],
    }
    assert config_hash(33, template) == "b65ea008dc1b"
    assert config_hash(33, {}) == "65762ebc8fb2"

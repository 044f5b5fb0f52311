"""Identities are content-derived and stable: the fast combo_id path equals the definition."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sweeper.identity import canonical_json, combo_id, execution_id


def _by_definition(dataset: int, params: dict[str, str]) -> str:
    text = canonical_json({"dataset": dataset, "params": params})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@given(
    dataset=st.integers(min_value=-(2**63), max_value=2**63),
    params=st.dictionaries(st.text(), st.text(), max_size=6),
)
def test_combo_id_is_the_hash_of_the_canonical_json(dataset: int, params: dict[str, str]) -> None:
    assert combo_id(dataset, params) == _by_definition(dataset, params)


def test_combo_id_ignores_parameter_order_and_pins_known_values() -> None:
    a = combo_id(33, {"Region": "01", "varReferenceType": "PROD"})
    b = combo_id(33, {"varReferenceType": "PROD", "Region": "01"})
    assert a == b == _by_definition(33, {"Region": "01", "varReferenceType": "PROD"})
    assert combo_id(33, {"Region": 'é"\\\n'}) == _by_definition(33, {"Region": 'é"\\\n'})
    assert combo_id(34, {"Region": "01"}) != combo_id(33, {"Region": "01"})


def test_execution_id_changes_with_run_and_generation_only() -> None:
    base = execution_id("regions", "2026-11-29", "abc")
    assert base == execution_id("regions", "2026-11-29", "abc", 0)
    assert base != execution_id("regions", "2026-11-30", "abc")
    assert base != execution_id("regions", "2026-11-29", "abc", 1)
    assert base.startswith("swp-") and len(base) == 40


def test_combo_id_uses_the_definition_for_inputs_the_direct_path_does_not_cover() -> None:
    # A bool dataset encodes as true/false, and a non-string value without quotes.
    assert combo_id(True, {"a": "1"}) == _by_definition(True, {"a": "1"})
    odd: dict[str, Any] = {"a": 1, "b": None}
    assert combo_id(33, odd) == _by_definition(33, odd)

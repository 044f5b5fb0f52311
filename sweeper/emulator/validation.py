"""Structural checks of a runJobGroup body; override *values* are deliberately not validated."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sweeper.emulator.engine import write_settings_of
from sweeper.emulator.http import validation_failed

# A runJobGroup body is about 5 levels deep; anything far deeper is hostile or broken, and walking
# it (json.dumps when storing it, the checks below) could exhaust the interpreter's stack.
MAX_DEPTH = 64


def _too_deep(value: Any) -> bool:
    """True when ``value`` nests lists/objects more than MAX_DEPTH levels (iterative: no stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a runJobGroup body, or 400 ValidationFailed."""
    too_deep = validation_failed(
        f"The request body is nested more than {MAX_DEPTH} levels deep; send a runJobGroup body "
        'like {"wrangledDataset": {"id": 7}}.'
    )
    try:
        body = json.loads(raw or b"null")
    except RecursionError:  # the parser itself gave up: far deeper than MAX_DEPTH
        raise too_deep from None
    except (ValueError, UnicodeDecodeError):
        raise validation_failed("The request body is not valid JSON.") from None
    if _too_deep(body):
        raise too_deep
    if not isinstance(body, dict):
        raise validation_failed(
            'The request body must be a JSON object like {"wrangledDataset": {"id": 7}}.'
        )
    return body


def dataset_id_of(body: Mapping[str, Any]) -> int:
    ref = body.get("wrangledDataset")
    value = ref.get("id") if isinstance(ref, dict) else None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise validation_failed(
            '"wrangledDataset.id" is required and must be an integer recipe id.'
        )
    return value


def run_parameters_of(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    run = body.get("runParameters")
    if run is None:
        return []
    if isinstance(run, dict) and "overrides" not in run:
        return []  # e.g. only a referenceDate
    overrides = run.get("overrides") if isinstance(run, dict) else None
    data = overrides.get("data") if isinstance(overrides, dict) else None
    if not isinstance(data, list):
        raise validation_failed('"runParameters.overrides.data" must be a list of {key, value}.')
    given = []
    for index, item in enumerate(data):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("key"), str)
            or "value" not in item
        ):
            raise validation_failed(
                f'"runParameters.overrides.data[{index}]" must be an object with a string key '
                "and a value."
            )
        value = item["value"]
        given.append((item["key"], value if isinstance(value, str) else json.dumps(value)))
    return given


_TOP_LEVEL_TYPES: dict[str, tuple[type, ...]] = {
    "ranfrom": (str, type(None)),
    "ignoreRecipeErrors": (bool,),
    "forceCacheUpdate": (bool,),
    "testMode": (bool,),
    "runParameters": (dict, type(None)),
}


def check_types(body: Mapping[str, Any]) -> None:
    for key, types in _TOP_LEVEL_TYPES.items():
        if key in body and not isinstance(body[key], types):
            raise validation_failed(
                f'"{key}" has the wrong type; see the runJobGroup request body.'
            )
    run = body.get("runParameters") or {}
    if "referenceDate" in run and not isinstance(run["referenceDate"], str):
        raise validation_failed('"runParameters.referenceDate" must be an ISO-8601 string.')


def check_overrides(body: Mapping[str, Any]) -> None:
    overrides = body.get("overrides")
    if overrides is None:
        return
    if not isinstance(overrides, dict):
        raise validation_failed('"overrides" must be an object.')
    for key in ("writesettings", "writeSettings"):
        if key in overrides:
            value = overrides[key]
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise validation_failed(
                    f'"overrides.{key}" must be a list of write-setting objects.'
                )
    if write_settings_of(overrides) is None and any(
        k in overrides for k in ("writesettings", "writeSettings")
    ):
        raise validation_failed('"overrides.writesettings" must be a list.')

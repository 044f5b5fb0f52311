"""Content-derived identities: combination, execution and template hashes.

A combination is identified by what it sends, never by its position in the matrix, so reordering or
extending the axes leaves every existing identity (and its ledger history) intact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
)  # built once: json.dumps would build an encoder per call, and plans call this per combination


_string = json.encoder.encode_basestring  # how _CANONICAL writes a string (ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same data always gives the same text."""
    return _CANONICAL.encode(value)


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def combo_id(dataset: int, params: Mapping[str, str]) -> str:
    """A 16-hex-digit id of (dataset, parameter values), independent of parameter order.

    By definition the hash of ``canonical_json({"dataset": dataset, "params": dict(params)})``.
    Plans compute one per combination and ``JSONEncoder.encode`` sets up a new encoder per call,
    so the same text is written directly when the inputs are plain (tests check it is equal).
    """
    if type(dataset) is int:  # a bool or an int subclass would encode differently
        try:
            inner = ",".join([f"{_string(k)}:{_string(v)}" for k, v in sorted(params.items())])
        except TypeError:  # a key or value that is not a string: use the definition
            pass
        else:
            return _digest(f'{{"dataset":{dataset},"params":{{{inner}}}}}', 16)
    return _digest(canonical_json({"dataset": dataset, "params": dict(params)}), 16)


def execution_id(sweep: str, run_id: str, combo: str, generation: int = 0) -> str:
    """The x-execution-id of one combination in one run.

    Generation 0 is the first submission of the combination in the run; a deliberate rerun of a
    failed combination (``--rerun failed``) is generation 1, 2, ... Retries and resumes never
    change the generation, so the server answers 304 to them instead of creating a second group.
    """
    key = f"{sweep}|{run_id}|{combo}"
    if generation:
        key += f"|{generation}"
    return "swp-" + _digest(key, 36)


def config_hash(dataset: int, overrides_template: Mapping[str, Any]) -> str:
    """A 12-hex-digit hash of the request template: a changed template shows in the ledger."""
    return _digest(canonical_json({"dataset": dataset, "overrides": overrides_template}), 12)

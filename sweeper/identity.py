"""Content-derived identities: combination, execution and template hashes.

A combination is identified by what it sends, never by its position in the matrix, so reordering or
extending the axes leaves every existing identity (and its ledger history) intact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same data always gives the same text.

    Non-ASCII is written raw (hashed as UTF-8), not escaped: existing ids depend on it.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def combo_id(dataset: int, params: Mapping[str, str]) -> str:
    """A 16-hex-digit id of (dataset, parameter values), independent of parameter order."""
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

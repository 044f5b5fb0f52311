"""What the live contract test needs from the environment, and why it skips without it.

Read by ``conftest.py`` (the loopback guard) and ``test_live_contract.py`` (the test itself);
kept apart from both so that reading it never touches the network.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

BASE_URL = "SWEEPER_LIVE_BASE_URL"  # e.g. https://api.clouddataprep.com
TOKEN = "SWEEPER_LIVE_TOKEN"  # the API token; passed to sweeper via environ=, never printed
DATASET = "SWEEPER_LIVE_DATASET"  # the recipe (wrangledDataset) id to run
PARAM = "SWEEPER_LIVE_PARAM"  # one run parameter and its values: Name=value1,value2
TIMEOUT = "SWEEPER_LIVE_TIMEOUT"  # optional run.timeout, e.g. "45m" (default 30m)
REQUIRED = (BASE_URL, TOKEN, DATASET, PARAM)

HOW_TO_ENABLE = (
    f"live contract test: set {BASE_URL}, {TOKEN}, {DATASET} and {PARAM}=Name=value1,value2 "
    f"(optional {TIMEOUT}=30m) and run `pytest tests/live -n 0 -ra`; "
    "see docs/operations.md, 'Check sweeper against your platform before the first nightly run'"
)


class Environ(Mapping[str, str]):
    """The environment handed to sweeper: a read-only mapping whose repr never shows a value,
    so a failing assertion or ``--showlocals`` cannot print the token."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<environ: {len(self._values)} variables, values hidden>"


@dataclass(frozen=True)
class LiveSettings:
    base_url: str
    dataset: int
    param: str
    values: tuple[str, ...]
    timeout: str
    environ: Environ

    def __repr__(self) -> str:  # the environ holds the token: never in a repr
        shown = f"base_url={self.base_url!r}, dataset={self.dataset}, param={self.param!r}"
        return f"LiveSettings({shown})"


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether every variable the live test needs is set (non-empty)."""
    env = os.environ if environ is None else environ
    return all(env.get(name, "").strip() for name in REQUIRED)


def live_settings(environ: Mapping[str, str] | None = None) -> LiveSettings | None:
    """The settings, or None when any variable is missing; a malformed one raises ValueError."""
    env = os.environ if environ is None else environ
    if not configured(env):
        return None
    name, sep, raw = env[PARAM].partition("=")
    values = tuple(v.strip() for v in raw.split(",") if v.strip())
    if not sep or not name.strip() or not values:
        raise ValueError(f"{PARAM} must look like Name=value1,value2 (got no name or no value)")
    try:
        dataset = int(env[DATASET])
    except ValueError:
        raise ValueError(f"{DATASET} must be a recipe id (an integer)") from None
    return LiveSettings(
        base_url=env[BASE_URL].strip().rstrip("/"),
        dataset=dataset,
        param=name.strip(),
        values=values,
        timeout=env.get(TIMEOUT, "").strip() or "30m",
        environ=Environ(env),
    )

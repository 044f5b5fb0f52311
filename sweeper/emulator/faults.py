"""Fault injection: the TOML format, and seeded decisions taken request by request."""

from __future__ import annotations

import random
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeper.emulator.settings import FaultSettings
from sweeper.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LATENCY_ENDPOINTS = (
    "all",
    "post",
    "get",
    "status",
    "jobs",
    "list",
    "cancel",
    "outputs",
    "job_status",
)

# TOML table -> {toml key: FaultSettings field}
_TABLES: dict[str, dict[str, str]] = {
    "rate_limit": {
        "every": "rate_limit_every",
        "burst": "rate_limit_burst",
        "rate": "rate_limit_rate",
        "retry_after": "rate_limit_retry_after",
    },
    "errors": {
        "before_rate": "error_before_rate",
        "after_rate": "error_after_rate",
        "status": "error_status",
        "drop_after_rate": "drop_after_rate",
    },
    "jobs": {
        "fail_rate": "job_fail_rate",
        "fail_params": "fail_params",
        "slow_factor": "slow_factor",
        "slow_params": "slow_params",
    },
}


def _fail(path: Path, key: str, message: str) -> ConfigError:
    return ConfigError(message, path=str(path), key=key)


def _number(path: Path, key: str, value: Any, *, rate: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, key, f"expected a number, got {value!r}; fix the value.")
    if value < 0 or (rate and value > 1):
        bound = "between 0 and 1" if rate else "zero or more"
        raise _fail(path, key, f"must be {bound}, got {value!r}.")
    return float(value)


def _param_values(path: Path, key: str, value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise _fail(path, key, 'expected a table like {Region = ["02"]}.')
    out: dict[str, tuple[str, ...]] = {}
    for name, values in value.items():
        items = values if isinstance(values, list) else [values]
        out[str(name)] = tuple(str(v) for v in items)
    return out


def _latency(path: Path, table: Any) -> dict[str, tuple[float, float]]:
    if not isinstance(table, dict):
        raise _fail(path, "latency", "expected a table like [latency] post = [0.0, 1.0].")
    out: dict[str, tuple[float, float]] = {}
    for name, bounds in table.items():
        key = f"latency.{name}"
        if name not in LATENCY_ENDPOINTS:
            raise _fail(path, key, f"unknown endpoint; use one of {', '.join(LATENCY_ENDPOINTS)}.")
        if isinstance(bounds, (int, float)) and not isinstance(bounds, bool):
            bounds = [bounds, bounds]
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise _fail(path, key, "expected [min, max] in seconds.")
        low, high = (_number(path, key, b) for b in bounds)
        if high < low:
            raise _fail(path, key, "the maximum is below the minimum; swap them.")
        out[name] = (low, high)
    return out


def load_faults(path: str | Path) -> FaultSettings:
    """Read a fault TOML file (format in docs/emulator.md); ConfigError names the file and key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the fault file: {exc.strerror}.", path=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}.", path=str(path)) from exc
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "seed":
            if isinstance(value, bool) or not isinstance(value, int):
                raise _fail(path, "seed", "expected an integer.")
            kwargs["seed"] = value
        elif key == "latency":
            kwargs["latency"] = _latency(path, value)
        elif key in _TABLES:
            if not isinstance(value, dict):
                raise _fail(path, key, f"expected a [{key}] table.")
            for sub, sub_value in value.items():
                dotted = f"{key}.{sub}"
                target = _TABLES[key].get(sub)
                if target is None:
                    raise _fail(path, dotted, f"unknown key; use one of {', '.join(_TABLES[key])}.")
                if target.endswith("_params"):
                    kwargs[target] = _param_values(path, dotted, sub_value)
                elif target in ("rate_limit_every", "rate_limit_burst", "rate_limit_retry_after"):
                    kwargs[target] = int(_number(path, dotted, sub_value))
                elif target == "error_status":
                    status = int(_number(path, dotted, sub_value))
                    if not 500 <= status <= 599:
                        raise _fail(path, dotted, "expected a 5xx status such as 500 or 503.")
                    kwargs[target] = status
                else:
                    kwargs[target] = _number(path, dotted, sub_value, rate=target.endswith("rate"))
        else:
            known = "seed, latency, " + ", ".join(_TABLES)
            raise _fail(path, key, f"unknown key; use one of {known}.")
    return FaultSettings(**kwargs)


def _matches(params: Mapping[str, str], selector: Mapping[str, tuple[str, ...]]) -> bool:
    return any(params.get(name) in values for name, values in selector.items())


class FaultInjector:
    """Takes the seeded fault decisions; one independent random stream per fault kind."""

    def __init__(self, faults: FaultSettings | None, seed: int) -> None:
        self.faults = faults or FaultSettings()
        self.seed = self.faults.seed if self.faults.seed is not None else seed
        self._streams: dict[str, random.Random] = {}
        self._posts = 0
        self._burst_left = 0

    def _rng(self, kind: str) -> random.Random:
        if kind not in self._streams:
            self._streams[kind] = random.Random(f"{self.seed}:{kind}")
        return self._streams[kind]

    def _chance(self, kind: str, rate: float) -> bool:
        return rate > 0 and self._rng(kind).random() < rate

    def latency(self, endpoint: str) -> float:
        """Seconds to wait before answering this endpoint."""
        bounds = self.faults.latency.get(endpoint) or self.faults.latency.get("all")
        if not bounds:
            return 0.0
        return self._rng(f"latency:{endpoint}").uniform(*bounds)

    def rate_limited(self) -> bool:
        """Whether this POST gets an injected 429 (counts every POST that reaches the check)."""
        f = self.faults
        self._posts += 1
        if self._burst_left > 0:
            self._burst_left -= 1
            return True
        if f.rate_limit_every > 0 and self._posts % f.rate_limit_every == 0:
            self._burst_left = f.rate_limit_burst - 1
            return f.rate_limit_burst > 0
        return self._chance("rate_limit", f.rate_limit_rate)

    def error_before(self) -> bool:
        return self._chance("error_before", self.faults.error_before_rate)

    def error_after(self) -> bool:
        return self._chance("error_after", self.faults.error_after_rate)

    def drop_after(self) -> bool:
        return self._chance("drop_after", self.faults.drop_after_rate)

    def job_failure(self, group_id: int, params: Mapping[str, str]) -> str | None:
        """The injected errorMessage for this group's wrangle job, or None."""
        f = self.faults
        if f.fail_params and _matches(params, f.fail_params):
            hit = ", ".join(f"{k}={params[k]}" for k in f.fail_params if k in params)
            return f"Injected fault: the wrangle job fails for {hit} (emulator fail_params)."
        # keyed by group id so the decision does not depend on request interleaving
        if f.job_fail_rate > 0 and random.Random(f"{self.seed}:job:{group_id}").random() < (
            f.job_fail_rate
        ):
            return "Injected fault: the wrangle job failed (emulator job fail_rate)."
        return None

    def slow_factor(self, params: Mapping[str, str]) -> float:
        f = self.faults
        if f.slow_factor == 1.0:
            return 1.0
        if f.slow_params and not _matches(params, f.slow_params):
            return 1.0
        return f.slow_factor

"""TOML configuration -> frozen dataclasses. Every problem raises ConfigError.

Path rule: *inputs* (``rows``/``csv``/``glob`` files of the matrix, ``api.token_file``,
``api.ca_bundle``) are relative to the config file's directory, so a config and its data travel
together; *outputs* (``sweep.ledger``, and the embedded emulator's state and outputs) are relative
to the sweep's *project root*: the config file's directory, or its parent when that directory is
named ``configs``. Either way the working directory does not matter. Mappings in the result are
read-only (``MappingProxyType``, tuples for lists).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from sweeper.errors import ConfigError
from sweeper.identity import config_hash as _config_hash
from sweeper.matrix import MatrixSpec, describe, did_you_mean
from sweeper.matrix_parse import AXIS_TABLE_KEYS, RESERVED_KEYS, parse_matrix
from sweeper.template import check_template

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class Rate:
    """At most ``count`` requests in any window of ``per_seconds`` seconds."""

    count: int
    per_seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.per_seconds


TARGETS = ("dataset", "flow", "plan")  # what a sweep runs: a recipe, a flow or a plan


@dataclass(frozen=True)
class SweepSettings:
    name: str  # [A-Za-z0-9_.-]+; names the ledger and seeds execution ids
    dataset: int  # the target's id: wrangledDataset.id, or the flow's / plan's id (see target)
    ledger: Path  # absolute; default: results/<name>.csv under the project root
    max_combinations: int = 10_000
    # the job group's ranfrom: None = not sent; "null" = JSON null (hidden from Job Details)
    ranfrom: str | None = None
    target: str = "dataset"  # one of TARGETS: which [sweep] key named the id
    outputs: tuple[int, ...] = ()  # a flow's wrangledDatasetIds (a subset of its outputs)

    @property
    def is_flow(self) -> bool:
        return self.target == "flow"

    @property
    def is_plan(self) -> bool:
        return self.target == "plan"

    @property
    def runs(self) -> bool:
        """Whether each combination is a run (of a flow or a plan) rather than one job group."""
        return self.target in ("flow", "plan")


@dataclass(frozen=True)
class ApiSettings:
    base_url: str = "embedded"  # "embedded" or an http(s) URL
    token_env: str = "DATAPREP_TOKEN"
    token_file: Path | None = None  # must not be readable by group or others
    auth: str = "bearer"  # "bearer" | "basic" | "oauth"
    username_env: str = "DATAPREP_USERNAME"  # basic auth
    password_env: str = "DATAPREP_PASSWORD"  # basic auth
    refresh_token_env: str = "DATAPREP_REFRESH_TOKEN"  # oauth
    client_id_env: str = "DATAPREP_CLIENT_ID"  # oauth
    token_url: str | None = None  # oauth token endpoint
    ca_bundle: Path | None = None
    insecure: bool = False  # skip TLS verification; refused unless base_url is loopback
    timeout: float = 30.0  # seconds, per request

    @property
    def embedded(self) -> bool:
        return self.base_url == "embedded"


# The default run.rate per target: just under the platform's per-user quota of the endpoint
# (runJobGroup 30/min, runFlow 20/min, runPlan 30/min), so one sweep never meets a 429 by itself.
DEFAULT_RATES: Mapping[str, Rate] = MappingProxyType(
    {"dataset": Rate(25, 60.0), "flow": Rate(16, 60.0), "plan": Rate(25, 60.0)}
)


@dataclass(frozen=True)
class RunSettings:
    rate: Rate = field(default_factory=lambda: Rate(25, 60.0))
    concurrency: int = 4
    wait: bool = True
    timeout: float = 7200.0  # seconds for the whole run, waiting included
    # With the job library: the run-wide tick every status read lands on (a group is read after
    # max(tick, 5 % of its age)). Without it: the first read after submission, backing off 1.5x.
    poll_interval: float = 10.0
    poll_max_interval: float = 600.0  # the longest time between two reads of one group
    max_polls_per_second: float = 5.0  # cap of status GETs across the run
    settle: float = 5.0  # reconciliation waits this long after the newest unresolved intent
    verify_outputs: bool = False
    rate_store: str | None = None  # sqlite:///PATH or postgresql://USER@HOST/DB; never a password
    rate_key: str | None = None  # who shares the budget; default: API host + credential hash


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 6  # per request
    max_wait: float = 600.0  # cap of one wait
    total: float = 1800.0  # cap of all waits of one request
    budget: float = 0.2  # run-wide: retries <= budget * requests + 10
    breaker_threshold: int = 5  # consecutive 429/5xx answers that open the breaker
    breaker_pause: float = 60.0  # seconds submission pauses when the breaker opens
    breaker_max_opens: int = 3  # the run ends (resumably) when the breaker opens this often


EMBEDDED_STATE = Path("results/.emulator/state.sqlite")  # under the sweep's project root


@dataclass(frozen=True)
class SweepConfig:
    path: Path
    sweep: SweepSettings
    api: ApiSettings
    matrix: MatrixSpec
    overrides: Mapping[str, Any]  # body.overrides template (read-only); strings hold placeholders
    run: RunSettings
    retry: RetrySettings

    @property
    def config_hash(self) -> str:
        template = thaw(self.overrides)
        if self.sweep.target != "dataset":  # recipe sweeps keep the hash they always had
            template = {
                "target": self.sweep.target,
                "outputs": list(self.sweep.outputs),
                "overrides": template,
            }
        return _config_hash(self.sweep.dataset, template)

    @property
    def root(self) -> Path:
        """The project root that outputs are relative to (see ``project_root``)."""
        return project_root(self.path)

    @property
    def embedded_state(self) -> Path:
        """The embedded emulator's SQLite state file for this sweep."""
        return self.root / EMBEDDED_STATE

    @property
    def owned_paths(self) -> tuple[Path, ...]:
        """Files and folders sweeper itself writes for this sweep, which no job output may
        overwrite: the ledger, its lock file, and (embedded) the emulator's state folder."""
        ledger = self.sweep.ledger
        owned = [ledger, ledger.with_name(ledger.name + ".lock")]
        if self.api.embedded:
            owned.append(self.embedded_state.parent)
        return tuple(owned)


def project_root(config_path: Path) -> Path:
    """Where a sweep's outputs are relative to: the config file's directory, or its parent when
    that directory is named ``configs`` (so ``configs/x.toml`` writes ``results/`` beside it)."""
    folder = config_path.absolute().parent
    return folder.parent if folder.name == "configs" else folder


# ---------------------------------------------------------------- the schema

# Every key the loader accepts, by section; docs/config.md documents each (tests check it).
SECTION_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "sweep": (
            "name",
            "dataset",
            "flow",
            "plan",
            "outputs",
            "ledger",
            "max_combinations",
            "ranfrom",
        ),
        "api": (
            "base_url",
            "token_env",
            "token_file",
            "auth",
            "username_env",
            "password_env",
            "refresh_token_env",
            "client_id_env",
            "token_url",
            "ca_bundle",
            "insecure",
            "timeout",
        ),
        "matrix": (),  # free-form: see sweeper.matrix_parse
        "overrides": (
            "execution",
            "profiler",
            "writesettings",
            "writeSettings",
            "ignoreRecipeErrors",  # flows only
        ),
        "run": (
            "rate",
            "concurrency",
            "wait",
            "timeout",
            "poll_interval",
            "poll_max_interval",
            "max_polls_per_second",
            "settle",
            "verify_outputs",
            "rate_store",
            "rate_key",
        ),
        "retry": (
            "attempts",
            "max_wait",
            "total",
            "budget",
            "breaker_threshold",
            "breaker_pause",
            "breaker_max_opens",
        ),
    }
)
WRITE_SETTING_KEYS = (
    "path",
    "action",
    "format",
    "compression",
    "header",
    "asSingleFile",
    "delim",
    "hasQuotes",
    "includeMismatches",
    "connectionId",
)
# A flow sweep's per-recipe table, [overrides."<recipe name>"]: sent as overrides["<recipe name>"].
FLOW_RECIPE_KEYS = ("profiler", "writesettings", "writeSettings")
KNOWN_KEYS: frozenset[str] = frozenset(
    [f"{s}.{k}" for s, keys in SECTION_KEYS.items() for k in keys]
    + [f"overrides.writesettings.{k}" for k in WRITE_SETTING_KEYS]
    + [f"overrides.RECIPE.{k}" for k in FLOW_RECIPE_KEYS]
    + [f"matrix.{k}" for k in RESERVED_KEYS]
    + [f"matrix.NAME.{k}" for k in AXIS_TABLE_KEYS]
)

_ENUMS = {
    "auth": ("bearer", "basic", "oauth"),
    "ranfrom": ("ui", "schedule", "api", "null"),  # TOML has no null: "null" stands for it
    "action": ("create", "append", "overwrite"),
    "format": ("csv", "json", "avro", "pqt", "hyper"),
    "compression": ("none", "gzip", "bzip2", "snappy"),
}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_KEY = re.compile(
    r"(?i)^(token|access_?token|api_?key|api_?token|bearer|password|passwd|secret|"
    r"client_?secret|refresh_?token|authorization|credentials?)$"
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|min|sec|s|m|h|d|w)")
_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")
_RATE_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}


def is_loopback_host(host: str) -> bool:
    """True for a host only this machine can reach: 127.0.0.0/8, ::1, localhost."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # any other name may resolve to an address the network can reach


def parse_duration(raw: object) -> float:
    """``"90s"``, ``"10m"``, ``"2h"``, ``"1d"``, ``"1h30m"`` or a number of seconds -> seconds."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        if not math.isfinite(raw):
            raise ValueError("not a finite number")
        return float(raw)
    if not isinstance(raw, str):
        raise ValueError("not a string or number")
    text = raw.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or re.sub(r"\s+", "", _DURATION_PART.sub("", text)):
        raise ValueError("not a duration")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_rate(raw: object) -> Rate:
    """``"25/min"``, ``"30/1m"``, ``"2/s"``, ``"100/h"`` -> Rate(count, per_seconds)."""
    match = _RATE.match(raw.lower()) if isinstance(raw, str) else None
    if not match or match.group(3) not in _RATE_UNITS:
        raise ValueError("not a rate")
    count = int(match.group(1))
    per = float(match.group(2) or 1) * _RATE_UNITS[match.group(3)]
    if count <= 0 or per <= 0:
        raise ValueError("count and window must be positive")
    return Rate(count, per)


def freeze(value: Any) -> Any:
    """Read-only copy: tables -> MappingProxyType, arrays -> tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain dicts and lists again (for JSON)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


# ---------------------------------------------------------------- the reader


class _Reader:
    """Typed getters that raise ConfigError naming the file and the dotted key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base_dir = path.parent

    def error(self, message: str, key: str | None = None) -> ConfigError:
        return ConfigError(message, path=str(self.path), key=key)

    def table(self, doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, Mapping):
            raise self.error(
                f"[{name}] must be a table, got {describe(value)}. Write it as a [{name}] section.",
                name,
            )
        return value

    def check_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for k in table:
            key = f"{prefix}.{k}" if prefix else k
            if _SECRET_KEY.match(k):
                raise self.error(
                    "A config file must never hold a credential. Put the token in an environment "
                    "variable and name it with api.token_env, or point api.token_file at a file "
                    "only you can read.",
                    key,
                )
            if k not in allowed:
                known = ", ".join(allowed) if allowed else "(none)"
                raise self.error(
                    f"Unknown key '{k}'.{did_you_mean(k, allowed)} Known: {known}.", key
                )

    def _want(self, what: str, value: object, key: str, secret: bool = False) -> ConfigError:
        shown = "a value that is not shown here" if secret else describe(value)
        return self.error(f"Expected {what}, got {shown}.", key)

    def string(self, t: Mapping[str, Any], k: str, p: str, default: str) -> str:
        value = t.get(k, default)
        if not isinstance(value, str) or not value:
            raise self._want("a non-empty string", value, f"{p}.{k}")
        return value

    def boolean(self, t: Mapping[str, Any], k: str, p: str, default: bool) -> bool:
        value = t.get(k, default)
        if not isinstance(value, bool):
            raise self._want("true or false", value, f"{p}.{k}")
        return value

    def integer(
        self, t: Mapping[str, Any], k: str, p: str, default: int, lo: int, hi: int | None = None
    ) -> int:
        value = t.get(k, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._want("an integer", value, f"{p}.{k}")
        if value < lo or (hi is not None and value > hi):
            bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise self.error(f"Must be {bounds}, got {value}.", f"{p}.{k}")
        return value

    def number(self, t: Mapping[str, Any], k: str, p: str, default: float, lo: float) -> float:
        value = t.get(k, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise self._want("a number", value, f"{p}.{k}")
        if value < lo or not math.isfinite(value):
            raise self.error(f"Must be a finite number of at least {lo}, got {value}.", f"{p}.{k}")
        return float(value)

    def duration(
        self, t: Mapping[str, Any], k: str, p: str, default: float, positive: bool = False
    ) -> float:
        value = t.get(k, default)
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise self._want(
                'a duration like "90s", "10m", "2h", "1d" or a number of seconds', value, f"{p}.{k}"
            ) from None
        if seconds < 0 or (positive and seconds == 0):
            raise self.error(
                f"Must be {'more than' if positive else 'at least'} 0 seconds, got {value!r}.",
                f"{p}.{k}",
            )
        return seconds

    def choice(self, t: Mapping[str, Any], k: str, p: str, default: str | None) -> str | None:
        value = t.get(k, default)
        if value is None:
            return None
        options = _ENUMS[k]
        if value not in options:
            hint = did_you_mean(value, options) if isinstance(value, str) else ""
            raise self.error(
                f"Expected one of {', '.join(options)}, got {describe(value)}.{hint}", f"{p}.{k}"
            )
        return str(value)

    def input_path(self, t: Mapping[str, Any], k: str, p: str) -> Path | None:
        value = t.get(k)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self._want("a file path (string)", value, f"{p}.{k}")
        return (self.base_dir / Path(value).expanduser()).absolute()

    def env_name(self, t: Mapping[str, Any], k: str, p: str, default: str) -> str:
        value = t.get(k, default)
        if not isinstance(value, str):
            raise self._want("the name of an environment variable", value, f"{p}.{k}", True)
        looks_secret = (
            len(value) >= 32
            and any(c.isdigit() for c in value)
            and (any(c.islower() for c in value))
        )
        if not _ENV_NAME.fullmatch(value) or looks_secret:
            raise self.error(
                "Expected the NAME of an environment variable (letters, digits, underscores), "
                "and this value looks like a literal credential, which a config file must never "
                "hold. Put the secret in the environment and write e.g. "
                f'{k} = "DATAPREP_TOKEN"; the value is not shown here.',
                f"{p}.{k}",
            )
        return value

    def url(self, t: Mapping[str, Any], k: str, p: str) -> str | None:
        value = t.get(k)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._want("an http(s) URL", value, f"{p}.{k}")
        parts = urlsplit(value)
        if parts.username or parts.password:
            raise self.error(
                "A URL must not carry a user name or password; use api.auth with the "
                "*_env settings instead (the value is not shown here).",
                f"{p}.{k}",
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(
                f'Expected "embedded" or an http(s) URL like "https://api.clouddataprep.com" '
                f'or "http://127.0.0.1:3005", got {value!r}.',
                f"{p}.{k}",
            )
        if parts.query or parts.fragment:
            raise self.error(
                "The URL must not have a query or fragment (it is not shown here, as a query "
                'may hold a secret); give the base URL, e.g. "https://api.clouddataprep.com".',
                f"{p}.{k}",
            )
        return value.rstrip("/")


# ---------------------------------------------------------------- sections


def _sweep(r: _Reader, t: Mapping[str, Any]) -> SweepSettings:
    r.check_keys(t, SECTION_KEYS["sweep"], "sweep")
    if "name" not in t:
        raise r.error('Every sweep needs a name, e.g. name = "regions".', "sweep.name")
    name = r.string(t, "name", "sweep", "")
    if not _NAME.fullmatch(name):
        raise r.error(
            f"The name {name!r} may use only letters, digits, '_', '.' and '-' (it names the "
            "ledger file and seeds execution ids).",
            "sweep.name",
        )
    given = [k for k in TARGETS if k in t]
    if len(given) != 1:
        what = "none of them is set" if not given else f"{' and '.join(given)} are all set"
        raise r.error(
            "Name exactly one target: dataset = <wrangledDataset id> (a recipe, e.g. dataset = "
            f"33), flow = <flow id> or plan = <plan id>; {what}.",
            f"sweep.{given[-1] if given else 'dataset'}",
        )
    target = given[0]
    dataset = r.integer(t, target, "sweep", 0, 1)
    outputs: tuple[int, ...] = ()
    if "outputs" in t:
        raw = t["outputs"]
        if target != "flow":
            raise r.error(
                "outputs (wrangledDatasetIds) choose which outputs of a flow run; it needs "
                "flow = <flow id>.",
                "sweep.outputs",
            )
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in raw)
        ):
            raise r._want("a non-empty list of recipe ids, e.g. [33, 1]", raw, "sweep.outputs")
        outputs = tuple(raw)
    ledger_raw = t.get("ledger", f"results/{name}.csv")
    if not isinstance(ledger_raw, str) or not ledger_raw:
        raise r._want("a file path (string)", ledger_raw, "sweep.ledger")
    max_combinations = r.integer(t, "max_combinations", "sweep", 10_000, 1)
    ledger = Path(os.path.normpath(project_root(r.path) / Path(ledger_raw).expanduser()))
    ranfrom = r.choice(t, "ranfrom", "sweep", None)
    return SweepSettings(
        name,
        dataset,
        ledger,
        max_combinations,
        ranfrom=ranfrom,
        target=target,
        outputs=outputs,
    )


def _api(r: _Reader, t: Mapping[str, Any]) -> ApiSettings:
    r.check_keys(t, SECTION_KEYS["api"], "api")
    d = ApiSettings()
    raw_base = t.get("base_url", d.base_url)
    base_url = "embedded" if raw_base == "embedded" else r.url(t, "base_url", "api")
    insecure = r.boolean(t, "insecure", "api", d.insecure)
    loopback = is_loopback_host(urlsplit(base_url or "").hostname or "")
    if insecure and base_url != "embedded" and not loopback:
        raise r.error(
            "insecure = true turns off TLS verification and is allowed only for a loopback "
            "emulator (127.0.0.1 / localhost). For a corporate CA, set api.ca_bundle instead.",
            "api.insecure",
        )
    auth = r.choice(t, "auth", "api", d.auth) or d.auth
    return ApiSettings(
        base_url=base_url or d.base_url,
        token_env=r.env_name(t, "token_env", "api", d.token_env),
        token_file=r.input_path(t, "token_file", "api"),
        auth=auth,
        username_env=r.env_name(t, "username_env", "api", d.username_env),
        password_env=r.env_name(t, "password_env", "api", d.password_env),
        refresh_token_env=r.env_name(t, "refresh_token_env", "api", d.refresh_token_env),
        client_id_env=r.env_name(t, "client_id_env", "api", d.client_id_env),
        token_url=r.url(t, "token_url", "api"),
        ca_bundle=r.input_path(t, "ca_bundle", "api"),
        insecure=insecure,
        timeout=r.duration(t, "timeout", "api", d.timeout, positive=True),
    )


def _write_setting(r: _Reader, entry: object, key: str) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise r.error(
            f"Each write setting is a table ([[overrides.writesettings]]), got {describe(entry)}.",
            key,
        )
    r.check_keys(entry, WRITE_SETTING_KEYS, key)
    if "path" not in entry:
        raise r.error(
            'A write setting needs a path, e.g. path = "gs://bucket/out/{Region}.csv".',
            f"{key}.path",
        )
    out: dict[str, Any] = {}
    for k, value in entry.items():
        if k in _ENUMS:
            out[k] = r.choice(entry, k, key, None)
        elif k in ("path", "delim"):
            out[k] = r.string(entry, k, key, "")
        elif k == "connectionId":
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise r._want("a string or integer", value, f"{key}.{k}")
            out[k] = value
        else:
            out[k] = r.boolean(entry, k, key, False)
    suffix = {"gzip": ".gz", "bzip2": ".bz2"}.get(str(out.get("compression")))
    if suffix and not out["path"].endswith((suffix, "}")):
        raise r.error(
            f"With compression = {out['compression']!r} the file name must end in {suffix} "
            "(the platform requires it).",
            f"{key}.path",
        )
    return out


def _flow_overrides(r: _Reader, t: Mapping[str, Any]) -> dict[str, Any]:
    """A flow sweep's [overrides]: execution and ignoreRecipeErrors (sent at the top level of
    the runFlow body, where that API has them) and one table per recipe name."""
    out: dict[str, Any] = {}
    for k, value in t.items():
        if isinstance(value, Mapping):
            key = f'overrides."{k}"'
            if _SECRET_KEY.match(k):
                r.check_keys({k: None}, (), "overrides")  # raises: never a credential
            r.check_keys(value, FLOW_RECIPE_KEYS, key)
            out[k] = _overrides(r, value, prefix=key, keys=FLOW_RECIPE_KEYS)
            continue
        r.check_keys({k: value}, ("execution", "ignoreRecipeErrors"), "overrides")
        if k == "execution":
            out[k] = r.string(t, k, "overrides", "")
        else:
            out[k] = r.boolean(t, k, "overrides", False)
    return out


def _overrides(
    r: _Reader,
    t: Mapping[str, Any],
    *,
    prefix: str = "overrides",
    keys: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    if keys is None:
        keys = tuple(k for k in SECTION_KEYS["overrides"] if k != "ignoreRecipeErrors")
        for k, value in t.items():
            if isinstance(value, Mapping):
                raise r.error(
                    f'A table [overrides."{k}"] overrides one recipe of a flow; it needs '
                    "flow = <flow id> in [sweep]. For a recipe, write its keys in [overrides].",
                    f"overrides.{k}",
                )
    r.check_keys(t, keys, prefix)
    if "writesettings" in t and "writeSettings" in t:
        raise r.error(
            "Both writesettings and writeSettings are set; they are the same key, keep one.",
            f"{prefix}.writeSettings",
        )
    out: dict[str, Any] = {}
    for k, value in t.items():
        if k == "execution":
            out[k] = r.string(t, k, prefix, "")
        elif k == "profiler":
            out[k] = r.boolean(t, k, prefix, False)
        else:
            key = f"{prefix}.{k}"
            if not isinstance(value, list):
                raise r.error(
                    f"Write [[{key}]] tables (an array of tables), got {describe(value)}.", key
                )
            # Sent as lower-case `writesettings`: the spelling of the current v4 reference and of
            # Airflow's operator; the camel-case form is accepted on input.
            out["writesettings"] = [
                _write_setting(r, e, f"{key}[{i}]") for i, e in enumerate(value)
            ]
    return out


# The embedded emulator's job groups end about 1.5 s after submission (0.3 s queued, 0.8 s
# wrangle, 0.4 s write); a read every 10 s would spend most of a demo waiting for polls after
# the jobs ended. Polls are in-process there, so poll soon.
EMBEDDED_POLL_INTERVAL = 0.25
EMBEDDED_POLL_MAX_INTERVAL = 0.5


def _run(
    r: _Reader, t: Mapping[str, Any], *, embedded: bool = False, target: str = "dataset"
) -> RunSettings:
    r.check_keys(t, SECTION_KEYS["run"], "run")
    d = RunSettings(rate=DEFAULT_RATES[target])
    if embedded:
        d = RunSettings(
            rate=DEFAULT_RATES[target],
            poll_interval=EMBEDDED_POLL_INTERVAL,
            poll_max_interval=EMBEDDED_POLL_MAX_INTERVAL,
        )
    rate = d.rate
    if "rate" in t:
        try:
            rate = parse_rate(t["rate"])
        except ValueError:
            raise r._want(
                'a rate like "25/min", "30/1m", "2/s" or "100/h"', t["rate"], "run.rate"
            ) from None
    poll_interval = r.duration(t, "poll_interval", "run", d.poll_interval, positive=True)
    poll_max = r.duration(
        t, "poll_max_interval", "run", max(d.poll_max_interval, poll_interval), positive=True
    )
    if poll_max < poll_interval:
        raise r.error(
            f"Must be at least run.poll_interval ({poll_interval:g}s), got {poll_max:g}s.",
            "run.poll_max_interval",
        )
    max_polls = r.number(t, "max_polls_per_second", "run", d.max_polls_per_second, 0.0)
    if max_polls == 0:
        raise r.error("Must be more than 0.", "run.max_polls_per_second")
    rate_store = t.get("rate_store")
    if rate_store is not None:
        from sweeper.ratestore import check_rate_store

        if not isinstance(rate_store, str) or not rate_store:
            raise r.error(
                "Must be a connection URL (string): sqlite:///PATH or postgresql://USER@HOST/DB.",
                "run.rate_store",
            )
        try:
            check_rate_store(rate_store)
        except ConfigError as exc:
            raise r.error(exc.message, "run.rate_store") from None
    rate_key = t.get("rate_key")
    if rate_key is not None and (not isinstance(rate_key, str) or not rate_key.strip()):
        raise r._want("a non-empty string", rate_key, "run.rate_key")
    concurrency = r.integer(
        t, "concurrency", "run", 1 if target == "plan" else d.concurrency, 1, 64
    )
    if target == "plan" and concurrency > 1:
        # After a lost answer a plan run can only be told apart from the others (its body names
        # no parameters) by being the one POST the sweep had in flight.
        raise r.error(
            "A plan sweep submits one plan run at a time: POST /v4/plans/{id}/run names no "
            "parameters, so after a lost answer sweeper can only recognise its run by having "
            "no other in flight. Remove run.concurrency (it is 1 for plans) or set it to 1.",
            "run.concurrency",
        )
    return RunSettings(
        rate=rate,
        concurrency=concurrency,
        wait=r.boolean(t, "wait", "run", d.wait),
        timeout=r.duration(t, "timeout", "run", d.timeout, positive=True),
        poll_interval=poll_interval,
        poll_max_interval=poll_max,
        max_polls_per_second=max_polls,
        settle=r.duration(t, "settle", "run", d.settle),
        verify_outputs=r.boolean(t, "verify_outputs", "run", d.verify_outputs),
        rate_store=rate_store,
        rate_key=rate_key,
    )


def _retry(r: _Reader, t: Mapping[str, Any]) -> RetrySettings:
    r.check_keys(t, SECTION_KEYS["retry"], "retry")
    d = RetrySettings()
    return RetrySettings(
        attempts=r.integer(t, "attempts", "retry", d.attempts, 1, 100),
        max_wait=r.duration(t, "max_wait", "retry", d.max_wait),
        total=r.duration(t, "total", "retry", d.total),
        budget=r.number(t, "budget", "retry", d.budget, 0.0),
        breaker_threshold=r.integer(t, "breaker_threshold", "retry", d.breaker_threshold, 1),
        breaker_pause=r.duration(t, "breaker_pause", "retry", d.breaker_pause),
        breaker_max_opens=r.integer(t, "breaker_max_opens", "retry", d.breaker_max_opens, 1),
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "The config file does not exist. Check the path, e.g. sweeper plan "
            "configs/regions.toml.",
            path=str(path),
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            "This is a directory; give the path of a .toml file.", path=str(path)
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"The file is not UTF-8 text ({exc.reason}).", path=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"Cannot read the file: {exc.strerror}.", path=str(path)) from None
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(match.group(1)) if match else text.count("\n") + 1
        column = int(match.group(2)) if match else None
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        raise ConfigError(
            f"Invalid TOML: {reason}. Fix the syntax there (strings need quotes, tables are "
            "[name], arrays of tables [[name]]).",
            path=str(path),
            line=line,
            column=column,
        ) from None
    return doc


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep file; credentials are resolved later, by ``auth.build_auth``."""
    file = Path(path)
    doc = _read_toml(file)
    r = _Reader(file)
    r.check_keys(doc, tuple(SECTION_KEYS), "")
    sweep = _sweep(r, r.table(doc, "sweep"))
    api = _api(r, r.table(doc, "api"))
    matrix = parse_matrix(r.table(doc, "matrix"), source=file, base_dir=r.base_dir)
    table = r.table(doc, "overrides")
    if sweep.is_plan and table:
        # The documented runPlan body carries no overrides: a plan runs with its own settings.
        raise r.error(
            "A plan runs with the settings saved in it: POST /v4/plans/{id}/run takes no "
            "overrides, so remove the [overrides] table from a plan sweep.",
            f"overrides.{next(iter(table))}",
        )
    overrides = _flow_overrides(r, table) if sweep.is_flow else _overrides(r, table)
    check_template(overrides, matrix)
    return SweepConfig(
        path=file,
        sweep=sweep,
        api=api,
        matrix=matrix,
        overrides=freeze(overrides),
        run=_run(r, r.table(doc, "run"), embedded=api.embedded, target=sweep.target),
        retry=_retry(r, r.table(doc, "retry")),
    )

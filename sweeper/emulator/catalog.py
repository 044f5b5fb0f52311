"""The catalog of runnable recipes and its tiny, eval-free recipe language."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sweeper.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CATALOG = Path(__file__).parent / "data" / "catalog.toml"
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_OPS = ("filter", "select", "rename", "derive", "sort")
_CMPS = ("eq", "ne", "gt", "ge", "lt", "le", "in")
_FUNCS = ("constant", "multiply", "add", "subtract", "divide", "upper", "lower", "concat")


class RecipeError(Exception):
    """A recipe step cannot run on this data; becomes the wrangle job's errorMessage."""


class UnsafeSourceError(RecipeError):
    """A run-parameter value would move the source path out of its place in the catalog folder."""


# A value filled into a source path must stay one piece of one path segment.
_UNSAFE_IN_SOURCE = re.compile(r"[/\\\x00-\x1f\x7f]")


def fill(template: str, values: Mapping[str, object]) -> str:
    """Replace {Name} placeholders; unknown names are left as they are."""
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


@dataclass(frozen=True)
class Dataset:
    """One recipe: where its rows come from, its parameters, steps and default outputs."""

    id: int
    name: str
    source: str
    base_dir: Path
    parameters: Mapping[str, str] = field(default_factory=dict)
    outputs: tuple[Mapping[str, Any], ...] = ()
    recipe: tuple[Mapping[str, Any], ...] = ()

    def source_path(self, params: Mapping[str, str]) -> Path:
        """The source file for these parameters; UnsafeSourceError if a value would escape.

        Values cannot contain a path separator or a control character, and cannot turn a
        segment of the template into '.' or '..' (alone or together, as in "{A}{B}"), so a
        source path always has the template's own shape inside the catalog's folder.
        """
        for name in dict.fromkeys(_PLACEHOLDER.findall(self.source)):
            value = params.get(name)
            if value is not None and _UNSAFE_IN_SOURCE.search(value):
                raise UnsafeSourceError(
                    f"The run parameter {name}={value!r} cannot be used in the source path of "
                    f"recipe {self.name!r}: it contains a path separator or a control character, "
                    "so the source could be read from outside its folder. Use a plain value."
                )
        filled = fill(self.source, params)
        template_parts, parts = self.source.split("/"), filled.split("/")
        # a parameter *name* may hold a '/', so the shapes can differ: that is refused as well
        same_shape = len(parts) == len(template_parts)
        for template_part, part in zip(template_parts, parts, strict=False):
            if not same_shape or (part in (".", "..") and part != template_part):
                raise UnsafeSourceError(
                    f"The run parameters turn the source path of recipe {self.name!r} into "
                    f"{filled!r}, which does not stay where its template {self.source!r} points "
                    "('.' or '..' segments). Use plain values."
                )
        return self.base_dir / filled

    def run(self, params: Mapping[str, str]) -> pd.DataFrame:
        """Read the source chosen by the parameters and apply every step; raises RecipeError."""
        path = self.source_path(params)
        if not path.is_file():
            shown = ", ".join(f"{k}={v!r}" for k, v in sorted(params.items())) or "no parameters"
            raise RecipeError(
                f"No source data for recipe {self.name!r} with {shown}: {path.name} does not exist."
            )
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        for index, step in enumerate(self.recipe, start=1):
            try:
                frame = _apply(frame, step, params)
            except (KeyError, ValueError, TypeError) as exc:
                raise RecipeError(
                    f"Recipe {self.name!r} step {index} ({step['op']}) failed: {exc}."
                ) from exc
        return frame


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        raise KeyError(f"no column {column!r}")
    return pd.to_numeric(frame[column], errors="raise")


def _operand(frame: pd.DataFrame, arg: Any) -> Any:
    if isinstance(arg, str) and arg in frame.columns:
        return _numeric(frame, arg)
    return float(arg)


def _apply(frame: pd.DataFrame, step: Mapping[str, Any], params: Mapping[str, str]) -> pd.DataFrame:
    result: pd.DataFrame = _step(frame, step, params)
    return result


def _step(frame: pd.DataFrame, step: Mapping[str, Any], params: Mapping[str, str]) -> Any:
    op = step["op"]
    if op == "filter":
        column, cmp = step["column"], step.get("cmp", "eq")
        if column not in frame.columns:
            raise KeyError(f"no column {column!r}")
        raw = step["value"]
        if cmp == "in":
            wanted = [fill(str(v), params) for v in raw]
            return frame[frame[column].isin(wanted)].reset_index(drop=True)
        value = fill(str(raw), params)
        if cmp in ("eq", "ne"):
            mask = frame[column] == value
            return frame[mask if cmp == "eq" else ~mask].reset_index(drop=True)
        series, number = _numeric(frame, column), float(value)
        masks = {"gt": series > number, "ge": series >= number, "lt": series < number}
        mask = masks.get(cmp, series <= number)
        return frame[mask].reset_index(drop=True)
    if op == "select":
        missing = [c for c in step["columns"] if c not in frame.columns]
        if missing:
            raise KeyError(f"no column {missing[0]!r}")
        return frame[list(step["columns"])]
    if op == "rename":
        return frame.rename(columns=dict(step["columns"]))
    if op == "sort":
        by = list(step["by"])
        return frame.sort_values(by, ascending=not step.get("descending", False)).reset_index(
            drop=True
        )
    # derive
    frame = frame.copy()
    func, column, args = step["func"], step["column"], list(step.get("args", []))
    if func == "constant":
        frame[column] = fill(str(step["value"]), params)
    elif func in ("upper", "lower"):
        text = frame[args[0]].astype(str)
        frame[column] = text.str.upper() if func == "upper" else text.str.lower()
    elif func == "concat":
        parts = [frame[a].astype(str) if a in frame.columns else fill(str(a), params) for a in args]
        result = parts[0]
        for part in parts[1:]:
            result = result + part
        frame[column] = result
    else:
        left, right = _operand(frame, args[0]), _operand(frame, args[1])
        if func == "multiply":
            value = left * right
        elif func == "add":
            value = left + right
        elif func == "subtract":
            value = left - right
        else:
            value = left / right
        frame[column] = value.round(4) if isinstance(value, pd.Series) else value
    return frame


def _bad(path: Path, key: str, message: str) -> ConfigError:
    return ConfigError(message, path=str(path), key=key)


def _check_step(path: Path, key: str, step: Any) -> Mapping[str, Any]:
    if not isinstance(step, dict) or step.get("op") not in _OPS:
        raise _bad(path, key, f"each recipe step needs op = one of {', '.join(_OPS)}.")
    op = step["op"]
    required = {
        "filter": ("column", "value"),
        "select": ("columns",),
        "rename": ("columns",),
        "sort": ("by",),
        "derive": ("column", "func"),
    }[op]
    for name in required:
        if name not in step:
            raise _bad(path, f"{key}.{name}", f"a {op} step needs {name!r}.")
    if op == "filter" and step.get("cmp", "eq") not in _CMPS:
        raise _bad(path, f"{key}.cmp", f"use one of {', '.join(_CMPS)}.")
    if op == "derive" and step["func"] not in _FUNCS:
        raise _bad(path, f"{key}.func", f"use one of {', '.join(_FUNCS)}.")
    return dict(step)


def load_catalog(path: Path | None = None) -> dict[int, Dataset]:
    """Load a catalog TOML file (default: the packaged one); raises ConfigError."""
    path = path or DEFAULT_CATALOG
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the catalog: {exc.strerror}.", path=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}.", path=str(path)) from exc
    tables = data.get("datasets")
    if not isinstance(tables, dict) or not tables:
        raise _bad(path, "datasets", "the catalog needs at least one [datasets.<id>] table.")
    catalog: dict[int, Dataset] = {}
    for raw_id, table in tables.items():
        key = f"datasets.{raw_id}"
        if not str(raw_id).isdigit() or not isinstance(table, dict):
            raise _bad(path, key, "dataset keys must be integer recipe ids, e.g. [datasets.33].")
        if not isinstance(table.get("source"), str):
            raise _bad(path, f"{key}.source", "each dataset needs a source CSV path.")
        steps = table.get("recipe", [])
        outputs = table.get("outputs", [])
        if not isinstance(steps, list) or not isinstance(outputs, list):
            raise _bad(path, key, "recipe and outputs must be arrays of tables.")
        catalog[int(raw_id)] = Dataset(
            id=int(raw_id),
            name=str(table.get("name", f"recipe-{raw_id}")),
            source=table["source"],
            base_dir=path.parent,
            parameters={str(k): str(v) for k, v in table.get("parameters", {}).items()},
            outputs=tuple(dict(o) for o in outputs),
            recipe=tuple(_check_step(path, f"{key}.recipe[{i}]", s) for i, s in enumerate(steps)),
        )
    return catalog


@dataclass(frozen=True)
class Flow:
    """One flow: a name and the recipes (wrangledDataset ids) whose outputs a run produces."""

    id: int
    name: str
    recipes: tuple[int, ...]


def load_flows(
    path: Path | None = None, datasets: Mapping[int, Dataset] | None = None
) -> dict[int, Flow]:
    """The ``[flows.<id>]`` tables of a catalog (none is fine); raises ConfigError."""
    path = path or DEFAULT_CATALOG
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the catalog: {exc}.", path=str(path)) from exc
    tables = data.get("flows", {})
    if not isinstance(tables, dict):
        raise _bad(path, "flows", "flows must be tables, e.g. [flows.12].")
    datasets = datasets if datasets is not None else load_catalog(path)
    flows: dict[int, Flow] = {}
    for raw_id, table in tables.items():
        key = f"flows.{raw_id}"
        if not str(raw_id).isdigit() or not isinstance(table, dict):
            raise _bad(path, key, "flow keys must be integer flow ids, e.g. [flows.12].")
        recipes = table.get("recipes")
        if (
            not isinstance(recipes, list)
            or not recipes
            or not all(isinstance(r, int) and r in datasets for r in recipes)
        ):
            raise _bad(
                path, f"{key}.recipes", "list the flow's recipes by dataset id, e.g. [33, 1]."
            )
        names = [datasets[r].name for r in recipes]
        if len(set(names)) != len(names):
            raise _bad(path, f"{key}.recipes", "a flow's recipes need distinct names.")
        flows[int(raw_id)] = Flow(
            int(raw_id), str(table.get("name", f"flow-{raw_id}")), tuple(recipes)
        )
    return flows


@dataclass(frozen=True)
class Plan:
    """One plan: a name and the flows its tasks run."""

    id: int
    name: str
    flows: tuple[int, ...]


def load_plans(
    path: Path | None = None, flows: Mapping[int, Flow] | None = None
) -> dict[int, Plan]:
    """The ``[plans.<id>]`` tables of a catalog (none is fine); raises ConfigError."""
    path = path or DEFAULT_CATALOG
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the catalog: {exc}.", path=str(path)) from exc
    tables = data.get("plans", {})
    if not isinstance(tables, dict):
        raise _bad(path, "plans", "plans must be tables, e.g. [plans.5].")
    flows = flows if flows is not None else load_flows(path)
    plans: dict[int, Plan] = {}
    for raw_id, table in tables.items():
        key = f"plans.{raw_id}"
        if not str(raw_id).isdigit() or not isinstance(table, dict):
            raise _bad(path, key, "plan keys must be integer plan ids, e.g. [plans.5].")
        ids = table.get("flows")
        if (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(f, int) and f in flows for f in ids)
        ):
            raise _bad(path, f"{key}.flows", "list the plan's flows by flow id, e.g. [12, 13].")
        plans[int(raw_id)] = Plan(int(raw_id), str(table.get("name", f"plan-{raw_id}")), tuple(ids))
    return plans

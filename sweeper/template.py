"""Render the ``overrides`` template into the exact ``POST /v4/jobGroups`` body; path safety.

Placeholders in any string of the overrides: ``{Param}`` (the string sent for that parameter),
``{run_id}`` and ``{combo_id}``; ``{Param:%Y/%m/%d}`` writes a date or datetime parameter with a
strftime pattern. ``{{`` and ``}}`` are literal braces. No other format spec or conversion is
taken: how a parameter's value is written is its axis's ``format``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, time
from typing import Any
from urllib.parse import unquote

from sweeper.errors import MatrixError
from sweeper.matrix import Combination, MatrixSpec, did_you_mean, visible

BUILTIN_FIELDS = ("run_id", "combo_id")
WRITE_SETTINGS_KEYS = ("writesettings", "writeSettings")

# A recipe sweep's overrides.writesettings[i].path, or a flow's overrides.<recipe>.writesettings...
_PATH_KEY = re.compile(r"overrides\.(?:.+\.)?(?:writesettings|writeSettings)\[\d+\]\.path")

Piece = tuple[str, str | None, str]  # literal text, a placeholder name (or None), its pattern


def _walk(value: Any, key: str) -> Iterator[tuple[str, str]]:
    """Every string in a nested template and its key path (``overrides.writesettings[0].path``)."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _walk(v, f"{key}[{i}]")


def _pieces(text: str, key: str, source: str | None = None) -> list[Piece]:
    """The literal text and placeholders of one template string; MatrixError if malformed."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise MatrixError(
            f"The template {text!r} is malformed ({exc}); write {{{{ and }}}} for literal braces.",
            path=source,
            key=key,
        ) from None
    pieces: list[Piece] = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            pieces.append((literal, None, ""))
            continue
        if not name:
            raise MatrixError(
                f"The template {text!r} has an empty placeholder {{}}; name a parameter, e.g. "
                "{Region}.",
                path=source,
                key=key,
            )
        # Only a strftime pattern is taken: a format spec such as {Region:>200000000} would let a
        # config allocate without bound, and a conversion such as !r would send Python syntax.
        if conversion is not None or (spec and ("%" not in spec or "{" in spec)):
            written = (
                visible(name)
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
            )
            raise MatrixError(
                f"The placeholder {{{written}}} in {text!r} has a format spec or conversion, but "
                f"placeholders take no format spec: write {{{visible(name)}}}. To change how a "
                'parameter\'s values are sent, give its axis a format (e.g. format = "02d"); a '
                "date or datetime parameter may take a strftime pattern, e.g. {day:%Y/%m/%d}.",
                path=source,
                key=key,
            )
        pieces.append((literal, name, spec or ""))
    return pieces


def check_template(overrides: Mapping[str, Any], spec: MatrixSpec) -> None:
    """Fail at load time if a placeholder is malformed, has a format spec or names no parameter."""
    known = [*spec.param_names, *BUILTIN_FIELDS]
    source = spec.source or None
    for key, text in _walk(overrides, "overrides"):
        for _, name, _ in _pieces(text, key, source):
            if name is not None and name not in known:
                raise MatrixError(
                    f"The placeholder {{{visible(name)}}} names no parameter."
                    f"{did_you_mean(name, known)} "
                    f"Known: {', '.join(known)}.",
                    path=source,
                    key=key,
                )


def _unsafe(text: str) -> str | None:
    """Why a value cannot be one component of an output path, or None if it can."""
    for candidate in {text, unquote(text), unicodedata.normalize("NFKC", text)}:
        if candidate.strip() in ("", ".", ".."):
            return "is empty, '.' or '..'"
        if "/" in candidate or "\\" in candidate:
            return "contains a path separator"
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in candidate):
            return "contains NUL or a control character"
    return None


def _describe_combo(combo: Combination) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in combo.params.items())


def _render_field(
    name: str, pattern: str, combo: Combination, run_id: str, key: str, in_path: bool
) -> str:
    """One placeholder's text; a value going into an output path must be one path component."""
    if name == "run_id":
        value: object = run_id
        text = run_id
    elif name == "combo_id":
        value = text = combo.combo_id
    elif name in combo.params:
        text = combo.params[name]
        value = combo.values.get(name, text)
    else:
        raise MatrixError(
            f"The placeholder {{{name}}} has no value in combination {combo.combo_id} "
            f"({_describe_combo(combo)}): an include added a combination without it. Add "
            f"{name} to that include, or drop the placeholder.",
            key=key,
        )
    if pattern:
        if not isinstance(value, (date, time)):
            raise MatrixError(
                f"The placeholder {{{name}:{pattern}}} writes a date with a strftime pattern, but "
                f"{name} is {text!r} in combination {combo.combo_id}, not a date or datetime. "
                f"Write {{{name}}}.",
                key=key,
            )
        # A strftime pattern's own slashes ({day:%Y/%m/%d}) are the template author's: unchecked.
        return value.strftime(pattern)
    if in_path:
        reason = _unsafe(text)
        if reason:
            raise MatrixError(
                f"The value {text!r} of {{{name}}} {reason}, so the output path would leave its "
                f"directory; combination {combo.combo_id} ({_describe_combo(combo)}). Change the "
                "value, or put it in a part of the path that is not templated.",
                key=key,
            )
    return text


def _render(value: Any, combo: Combination, run_id: str, key: str) -> Any:
    """``value`` with every string's placeholders filled in (tables -> dicts, arrays -> lists)."""
    if isinstance(value, str):
        in_path = _PATH_KEY.fullmatch(key) is not None
        return "".join(
            literal + (_render_field(name, spec, combo, run_id, key, in_path) if name else "")
            for literal, name, spec in _pieces(value, key)
        )
    if isinstance(value, Mapping):
        return {k: _render(v, combo, run_id, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_render(v, combo, run_id, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def _output_paths(overrides: Mapping[str, Any]) -> tuple[str, ...]:
    """The write settings' paths in rendered overrides (collision checks, output checks)."""
    return tuple(
        entry["path"]
        for spelling in WRITE_SETTINGS_KEYS
        for entry in overrides.get(spelling) or ()
        if isinstance(entry, Mapping) and isinstance(entry.get("path"), str)
    )


@dataclass(frozen=True)
class RequestTemplate:
    """One sweep's request: each combination's POST body and output paths.

    A recipe's body is ``POST /v4/jobGroups``'s; a flow's (``flow=True``) is
    ``POST /v4/flows/{id}/run``'s: ``runParameters``, ``wrangledDatasetIds`` (``outputs``),
    ``overrides`` keyed by recipe name, and the top-level ``execution`` / ``ignoreRecipeErrors``.
    A plan's (``plan=True``) is ``POST /v4/plans/{id}/run``'s: empty.
    """

    dataset: int
    overrides: Mapping[str, Any]
    ranfrom: str | None = None  # sweep.ranfrom: None = not sent, "null" = sent as JSON null
    flow: bool = False
    outputs: tuple[int, ...] = ()
    plan: bool = False  # a plan's body is empty: the documented runPlan body has no parameters

    def _render_flow(
        self, combo: Combination, run_id: str
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        body: dict[str, Any] = {}
        if combo.params:
            data = [{"key": k, "value": v} for k, v in combo.params.items()]
            body["runParameters"] = {"overrides": {"data": data}}
        if self.outputs:
            body["wrangledDatasetIds"] = list(self.outputs)
        paths: list[str] = []
        per_recipe: dict[str, Any] = {}
        for key, value in _render(self.overrides, combo, run_id, "overrides").items():
            if isinstance(value, Mapping):
                per_recipe[key] = value
                paths += _output_paths(value)
            else:
                body[key] = value
        if per_recipe:
            body["overrides"] = per_recipe
        return body, tuple(paths)

    def render(self, combo: Combination, run_id: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The exact body for one combination (plain dicts and lists) and its output paths."""
        if self.plan:
            return {}, ()
        if self.flow:
            return self._render_flow(combo, run_id)
        body: dict[str, Any] = {"wrangledDataset": {"id": self.dataset}}
        paths: tuple[str, ...] = ()
        if self.overrides:
            overrides = _render(self.overrides, combo, run_id, "overrides")
            body["overrides"] = overrides
            paths = _output_paths(overrides)
        if combo.params:
            data = [{"key": k, "value": v} for k, v in combo.params.items()]
            body["runParameters"] = {"overrides": {"data": data}}
        if self.ranfrom is not None:
            body["ranfrom"] = None if self.ranfrom == "null" else self.ranfrom
        return body, paths

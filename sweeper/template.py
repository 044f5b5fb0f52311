"""Render the ``overrides`` template into the exact ``POST /v4/jobGroups`` body; path safety.

Placeholders in any string of the overrides: ``{Param}`` (the string sent for that parameter),
``{Param:%Y/%m/%d}`` (strftime for date values, a Python format spec otherwise), ``{run_id}`` and
``{combo_id}``. ``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, time
from typing import Any
from urllib.parse import unquote

from sweeper.errors import MatrixError
from sweeper.matrix import Combination, MatrixSpec, did_you_mean

BUILTIN_FIELDS = ("run_id", "combo_id")
WRITE_SETTINGS_KEYS = ("writesettings", "writeSettings")

_formatter = string.Formatter()
_PATH_KEY = re.compile(r"overrides\.(?:writesettings|writeSettings)\[\d+\]\.path")


@dataclass(frozen=True)
class Collision:
    """Two combinations render the same output path (or request)."""

    path: str
    first_combo_id: str
    combo_id: str


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


@functools.lru_cache(maxsize=4096)
def _fields(text: str, key: str) -> tuple[tuple[str, str, str | None], ...]:
    """``(literal, field, spec)`` pieces of one template string; MatrixError if malformed."""
    try:
        parsed = list(_formatter.parse(text))
    except ValueError as exc:
        raise MatrixError(
            f"The template {text!r} is malformed ({exc}); write {{{{ and }}}} for literal braces.",
            key=key,
        ) from None
    pieces: list[tuple[str, str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            pieces.append((literal, "", None))
            continue
        if not name:
            raise MatrixError(
                f"The template {text!r} has an empty placeholder {{}}; name a parameter, e.g. "
                "{Region}.",
                key=key,
            )
        if conversion or (spec and ("{" in spec or "}" in spec)):
            raise MatrixError(
                f"The placeholder {{{name}}} in {text!r} uses a conversion or a nested field, "
                "which templates do not support; write {Param} or {Param:format}.",
                key=key,
            )
        pieces.append((literal, name, spec or None))
    return tuple(pieces)


@functools.lru_cache(maxsize=4096)
def _is_path(key: str) -> bool:
    return _PATH_KEY.fullmatch(key) is not None


def check_template(overrides: Mapping[str, Any], spec: MatrixSpec) -> None:
    """Fail before any expansion if a placeholder is malformed or names no parameter."""
    known = list(spec.param_names) + list(BUILTIN_FIELDS)
    for key, text in _walk(overrides, "overrides"):
        for _, name, _ in _fields(text, key):
            if name and name not in known:
                raise MatrixError(
                    f"The placeholder {{{name}}} names no parameter.{did_you_mean(name, known)} "
                    f"Known: {', '.join(known)}.",
                    path=spec.source or None,
                    key=key,
                )


@functools.lru_cache(maxsize=65536)  # parameter values repeat across combinations
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


def _render_field(
    name: str, spec: str | None, combo: Combination, run_id: str, key: str, path: bool
) -> str:
    if name == "run_id":
        value: object = run_id
        text = run_id
    elif name == "combo_id":
        value = text = combo.combo_id
    elif name in combo.params:
        value, text = combo.values.get(name, combo.params[name]), combo.params[name]
    else:
        raise _missing_value(name, combo, key)
    templated_date = spec is not None and isinstance(value, (date, time))
    if spec is not None:
        try:
            text = value.strftime(spec) if isinstance(value, (date, time)) else format(value, spec)
        except (ValueError, TypeError) as exc:
            raise MatrixError(
                f"Cannot format {{{name}:{spec}}} with the value {text!r}: {exc}.", key=key
            ) from None
    # A strftime pattern's own slashes are the template author's; only values are checked.
    if path and not templated_date:
        reason = _unsafe(text)
        if reason:
            raise _unsafe_component(text, name, reason, combo, key)
    return text


def _missing_value(name: str, combo: Combination, key: str) -> MatrixError:
    return MatrixError(
        f"The placeholder {{{name}}} has no value in combination {combo.combo_id} "
        f"({_describe_combo(combo)}): an include added a combination without it. Add "
        f"{name} to that include, or drop the placeholder.",
        key=key,
    )


def _unsafe_component(
    text: str, name: str, reason: str, combo: Combination, key: str
) -> MatrixError:
    return MatrixError(
        f"The value {text!r} of {{{name}}} {reason}, so the output path would leave its "
        f"directory; combination {combo.combo_id} ({_describe_combo(combo)}). Change the "
        "value, or put it in a part of the path that is not templated.",
        key=key,
    )


def _describe_combo(combo: Combination) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in combo.params.items())


def render_string(text: str, combo: Combination, run_id: str, *, key: str = "overrides") -> str:
    """One template string with its placeholders filled in."""
    path = _is_path(key)
    out: list[str] = []
    for literal, name, spec in _fields(text, key):
        out.append(literal)
        if name:
            out.append(_render_field(name, spec, combo, run_id, key, path))
    return "".join(out)


Renderer = Callable[[Combination, str], Any]
FieldRenderer = Callable[[Combination, str], str]


def _compile_field(name: str, spec: str | None, key: str, path: bool) -> FieldRenderer:
    """One placeholder, specialised once so that rendering it does not re-decide what it is.

    Formatted placeholders (``{day:%Y/%m}``) and the built-ins keep the general renderer; a plain
    parameter, the common case, reads its text directly. Values in an output path are still
    checked, every time.
    """
    if spec is not None or name in BUILTIN_FIELDS:
        return lambda combo, run_id: _render_field(name, spec, combo, run_id, key, path)

    def param(combo: Combination, run_id: str) -> str:
        try:
            text = combo.params[name]
        except KeyError:
            raise _missing_value(name, combo, key) from None
        if path:
            reason = _unsafe(text)
            if reason:
                raise _unsafe_component(text, name, reason, combo, key)
        return text

    return param


def _compile_text(text: str, key: str) -> Renderer:
    """A template string -> a function rendering it; malformed templates fail here, once."""
    path = _is_path(key)
    head = ""  # the literal text before the first placeholder
    steps: list[tuple[FieldRenderer, str]] = []  # each placeholder and the literal text after it
    for literal, name, spec in _fields(text, key):
        if steps:
            steps[-1] = (steps[-1][0], steps[-1][1] + literal)
        else:
            head += literal
        if name:
            steps.append((_compile_field(name, spec, key, path), ""))

    def render_text(combo: Combination, run_id: str) -> str:
        out = [head]
        for field, literal in steps:
            out.append(field(combo, run_id))
            out.append(literal)
        return "".join(out)

    return render_text


def _constant(value: Any) -> bool:
    """Whether rendering returns ``value`` itself: a scalar, or a string without placeholders."""
    if isinstance(value, str):
        return "{" not in value and "}" not in value
    return not isinstance(value, (Mapping, list, tuple))


def _compile(value: Any, key: str) -> Renderer:
    """A function (combination, run_id) -> rendered value, doing the template parsing once."""
    if isinstance(value, str) and not _constant(value):
        return _compile_text(value, key)
    if isinstance(value, Mapping):
        # A copy of the table, with the entries that vary rendered into their places (a fresh
        # dict per body, in the template's key order).
        skeleton = dict(value)
        parts = [(k, _compile(v, f"{key}.{k}")) for k, v in value.items() if not _constant(v)]

        def render_table(combo: Combination, run_id: str) -> dict[str, Any]:
            out = skeleton.copy()
            for k, part in parts:
                out[k] = part(combo, run_id)
            return out

        return render_table
    if isinstance(value, (list, tuple)):
        items = [_compile(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return lambda combo, run_id: [item(combo, run_id) for item in items]
    return lambda combo, run_id: value  # a scalar, or a string without placeholders


_compiled: dict[int, tuple[Mapping[str, Any], Renderer]] = {}


def _renderer(overrides: Mapping[str, Any]) -> Renderer:
    """The compiled template of ``overrides``, compiled once per template object."""
    cached = _compiled.get(id(overrides))
    if cached is None or cached[0] is not overrides:
        cached = (overrides, _compile(overrides, "overrides"))
        _compiled.clear()  # one sweep's template at a time is all a process renders
        _compiled[id(overrides)] = cached
    return cached[1]


def render_request(
    dataset: int, overrides: Mapping[str, Any], combo: Combination, run_id: str
) -> dict[str, Any]:
    """The exact ``POST /v4/jobGroups`` body for one combination (plain dicts and lists)."""
    rendered = _renderer(overrides)(combo, run_id) if overrides else None
    return _body(dataset, rendered, combo)


def _body(dataset: int, overrides: dict[str, Any] | None, combo: Combination) -> dict[str, Any]:
    body: dict[str, Any] = {"wrangledDataset": {"id": dataset}}
    if overrides is not None:
        body["overrides"] = overrides
    if combo.params:
        data = [{"key": k, "value": v} for k, v in combo.params.items()]
        body["runParameters"] = {"overrides": {"data": data}}
    return body


class RequestTemplate:
    """One sweep's request template, compiled once: each combination's body and output paths.

    The planner renders every combination through this. The template fixes where the output
    paths are in every body, so they are read from there rather than searched for.
    """

    def __init__(self, dataset: int, overrides: Mapping[str, Any]) -> None:
        self.dataset = dataset
        self._render = _compile(overrides, "overrides") if overrides else None
        self._path_slots = _path_slots(overrides)

    def render(self, combo: Combination, run_id: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The exact body for one combination (as ``render_request``) and its output paths."""
        if self._render is None:
            return _body(self.dataset, None, combo), ()
        overrides = self._render(combo, run_id)
        paths = tuple([overrides[spelling][i]["path"] for spelling, i in self._path_slots])
        return _body(self.dataset, overrides, combo), paths


def _path_slots(overrides: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """``(spelling, index)`` of each write setting whose path ``output_paths`` would return.

    Rendering keeps a template's shape (strings stay strings, lists stay lists), so these are
    the same places in every rendered body.
    """
    slots: list[tuple[str, int]] = []
    for spelling in WRITE_SETTINGS_KEYS:
        entries = overrides.get(spelling)
        if isinstance(entries, (list, tuple)):
            for i, entry in enumerate(entries):
                if isinstance(entry, Mapping) and isinstance(entry.get("path"), str):
                    slots.append((spelling, i))
    return tuple(slots)


def output_paths(body: Mapping[str, Any]) -> list[str]:
    """The writesettings paths of a rendered body, for collision checks."""
    overrides = body.get("overrides") or {}
    paths: list[str] = []
    for spelling in WRITE_SETTINGS_KEYS:
        for entry in overrides.get(spelling) or ():
            if isinstance(entry, Mapping) and isinstance(entry.get("path"), str):
                paths.append(entry["path"])
    return paths


def find_collisions(rendered_paths: Iterable[tuple[str, str]]) -> list[Collision]:
    """Paths (or canonical bodies) rendered by more than one combination.

    Takes ``(combo_id, path)`` pairs as they stream by; keeps one dict of path -> first combo.
    """
    first: dict[str, str] = {}
    found: list[Collision] = []
    for cid, path in rendered_paths:
        owner = first.setdefault(path, cid)
        if owner != cid:
            found.append(Collision(path, owner, cid))
    return found


def placeholders(overrides: Mapping[str, Any]) -> Sequence[str]:
    """Every placeholder name used in the template, in order of first use."""
    names: dict[str, None] = {}
    for key, text in _walk(overrides, "overrides"):
        for _, name, _ in _fields(text, key):
            if name:
                names.setdefault(name, None)
    return list(names)

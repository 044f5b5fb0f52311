"""The ``[matrix]`` TOML table -> a validated MatrixSpec (the model is in sweeper.matrix).

Reads the CSV and glob inputs once, at parse time. Grammar (docs/config.md):

* ``Name = [v1, v2]`` or ``Name = { values = [...], format = "..." }``: a plain list axis;
* ``Name = { start = 1, end = 9, step = 2 }``: an integer range, end inclusive;
* ``Name = { start = 2024-01-01, end = "today", step = "1d", format = "%Y%m%d" }``: a date (or
  datetime) range, end inclusive, steps ``Nd``/``Nw``/``Nmo`` (datetimes also ``Nh``,
  ``Nmin``, ``Ns``), relative anchors ``today[+-N<unit>]`` / ``now[+-N<unit>]`` resolved
  against ``as_of``;
* ``Name = { csv = "file.csv", column = "col" }``: the distinct non-empty values of a CSV column;
* ``Name = { glob = "landing/orders-*.csv" }``: the text the single ``*`` matched, per file;
* ``rows = "params.csv"``: each CSV row is one combination of its columns;
* ``[[matrix.zip]]``: axes that vary together (equal lengths);
* ``[[matrix.exclude]]`` / ``[[matrix.include]]``: GitHub Actions' rules, exactly.

Rows, zip groups and axes combine by product, in the order they are written.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sweeper.errors import MatrixError
from sweeper.matrix import (
    HIDDEN_CHARACTERS,
    Anchor,
    Axis,
    AxisFactor,
    Cell,
    DateRangeAxis,
    Factor,
    IncludeEntry,
    IntRangeAxis,
    MatrixSpec,
    Row,
    RowsFactor,
    Step,
    ValuesAxis,
    ZipFactor,
    _factor_axes,
    _text,
    canonical,
    describe,
    did_you_mean,
    visible,
)

RESERVED_KEYS = ("rows", "zip", "include", "exclude")
VALUES_KEYS = ("values", "format")
RANGE_KEYS = ("start", "end", "step", "format")
CSV_KEYS = ("csv", "column")
GLOB_KEYS = ("glob",)
AXIS_TABLE_KEYS = tuple(dict.fromkeys(VALUES_KEYS + RANGE_KEYS + CSV_KEYS + GLOB_KEYS))

_SCALARS = (str, int, float, bool, date, datetime, time)
_RELATIVE = re.compile(r"^\s*(today|now)\s*(?:([+-])\s*(\d+)\s*(mo|min|d|w|h|s))?\s*$")
_STEP = re.compile(r"^\s*(\d+)\s*(mo|min|d|w|h|s)\s*$")


# ---------------------------------------------------------------- steps and anchors


def _parse_step(raw: object, key: str, source: Path) -> Step:
    match = _STEP.match(raw) if isinstance(raw, str) else None
    if not match or int(match.group(1)) <= 0:
        raise MatrixError(
            f'Expected a step like "1d", "1w", "1mo" (or "6h", "30min" for datetimes), '
            f"got {describe(raw)}.",
            path=str(source),
            key=key,
        )
    return Step(int(match.group(1)), match.group(2))


def _parse_anchor(raw: object, key: str, source: Path) -> Anchor:
    if isinstance(raw, (date, datetime)):
        return Anchor(fixed=raw)
    match = _RELATIVE.match(raw) if isinstance(raw, str) else None
    if not match:
        raise MatrixError(
            f'Expected a TOML date (2024-01-31), a datetime, or a relative anchor like "today", '
            f'"today-7d", "today-1mo" or "now-6h", got {describe(raw)}.',
            path=str(source),
            key=key,
        )
    base, sign, amount, unit = match.groups()
    if base == "today" and unit in ("h", "min", "s"):
        raise MatrixError(
            f"'today' is a date, so its offset must be in d, w or mo, not '{unit}'; "
            "use 'now' for a datetime range.",
            path=str(source),
            key=key,
        )
    offset = Step(int(amount), unit) if amount is not None else None
    return Anchor(base=base, sign=-1 if sign == "-" else 1, offset=offset)


# ---------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, source: Path, base_dir: Path) -> None:
        self.source = source
        self.path = str(source)
        self.base_dir = base_dir
        self.names: list[str] = []
        self.formats: dict[str, str | None] = {}

    def error(self, message: str, key: str) -> MatrixError:
        return MatrixError(message, path=self.path, key=key)

    def check_name(self, name: object, key: str) -> None:
        """A parameter name is a non-empty string of visible characters."""
        if not isinstance(name, str) or not name.strip():
            raise self.error("A parameter name must be a non-empty string.", key)
        hidden = HIDDEN_CHARACTERS.findall(name)
        if hidden:
            codes = ", ".join(dict.fromkeys(f"U+{ord(c):04X}" for c in hidden))
            raise self.error(
                f"The parameter name '{visible(name)}' contains {codes}: a control, "
                "bidirectional or zero-width character, which does not show (or reorders the "
                "text around it) in the config, the ledger and the platform. Rename the "
                "parameter using visible characters only.",
                visible(key),
            )

    def claim(self, name: str, key: str) -> None:
        self.check_name(name, key)
        if name in self.names:
            raise self.error(
                f"The parameter '{name}' is defined twice (as an axis, a zip member or a rows "
                "column); keep one definition.",
                key,
            )
        self.names.append(name)

    def check_unknown(self, table: Mapping[str, Any], allowed: Sequence[str], key: str) -> None:
        for k in table:
            if k not in allowed:
                raise self.error(
                    f"Unknown key '{k}'.{did_you_mean(k, allowed)} Allowed here: "
                    f"{', '.join(allowed)}.",
                    f"{key}.{k}",
                )

    def parse(self, table: Mapping[str, Any]) -> MatrixSpec:
        if not isinstance(table, Mapping):
            raise self.error(f"[matrix] must be a table, got {describe(table)}.", "matrix")
        factors: list[Factor] = []
        for name, raw in table.items():
            key = f"matrix.{name}"
            if name == "rows":
                factors.append(self.parse_rows(raw, key))
            elif name == "zip":
                groups = raw if isinstance(raw, list) else [raw]
                for i, group in enumerate(groups):
                    factors.append(self.parse_zip(group, i))
            elif name in ("include", "exclude"):
                continue
            else:
                self.claim(name, key)
                factors.append(AxisFactor(self.parse_axis(name, raw, key)))
        axis_names = tuple(self.names)
        exclude = tuple(
            self.parse_exclude(e, i)
            for i, e in enumerate(self.entries(table.get("exclude", []), "exclude"))
        )
        include = self.parse_includes(self.entries(table.get("include", []), "include"))
        for factor in factors:
            if not any(
                isinstance(a, DateRangeAxis) and (a.start.relative or a.end.relative)
                for a in _factor_axes(factor)
            ):
                factor.size(datetime(2000, 1, 1))  # static problems (zip lengths) fail now
        extra = [k for e in include for k in e.params if k not in axis_names]
        return MatrixSpec(
            param_names=axis_names + tuple(dict.fromkeys(extra)),
            factors=tuple(factors),
            exclude=exclude,
            include=include,
            source=self.path,
            axis_names=axis_names,
        )

    # -- axes

    def parse_axis(self, name: str, raw: Any, key: str) -> Axis:
        if isinstance(raw, list):
            return self.values_axis(name, raw, None, key)
        if not isinstance(raw, Mapping):
            raise self.error(
                f"An axis is an array of values or a table (values, start/end/step, csv/column or "
                f"glob), got {describe(raw)}. Write {name} = [{canonical_or_repr(raw)}] for a "
                "single value.",
                key,
            )
        fmt = raw.get("format")
        if fmt is not None and (not isinstance(fmt, str) or not fmt):
            raise self.error(f"Expected a non-empty string, got {describe(fmt)}.", f"{key}.format")
        if "values" in raw:
            self.check_unknown(raw, VALUES_KEYS, key)
            if not isinstance(raw["values"], list):
                raise self.error(
                    f"Expected an array, got {describe(raw['values'])}.", f"{key}.values"
                )
            return self.values_axis(name, raw["values"], fmt, key)
        if "start" in raw:
            self.check_unknown(raw, RANGE_KEYS, key)
            return self.range_axis(name, raw, fmt, key)
        if "csv" in raw:
            self.check_unknown(raw, CSV_KEYS, key)
            return self.csv_axis(name, raw, key)
        if "glob" in raw:
            self.check_unknown(raw, GLOB_KEYS, key)
            return self.glob_axis(name, raw["glob"], key)
        self.check_unknown(raw, AXIS_TABLE_KEYS, key)
        raise self.error(
            "An axis table needs one of 'values', 'start' (a range), 'csv' or 'glob'.", key
        )

    def values_axis(self, name: str, raw: list[Any], fmt: str | None, key: str) -> ValuesAxis:
        if not raw:
            raise self.error(
                f"The axis '{name}' is empty. Give it at least one value, or remove it.", key
            )
        cells: list[Cell] = []
        seen: set[str] = set()
        for i, value in enumerate(raw):
            if not isinstance(value, _SCALARS):
                raise self.error(
                    "Axis values must be strings, numbers, booleans, dates or times, got "
                    f"{describe(value)}.",
                    f"{key}[{i}]",
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise self.error(f"Cannot send {value!r}; use a finite number.", f"{key}[{i}]")
            text = self.format_value(value, fmt, f"{key}[{i}]")
            if text in seen:
                raise self.error(
                    f"The value '{text}' appears twice in the axis '{name}'; remove the duplicate.",
                    f"{key}[{i}]",
                )
            seen.add(text)
            cells.append((value, text))
        self.formats[name] = fmt
        return ValuesAxis(name, tuple(cells), fmt)

    def format_value(self, value: object, fmt: str | None, key: str) -> str:
        try:
            return _text(value, fmt)
        except (ValueError, TypeError) as exc:
            raise self.error(
                f"The format {fmt!r} does not apply to {describe(value)}: {exc}. Use a strftime "
                "pattern for dates and a Python format spec (e.g. '02d') for numbers.",
                key.rsplit("[", 1)[0] + ".format",
            ) from None

    def range_axis(self, name: str, raw: Mapping[str, Any], fmt: str | None, key: str) -> Axis:
        if "end" not in raw:
            raise self.error(
                "A range needs an explicit 'end' (inclusive): the last value to run.", key
            )
        start, end = raw["start"], raw["end"]
        self.formats[name] = fmt
        if isinstance(start, int) and not isinstance(start, bool):
            step = raw.get("step", 1)
            for k, v in (("end", end), ("step", step)):
                if not isinstance(v, int) or isinstance(v, bool):
                    raise self.error(
                        f"An integer range needs an integer '{k}', got {describe(v)}.",
                        f"{key}.{k}",
                    )
            if step <= 0:
                raise self.error(f"The step must be positive, got {step}.", f"{key}.step")
            if end < start:
                raise self.error(
                    f"This range is empty: start {start} is after end {end}. Swap them.", key
                )
            axis_i = IntRangeAxis(name, start, end, step, fmt)
            self.format_value(start, fmt, f"{key}.start")
            return axis_i
        start_a = _parse_anchor(start, f"{key}.start", self.source)
        end_a = _parse_anchor(end, f"{key}.end", self.source)
        step_d = _parse_step(raw.get("step", "1d"), f"{key}.step", self.source)
        axis_d = DateRangeAxis(name, start_a, end_a, step_d, fmt, self.path)
        probe = datetime(2000, 1, 1, tzinfo=None)
        if not start_a.relative:
            self.format_value(start_a.resolve(probe), fmt, f"{key}.start")
        return axis_d

    def read_csv(self, raw: Any, key: str) -> tuple[Path, list[str], list[list[str]]]:
        if not isinstance(raw, str) or not raw:
            raise self.error(f"Expected a CSV file name, got {describe(raw)}.", key)
        path = self.base_dir / raw
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                body = [r for r in reader if any(c.strip() for c in r)]
        except OSError as exc:
            raise self.error(
                f"Cannot read the CSV file {path} ({exc.strerror or exc}). Paths of input files "
                "are relative to the config file's directory.",
                key,
            ) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise self.error(f"The CSV file {path} is not valid UTF-8 CSV: {exc}.", key) from None
        if not header:
            raise self.error(f"The CSV file {path} is empty; it needs a header row.", key)
        return path, [h.strip() for h in header], body

    def csv_axis(self, name: str, raw: Mapping[str, Any], key: str) -> ValuesAxis:
        path, header, body = self.read_csv(raw["csv"], f"{key}.csv")
        column = raw.get("column")
        if not isinstance(column, str):
            raise self.error(
                f'Name the CSV column to read with column = "..." (columns: {", ".join(header)}).',
                f"{key}.column",
            )
        if column not in header:
            raise self.error(
                f"The CSV file {path} has no column '{column}'.{did_you_mean(column, header)} "
                f"Columns: {', '.join(header)}.",
                f"{key}.column",
            )
        index = header.index(column)
        values = [r[index].strip() for r in body if index < len(r) and r[index].strip()]
        unique = list(dict.fromkeys(values))  # a column of a table repeats values: keep each once
        if not unique:
            raise self.error(f"The column '{column}' of {path} has no values.", key)
        self.formats[name] = None
        return ValuesAxis(name, tuple((v, v) for v in unique))

    def glob_axis(self, name: str, pattern: Any, key: str) -> ValuesAxis:
        if not isinstance(pattern, str) or pattern.count("*") != 1 or "**" in pattern:
            raise self.error(
                f"Expected a glob with exactly one '*' (the captured part), like "
                f'"landing/orders-*.csv", got {describe(pattern)}.',
                f"{key}.glob",
            )
        if any(c in pattern for c in "?[]"):
            raise self.error(
                "Only '*' is supported in a glob axis ('?' and '[...]' are not).", f"{key}.glob"
            )
        head, tail = pattern.split("*")
        regex = re.compile(re.escape(head) + r"([^/]+)" + re.escape(tail) + r"\Z")
        found = []
        for path in self.base_dir.glob(pattern):
            rel = path.relative_to(self.base_dir).as_posix()
            match = regex.match(rel)
            if match and path.is_file():
                found.append(match.group(1))
        values = sorted(set(found))
        if not values:
            raise self.error(
                f"No file matches {pattern!r} under {self.base_dir}, so the axis '{name}' is "
                "empty. Globs are relative to the config file's directory.",
                f"{key}.glob",
            )
        self.formats[name] = None
        return ValuesAxis(name, tuple((v, v) for v in values))

    # -- rows and zip

    def parse_rows(self, raw: Any, key: str) -> RowsFactor:
        path, header, body = self.read_csv(raw, key)
        if len(set(header)) != len(header) or not all(header):
            raise self.error(
                f"The header of {path} must name every column once (got {', '.join(header)}).",
                key,
            )
        for name in header:
            self.claim(name, key)
            self.formats[name] = None
        table: list[Row] = []
        seen: set[tuple[str, ...]] = set()
        for n, row in enumerate(body, start=2):
            if len(row) != len(header):
                raise self.error(
                    f"Row {n} of {path} has {len(row)} cells but the header has {len(header)}.",
                    key,
                )
            texts = tuple(c.strip() for c in row)
            if texts in seen:
                raise self.error(f"Row {n} of {path} repeats an earlier row; remove it.", key)
            seen.add(texts)
            table.append(tuple((t, t) for t in texts))
        if not table:
            raise self.error(f"The rows file {path} has a header but no rows.", key)
        return RowsFactor(tuple(header), tuple(table))

    def parse_zip(self, group: Any, index: int) -> ZipFactor:
        key = f"matrix.zip[{index}]"
        if not isinstance(group, Mapping) or len(group) < 1:
            raise self.error(f"Each [[matrix.zip]] is a table of axes, got {describe(group)}.", key)
        axes = []
        for name, raw in group.items():
            self.claim(name, f"{key}.{name}")
            axes.append(self.parse_axis(name, raw, f"{key}.{name}"))
        return ZipFactor(tuple(axes), self.path, index)

    # -- include / exclude

    def entries(self, raw: Any, kind: str) -> list[Mapping[str, Any]]:
        if isinstance(raw, Mapping):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(e, Mapping) for e in raw):
            raise self.error(
                f"Write [[matrix.{kind}]] tables (an array of tables), got {describe(raw)}.",
                f"matrix.{kind}",
            )
        return raw

    def entry_text(self, name: str, value: Any, key: str) -> str:
        if not isinstance(value, _SCALARS) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise self.error(
                f"Expected a single string, number, boolean or date, got {describe(value)}.", key
            )
        fmt = self.formats.get(name)
        if isinstance(value, str) or fmt is None:
            return canonical(value)
        return self.format_value(value, fmt, key)

    def parse_exclude(self, entry: Mapping[str, Any], index: int) -> Mapping[str, str]:
        key = f"matrix.exclude[{index}]"
        if not entry:
            raise self.error("An empty exclude would remove every combination; delete it.", key)
        out: dict[str, str] = {}
        for name, value in entry.items():
            self.check_name(name, f"{key}.{name}")
            if name not in self.names:
                raise self.error(
                    f"'{name}' is not an axis of this matrix.{did_you_mean(name, self.names)} "
                    "GitHub Actions would silently match nothing here; sweeper refuses so that a "
                    "typo cannot keep combinations you meant to drop. "
                    f"Axes: {', '.join(self.names)}.",
                    f"{key}.{name}",
                )
            out[name] = self.entry_text(name, value, f"{key}.{name}")
        return MappingProxyType(out)

    def parse_includes(self, raw: list[Mapping[str, Any]]) -> tuple[IncludeEntry, ...]:
        result: list[IncludeEntry] = []
        seen: dict[tuple[tuple[str, str], ...], int] = {}
        for index, entry in enumerate(raw):
            key = f"matrix.include[{index}]"
            if not entry:
                raise self.error("An empty include adds nothing; delete it.", key)
            params: dict[str, str] = {}
            values: dict[str, object] = {}
            for name, value in entry.items():
                self.check_name(name, f"{key}.{name}")
                params[name] = self.entry_text(name, value, f"{key}.{name}")
                values[name] = value
            ident = tuple(sorted(params.items()))
            if ident in seen:
                raise self.error(
                    f"This include repeats matrix.include[{seen[ident]}]; remove one.", key
                )
            seen[ident] = index
            result.append(IncludeEntry(MappingProxyType(params), MappingProxyType(values)))
        return tuple(result)


def canonical_or_repr(value: object) -> str:
    try:
        text = canonical(value)
    except TypeError:
        return repr(value)
    return f'"{text}"' if isinstance(value, str) else text


def parse_matrix(table: Mapping[str, Any], *, source: Path, base_dir: Path) -> MatrixSpec:
    """Validate a ``[matrix]`` table; CSV and glob inputs are read now, relative to ``base_dir``."""
    return _Parser(source, base_dir).parse(table)

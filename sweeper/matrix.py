"""The ``[matrix]`` table -> a MatrixSpec -> a stream of Combinations with stable ids.

Pure except for reading the CSV and glob inputs once, at parse time. Grammar (docs/config.md):

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

import calendar
import csv
import difflib
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sweeper.errors import ConfigError, MatrixError
from sweeper.identity import combo_id as _combo_id

RESERVED_KEYS = ("rows", "zip", "include", "exclude")
VALUES_KEYS = ("values", "format")
RANGE_KEYS = ("start", "end", "step", "format")
CSV_KEYS = ("csv", "column")
GLOB_KEYS = ("glob",)
AXIS_TABLE_KEYS = tuple(dict.fromkeys(VALUES_KEYS + RANGE_KEYS + CSV_KEYS + GLOB_KEYS))

Cell = tuple[object, str]  # (typed value, the string sent to the API)
Row = tuple[Cell, ...]

_SCALARS = (str, int, float, bool, date, datetime, time)
_RELATIVE = re.compile(r"^\s*(today|now)\s*(?:([+-])\s*(\d+)\s*(mo|min|d|w|h|s))?\s*$")
_STEP = re.compile(r"^\s*(\d+)\s*(mo|min|d|w|h|s)\s*$")
_FIXED_UNITS = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "min": timedelta(minutes=1),
    "s": timedelta(seconds=1),
}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest choice (case-insensitive), or an empty string."""
    options = list(choices)
    folded: dict[str, str] = {}
    for choice in options:
        folded.setdefault(choice.lower(), choice)  # the first spelling wins
    if word.lower() in folded:
        return f" Did you mean '{folded[word.lower()]}'?"
    close = difflib.get_close_matches(word.lower(), list(folded), n=1, cutoff=0.6)
    return f" Did you mean '{folded[close[0]]}'?" if close else ""


def describe(value: object) -> str:
    """The TOML type name and a short rendering of a value, for error messages."""
    kinds: list[tuple[type, str]] = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (datetime, "a datetime"),
        (date, "a date"),
        (time, "a time"),
        (list, "an array"),
        (tuple, "an array"),
        (dict, "a table"),
    ]
    name = next((n for t, n in kinds if isinstance(value, t)), type(value).__name__)
    shown = repr(value) if not isinstance(value, (date, time)) else value.isoformat()
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{name} ({shown})"


def canonical(value: object) -> str:
    """The string sent for a TOML value: bools lower-case, floats repr, dates ISO 8601."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, (date, time)):  # datetime is a date
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__}")


def _text(value: object, fmt: str | None) -> str:
    if fmt is None:
        return canonical(value)
    if isinstance(value, (date, time)):
        return value.strftime(fmt)
    return format(value, fmt)


# ---------------------------------------------------------------- steps and anchors


@dataclass(frozen=True)
class Step:
    """``count`` units of ``unit`` (one of mo, w, d, h, min, s)."""

    count: int
    unit: str

    def apply(self, value: date, times: int = 1) -> date:
        """``value`` moved forward ``times`` steps (months clamp to the month's last day)."""
        n = self.count * times
        if self.unit == "mo":
            return add_months(value, n)
        return value + _FIXED_UNITS[self.unit] * n


def add_months(value: date, months: int) -> date:
    """Calendar month arithmetic: Jan 31 + 1 month is Feb 28 (or 29)."""
    year, month0 = divmod(value.month - 1 + months, 12)
    year += value.year
    day = min(value.day, calendar.monthrange(year, month0 + 1)[1])
    return value.replace(year=year, month=month0 + 1, day=day)


@dataclass(frozen=True)
class Anchor:
    """A range end: a fixed date/datetime, or ``today``/``now`` plus an offset, resolved per run."""

    fixed: date | None = None
    base: str = ""  # "today" or "now" when relative
    sign: int = 1
    offset: Step | None = None

    @property
    def relative(self) -> bool:
        return self.fixed is None

    def resolve(self, as_of: datetime) -> date:
        if self.fixed is not None:
            return self.fixed
        value: date = as_of.date() if self.base == "today" else as_of
        if self.offset is not None:
            value = self.offset.apply(value, self.sign)
        return value


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


# ---------------------------------------------------------------- factors


@dataclass(frozen=True)
class ValuesAxis:
    """An axis whose values are known at parse time (list, CSV column, glob captures)."""

    name: str
    cells: tuple[Cell, ...]
    fmt: str | None = None

    def size(self, as_of: datetime) -> int:
        return len(self.cells)

    def iter_cells(self, as_of: datetime) -> Iterator[Cell]:
        return iter(self.cells)


@dataclass(frozen=True)
class IntRangeAxis:
    """Integers from ``start`` to ``end`` inclusive by ``step`` (> 0)."""

    name: str
    start: int
    end: int
    step: int
    fmt: str | None = None

    def size(self, as_of: datetime) -> int:
        return max(0, (self.end - self.start) // self.step + 1)

    def iter_cells(self, as_of: datetime) -> Iterator[Cell]:
        for n in range(self.start, self.end + 1, self.step):
            yield (n, _text(n, self.fmt))


@dataclass(frozen=True)
class DateRangeAxis:
    """Dates (or datetimes) from ``start`` to ``end`` inclusive; relative ends use ``as_of``."""

    name: str
    start: Anchor
    end: Anchor
    step: Step
    fmt: str | None = None
    source: str = ""

    def bounds(self, as_of: datetime) -> tuple[date, date]:
        start, end = self.start.resolve(as_of), self.end.resolve(as_of)
        if isinstance(start, datetime) != isinstance(end, datetime):
            raise MatrixError(
                "A range needs both ends of the same kind: two dates or two datetimes "
                f"(got {describe(start)} and {describe(end)}).",
                path=self.source,
                key=f"matrix.{self.name}",
            )
        if isinstance(start, datetime) and isinstance(end, datetime):
            if (start.tzinfo is None) != (end.tzinfo is None):
                raise MatrixError(
                    "Both ends of a datetime range must have a UTC offset, or neither "
                    f"(got {start.isoformat()} and {end.isoformat()}); 'now' has the offset of "
                    "the run's as-of time.",
                    path=self.source,
                    key=f"matrix.{self.name}",
                )
        elif self.step.unit in ("h", "min", "s"):
            raise MatrixError(
                f"A date range steps in d, w or mo, not '{self.step.unit}'; use datetimes for "
                "sub-day steps.",
                path=self.source,
                key=f"matrix.{self.name}.step",
            )
        return start, end

    def size(self, as_of: datetime) -> int:
        start, end = self.bounds(as_of)
        if end < start:  # bounds() checked both ends are the same kind
            relative = (
                " (resolved against the as-of time)"
                if self.start.relative or self.end.relative
                else ""
            )
            raise MatrixError(
                f"The axis '{self.name}' is empty: its start {start.isoformat()} is after its end "
                f"{end.isoformat()}{relative}. Swap them or fix a typo in a year.",
                path=self.source,
                key=f"matrix.{self.name}",
            )
        if self.step.unit != "mo":
            delta = _FIXED_UNITS[self.step.unit] * self.step.count
            return (end - start) // delta + 1
        months = (end.year - start.year) * 12 + end.month - start.month
        k = months // self.step.count
        while k >= 0 and self.step.apply(start, k) > end:
            k -= 1
        return k + 1

    def iter_cells(self, as_of: datetime) -> Iterator[Cell]:
        start, _ = self.bounds(as_of)
        for k in range(self.size(as_of)):
            value = self.step.apply(start, k)
            yield (value, _text(value, self.fmt))


Axis = ValuesAxis | IntRangeAxis | DateRangeAxis


@dataclass(frozen=True)
class AxisFactor:
    """One axis as a factor of the product."""

    axis: Axis

    @property
    def names(self) -> tuple[str, ...]:
        return (self.axis.name,)

    def size(self, as_of: datetime) -> int:
        return self.axis.size(as_of)

    def rows(self, as_of: datetime) -> Iterator[Row]:
        for cell in self.axis.iter_cells(as_of):
            yield (cell,)


@dataclass(frozen=True)
class ZipFactor:
    """Axes that vary together: the i-th values of each form one row."""

    axes: tuple[Axis, ...]
    source: str = ""
    index: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    def size(self, as_of: datetime) -> int:
        sizes = [a.size(as_of) for a in self.axes]
        for axis, n in zip(self.axes[1:], sizes[1:], strict=True):
            if n != sizes[0]:
                raise MatrixError(
                    f"Zipped axes must have equal lengths: '{self.axes[0].name}' has {sizes[0]} "
                    f"values but '{axis.name}' has {n}. Make them the same length or move one "
                    "out of the zip group to combine it by product.",
                    path=self.source,
                    key=f"matrix.zip[{self.index}]",
                )
        return sizes[0]

    def rows(self, as_of: datetime) -> Iterator[Row]:
        self.size(as_of)  # checks the lengths
        return zip(*(a.iter_cells(as_of) for a in self.axes), strict=True)


@dataclass(frozen=True)
class RowsFactor:
    """Whole combinations from a CSV table (Snakemake Paramspace)."""

    names: tuple[str, ...]
    table: tuple[Row, ...]

    def size(self, as_of: datetime) -> int:
        return len(self.table)

    def rows(self, as_of: datetime) -> Iterator[Row]:
        return iter(self.table)


Factor = AxisFactor | ZipFactor | RowsFactor


@dataclass(frozen=True)
class IncludeEntry:
    """One ``[[matrix.include]]`` table: strings to send and typed values for templates."""

    params: Mapping[str, str]
    values: Mapping[str, object]


@dataclass(frozen=True)
class MatrixSpec:
    """A parsed ``[matrix]``: factors combined by product, then exclude, then include."""

    param_names: tuple[str, ...] = ()
    factors: tuple[Factor, ...] = ()
    exclude: tuple[Mapping[str, str], ...] = ()
    include: tuple[IncludeEntry, ...] = ()
    source: str = ""
    axis_names: tuple[str, ...] = field(default=())

    @property
    def relative(self) -> bool:
        """True when some range end depends on ``as_of`` (``today``/``now``)."""
        return any(
            isinstance(a, DateRangeAxis) and (a.start.relative or a.end.relative)
            for f in self.factors
            for a in _factor_axes(f)
        )


@dataclass(frozen=True)
class Combination:
    """One run: the strings sent, typed values for templates, and the content-derived id."""

    params: Mapping[str, str]
    values: Mapping[str, object]
    combo_id: str


def _factor_axes(factor: Factor) -> tuple[Axis, ...]:
    if isinstance(factor, AxisFactor):
        return (factor.axis,)
    if isinstance(factor, ZipFactor):
        return factor.axes
    return ()


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

    def claim(self, name: str, key: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise self.error("A parameter name must be a non-empty string.", key)
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
                if not isinstance(name, str) or not name.strip():
                    raise self.error("A parameter name must be a non-empty string.", key)
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


# ---------------------------------------------------------------- counting


class _Counter:
    """Counts combinations matching constraint sets without building the product."""

    def __init__(self, spec: MatrixSpec, as_of: datetime) -> None:
        self.factors = spec.factors
        self.sizes = [f.size(as_of) for f in spec.factors]
        self.as_of = as_of
        self.owner = {n: i for i, f in enumerate(spec.factors) for n in f.names}
        self.cache: dict[tuple[int, frozenset[tuple[str, str]]], int] = {}

    def count(self, constraints: Mapping[str, str]) -> int:
        """The number of original combinations whose values equal every constraint."""
        per: dict[int, dict[str, str]] = {}
        for name, value in constraints.items():
            per.setdefault(self.owner[name], {})[name] = value
        total = 1
        for i, size in enumerate(self.sizes):
            total *= self.count_factor(i, per[i]) if i in per else size
            if total == 0:
                return 0
        return total

    def count_factor(self, i: int, wanted: Mapping[str, str]) -> int:
        cache_key = (i, frozenset(wanted.items()))
        if cache_key not in self.cache:
            factor = self.factors[i]
            positions = [(factor.names.index(n), v) for n, v in wanted.items()]
            self.cache[cache_key] = sum(
                1 for row in factor.rows(self.as_of) if all(row[p][1] == v for p, v in positions)
            )
        return self.cache[cache_key]

    def count_union(self, base: Mapping[str, str], excludes: Sequence[Mapping[str, str]]) -> int:
        """How many combinations matching ``base`` are matched by at least one exclude.

        Inclusion-exclusion over the excludes, pruned: once a set of constraints conflicts or
        matches nothing, every superset does too. Many mutually compatible excludes would make
        that exponential, so past a budget it enumerates only the factors the constraints touch.
        """
        total = 0
        budget = [_UNION_BUDGET]

        def walk(start: int, merged: dict[str, str], depth: int) -> None:
            nonlocal total
            for j in range(start, len(excludes)):
                budget[0] -= 1
                if budget[0] < 0:
                    raise _OverBudget
                combined = dict(merged)
                conflict = False
                for k, v in excludes[j].items():
                    if combined.setdefault(k, v) != v:
                        conflict = True
                        break
                if conflict:
                    continue
                n = self.count(combined)
                if n == 0:
                    continue
                total += n if depth % 2 == 0 else -n
                walk(j + 1, combined, depth + 1)

        try:
            walk(0, dict(base), 0)
        except _OverBudget:
            return self.enumerate_union(base, excludes)
        return total

    def enumerate_union(
        self, base: Mapping[str, str], excludes: Sequence[Mapping[str, str]]
    ) -> int:
        """The same count by walking the sub-product of the factors the constraints touch."""
        touched = sorted({self.owner[k] for c in (base, *excludes) for k in c})
        factors = [self.factors[i] for i in touched]
        names = [n for f in factors for n in f.names]
        hits = 0
        for row in _product(factors, self.as_of):
            params = {n: cell[1] for n, cell in zip(names, row, strict=True)}
            if _matches(params, base) and any(_matches(params, e) for e in excludes):
                hits += 1
        rest = 1
        for i, size in enumerate(self.sizes):
            if i not in touched:
                rest *= size
        return hits * rest


class _OverBudget(Exception):
    """Inclusion-exclusion grew too large; count by enumeration instead."""


_UNION_BUDGET = 20_000


def _include_constraints(entry: IncludeEntry, axis_names: Sequence[str]) -> dict[str, str]:
    return {k: v for k, v in entry.params.items() if k in axis_names}


def count_combinations(spec: MatrixSpec, *, as_of: datetime) -> int:
    """The number of combinations ``expand_matrix`` yields, computed without expanding."""
    if not spec.factors:
        return len(spec.include)
    counter = _Counter(spec, as_of)
    total = counter.count({}) - counter.count_union({}, spec.exclude)
    for entry in spec.include:
        base = _include_constraints(entry, spec.axis_names)
        if counter.count(base) - counter.count_union(base, spec.exclude) == 0:
            total += 1  # merges nowhere: becomes a new combination
    return total


# ---------------------------------------------------------------- expansion


def _product(factors: Sequence[Factor], as_of: datetime) -> Iterator[Row]:
    """The product of the factors' rows, each combined row flattened into cells.

    Each factor's rows are held once (memory grows with the sum of the factor sizes, which is
    small); the product itself, which multiplies them, is streamed.
    """
    pools = [tuple(f.rows(as_of)) for f in factors]
    for parts in itertools.product(*pools):
        yield tuple(itertools.chain.from_iterable(parts))


def _matches(params: Mapping[str, str], constraints: Mapping[str, str]) -> bool:
    return all(params.get(k) == v for k, v in constraints.items())


def expand_matrix(spec: MatrixSpec, *, dataset: int, as_of: datetime) -> Iterator[Combination]:
    """Yield every combination in product order (axes as written), then unmatched includes."""
    names = [n for f in spec.factors for n in f.names]
    constraints = [_include_constraints(e, spec.axis_names) for e in spec.include]
    matched = [False] * len(spec.include)
    for f in spec.factors:
        f.size(as_of)  # raises zip-length errors before the first combination
    # The product yields the axes in spec.axis_names order, which starts spec.param_names, so only
    # a combination that an include extends needs reordering (in_order checks the first part).
    in_order = tuple(names) == spec.axis_names
    if spec.factors:
        for row in _product(spec.factors, as_of):
            params: dict[str, str] = {}
            values: dict[str, object] = {}
            for name, (value, text) in zip(names, row, strict=True):
                params[name] = text
                values[name] = value
            if spec.exclude and any(_matches(params, e) for e in spec.exclude):
                continue
            extended = False
            for i, entry in enumerate(spec.include):
                if _matches(params, constraints[i]):
                    matched[i] = True
                    for k, v in entry.params.items():
                        if k not in spec.axis_names:  # original values are never overwritten
                            params[k] = v
                            values[k] = entry.values[k]
                            extended = True
            if in_order and not extended:
                yield _frozen(dataset, params, values)
            else:
                yield _combination(spec, dataset, params, values)
    for i, entry in enumerate(spec.include):
        if not matched[i]:
            yield _combination(spec, dataset, dict(entry.params), dict(entry.values))


def _combination(
    spec: MatrixSpec, dataset: int, params: dict[str, str], values: dict[str, object]
) -> Combination:
    ordered = {n: params[n] for n in spec.param_names if n in params}
    typed = {n: values[n] for n in ordered}
    return _frozen(dataset, ordered, typed)


def _frozen(dataset: int, params: dict[str, str], values: dict[str, object]) -> Combination:
    """A Combination of dicts already in parameter order, which nothing else holds."""
    return Combination(
        MappingProxyType(params), MappingProxyType(values), _combo_id(dataset, params)
    )


# ---------------------------------------------------------------- selection


def parse_only(items: Sequence[str], spec: MatrixSpec) -> Mapping[str, frozenset[str]]:
    """``--only KEY=VALUE`` (repeatable) -> allowed values per parameter; values of a key OR."""
    wanted: dict[str, set[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--only expects KEY=VALUE, got {item!r}.", key="--only")
        if key not in spec.param_names:
            raise ConfigError(
                f"--only names '{key}', which is not a parameter of this sweep."
                f"{did_you_mean(key, spec.param_names)} Parameters: {', '.join(spec.param_names)}.",
                key="--only",
            )
        wanted.setdefault(key, set()).add(value)
    return MappingProxyType({k: frozenset(v) for k, v in wanted.items()})


def select(
    combos: Iterable[Combination], only: Mapping[str, frozenset[str]], limit: int | None = None
) -> Iterator[Combination]:
    """Keep combinations whose parameters are among the ``only`` values; stop after ``limit``."""
    if limit is not None and limit <= 0:
        return
    taken = 0
    for combo in combos:
        if all(combo.params.get(k) in v for k, v in only.items()):
            yield combo
            taken += 1
            if limit is not None and taken >= limit:
                return

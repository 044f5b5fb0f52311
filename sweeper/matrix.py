"""The matrix model: a MatrixSpec -> a stream of Combinations with stable ids.

Axes, zip groups and CSV rows (factors), include/exclude, a size bound before expansion, the
expansion itself and ``--only`` selection. Pure. The ``[matrix]`` TOML grammar and its parser,
``parse_matrix``, are in sweeper.matrix_parse.
"""

from __future__ import annotations

import calendar
import difflib
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from types import MappingProxyType

from sweeper.errors import ConfigError, MatrixError
from sweeper.identity import combo_id as _combo_id

Cell = tuple[object, str]  # (typed value, the string sent to the API)
Row = tuple[Cell, ...]

_FIXED_UNITS = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "min": timedelta(minutes=1),
    "s": timedelta(seconds=1),
}


# Controls (C0, DEL, C1), bidirectional embeddings, overrides, isolates and marks, and zero-width
# characters: they do not show, or reorder the text around them, so a parameter name holding one
# could read as another name in the config, the ledger or the platform's UI.
HIDDEN_CHARACTERS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)


def visible(text: str) -> str:
    """``text`` with each hidden character written as its escape (``\\u202e``), for messages."""
    return HIDDEN_CHARACTERS.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


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
    axis_names: tuple[str, ...] = ()


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


# ---------------------------------------------------------------- size


def combinations_bound(spec: MatrixSpec, *, as_of: datetime) -> int:
    """At most this many combinations: the product of the factors' sizes, plus the includes.

    Excludes only remove combinations and an include adds at most one, so this refuses a runaway
    matrix before anything is expanded; the exact count is what the expansion yields.
    """
    product = math.prod(f.size(as_of) for f in spec.factors) if spec.factors else 0
    return product + len(spec.include)


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
    # An include matches the combinations with its values of the axes; its other keys are added.
    constraints = [
        {k: v for k, v in e.params.items() if k in spec.axis_names} for e in spec.include
    ]
    matched = [False] * len(spec.include)
    for f in spec.factors:
        f.size(as_of)  # raises zip-length errors before the first combination
    if spec.factors:
        for row in _product(spec.factors, as_of):
            params: dict[str, str] = {}
            values: dict[str, object] = {}
            for name, (value, text) in zip(names, row, strict=True):
                params[name] = text
                values[name] = value
            if any(_matches(params, e) for e in spec.exclude):
                continue
            for i, entry in enumerate(spec.include):
                if _matches(params, constraints[i]):
                    matched[i] = True
                    for k, v in entry.params.items():
                        if k not in spec.axis_names:  # original values are never overwritten
                            params[k] = v
                            values[k] = entry.values[k]
            yield _combination(spec, dataset, params, values)
    for i, entry in enumerate(spec.include):
        if not matched[i]:
            yield _combination(spec, dataset, entry.params, entry.values)


def _combination(
    spec: MatrixSpec, dataset: int, params: Mapping[str, str], values: Mapping[str, object]
) -> Combination:
    """A Combination with its parameters in ``spec.param_names`` order."""
    ordered = {n: params[n] for n in spec.param_names if n in params}
    typed = {n: values[n] for n in ordered}
    return Combination(
        MappingProxyType(ordered), MappingProxyType(typed), _combo_id(dataset, ordered)
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

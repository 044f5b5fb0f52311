"""PlanCsv writes plain rows itself and hands anything needing quotes to csv.writer."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sweeper.export import neutralize
from sweeper.matrix import Combination
from sweeper.planner import Action, PlannedCombination
from sweeper.render import PlanCsv


def _item(params: dict[str, str], reason: str, paths: tuple[str, ...]) -> PlannedCombination:
    combo = Combination(MappingProxyType(params), MappingProxyType(dict(params)), "c0ffee")
    return PlannedCombination(combo, Action.SUBMIT, reason, 0, "swp-x", {}, paths)


def _by_csv_writer(names: list[str], item: PlannedCombination) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["combo_id", "action", "reason", "generation", "execution_id", *names, "output_paths"]
    )
    params = item.combo.params
    writer.writerow(
        [
            item.combo.combo_id,
            item.action.value,
            item.reason,
            item.generation,
            item.execution_id,
            *[params.get(n, "") for n in names],
            " ".join(item.output_paths),
        ]
    )
    return out.getvalue()


def _written(tmp_path: Path, names: list[str], item: PlannedCombination) -> str:
    target = tmp_path / "plan.csv"
    plan = PlanCsv(target, names)
    plan.add(item)
    plan.close()
    return target.read_bytes().decode("utf-8")  # no newline translation: "\r" stays "\r"


@pytest.mark.parametrize(
    "value",
    ["plain", "a,b", 'say "hi"', "two\nlines", "", " spaced ", "é"],
)
def test_each_field_is_written_as_csv_writer_would(tmp_path: Path, value: str) -> None:
    item = _item({"Region": value, "Other": "x"}, f"why: {value}", (f"out/{value}.csv",))
    names = ["Region", "Other", "Missing"]
    assert _written(tmp_path, names, item) == _by_csv_writer(names, item)


def test_a_lone_carriage_return_is_quoted_so_the_row_reads_back(tmp_path: Path) -> None:
    # csv.writer with lineterminator "\n" would leave it bare, and a reader splits the row there.
    item = _item({"Region": "cr\rhere"}, "why\r", ("out/x.csv",))
    text = _written(tmp_path, ["Region"], item)
    header, row = list(csv.reader(io.StringIO(text, newline="")))
    assert row[header.index("Region")] == "cr\rhere" and row[header.index("reason")] == "why\r"


@given(value=st.text(max_size=12), reason=st.text(max_size=12))
@example(value="", reason="\r")  # found by this test: csv.writer left it bare
def test_any_text_round_trips_through_the_csv(value: str, reason: str) -> None:
    item = _item({"Region": value}, reason, ())
    with tempfile.TemporaryDirectory() as tmp:
        text = _written(Path(tmp), ["Region"], item)
    header, row = list(csv.reader(io.StringIO(text, newline="")))
    # Round trip up to neutralising: a cell a spreadsheet would run gets a leading quote.
    assert row[header.index("reason")] == neutralize(reason)
    assert row[header.index("Region")] == neutralize(value)

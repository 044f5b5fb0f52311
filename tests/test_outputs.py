"""The second signal of success: outputs really written by the job group that says Complete."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sweeper.config import load_config
from sweeper.ledger import Event, read_ledger
from sweeper.outputs import _fresh_local, written_by
from tests.test_report_sweeps import Emulator, run, write_sweep
from tests.test_status import _refresh


@pytest.mark.parametrize(
    ("expected", "listed", "ok"),
    [
        ("results/out/a.csv", ["results/out/a.csv"], True),
        ("results/out/a.csv", ["/srv/x/results/out/a.csv"], True),  # absolute form of a relative
        ("results/out/a.csv", ["results/out/a_123.csv"], True),  # create's parallel name
        ("results/out/a.csv", ["results/out/ba_123.csv"], False),
        ("results/out/a.csv", ["results/out/b.csv", "results/out/a.csv.bak"], False),
        ("gs://b/p/a.csv.gz", ["gs://b/p/a_9.csv.gz"], True),
        ("gs://b/p/a.csv.gz", ["gs://other/p/a.csv.gz"], False),
        ("results/out/d", ["results/out/d/part-00000.csv"], True),  # folder of part files
        ("results/out/d", ["results/out/dd/part-00000.csv"], False),
        ("results/out/a.csv", [], False),
    ],
)
def test_written_by(expected: str, listed: list[str], ok: bool) -> None:
    assert written_by(expected, listed) is ok


def test_a_local_output_older_than_the_group_does_not_count(tmp_path: Path) -> None:
    out = tmp_path / "a.csv"
    out.write_text("x\n")
    created = time.time()
    os.utime(out, (created - 3600, created - 3600))  # left by an earlier run
    assert not _fresh_local(out, created)
    assert _fresh_local(out, created - 7200)  # older than that group: fine
    sibling = tmp_path / "a_42.csv"  # `create` found a.csv taken and wrote beside it
    sibling.write_text("x\n")
    assert _fresh_local(out, created)
    assert not _fresh_local(tmp_path / "missing.csv", None)


def test_status_checks_outputs_of_groups_that_end_after_a_no_wait_run(project: Path) -> None:
    """run --no-wait, then status: a Complete group whose files are missing is not a success."""
    config_path = write_sweep(project, verify=True)
    emulator = Emulator(project, output_root=project / "elsewhere")  # files land out of sight
    # Not waited for: still running, exit 3.
    assert run(config_path, emulator, "night-1", wait=False).summary.exit_code == 3
    emulator.offset += 3600.0  # every group has ended by now
    config = load_config(config_path)
    result = _refresh(emulator, config_path)
    assert result.finished == 8
    finished = [r for r in read_ledger(config.sweep.ledger) if r.event is Event.FINISHED]
    assert {r.status for r in finished} == {"Complete"}
    assert {r.outputs_ok for r in finished} == {"no"}
    assert all(r.error.startswith("outputs missing: results/out/night-1/") for r in finished)
    assert result.counts() == {"failed": 8}

"""Shared fixtures: sweep files in a temporary project directory, run on the embedded emulator."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Fast lifecycle and polling so a whole sweep takes a second or two.
FAST_RUN = """
[run]
rate = "600/min"
concurrency = 4
poll_interval = "0.2s"
poll_max_interval = "1s"
max_polls_per_second = 100
timeout = "2m"
settle = "0s"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch project directory (the working directory) with a copy of configs/."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATAPREP_TOKEN", raising=False)
    return tmp_path


@pytest.fixture
def write_config(project: Path) -> Callable[[str], Path]:
    """Write a sweep file into the scratch project and return its path."""

    def write(text: str, name: str = "sweep.toml") -> Path:
        path = project / "configs" / name
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write

"""The operator's night: answers to common mistakes, safe paths, and help that matches the docs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sweeper.config import load_config

BASE = """
[sweep]
name = "ux"
dataset = 33

[api]
base_url = "{base_url}"

[matrix]
Region = ["01", "02", "03", "04"]
"""


def test_the_embedded_emulator_is_polled_soon_after_submission(
    write_config: Callable[..., Path],
) -> None:
    embedded = load_config(write_config(BASE.format(base_url="embedded")))
    # Its jobs end about 1.5 s after submission: the first poll must come well before that.
    assert embedded.run.poll_interval < 1.0 and embedded.run.poll_max_interval <= 1.0
    real = load_config(write_config(BASE.format(base_url="https://api.example.com"), "real.toml"))
    assert real.run.poll_interval == 2.0
    explicit = load_config(
        write_config(BASE.format(base_url="embedded") + '[run]\npoll_interval = "3s"\n', "e.toml")
    )
    assert explicit.run.poll_interval == 3.0 and explicit.run.poll_max_interval >= 3.0

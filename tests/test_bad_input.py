"""Every entry of docs/errors.md: bad input fails with a clear message and ZERO POSTs.

Each case runs ``sweeper run`` on a sweep file pointed at a served emulator; the emulator's oracle
(``/_emulator/stats``) proves that nothing reached ``POST /v4/jobGroups``.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweeper.cli import cli
from sweeper.emulator import EmulatorSettings
from sweeper.ledger import Ledger
from tests.emulator_server import running_emulator
from tests.reliab_support import stats, sweeper_argv

TOKEN_ENV = "RELIAB_TOKEN"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    out = tmp_path_factory.mktemp("emulator")
    with running_emulator(EmulatorSettings(output_root=out)) as url:
        yield url


def sweep_text(
    url: str,
    *,
    matrix: str = 'Region = ["01", "02"]',
    path: str = "results/out/{run_id}/region-{Region}.csv",
    extra: str = "",
    name: str = "bad",
) -> str:
    """A valid sweep file unless a case changes it."""
    return (
        textwrap.dedent(
            f"""\
            [sweep]
            name = "{name}"
            dataset = 33

            [api]
            base_url = "{url}"
            token_env = "{TOKEN_ENV}"

            [matrix]
            {{matrix}}

            [[overrides.writeSettings]]
            path = "{path}"
            action = "create"
            format = "csv"

            [run]
            rate = "600/min"
            poll_interval = "0.1s"
            settle = "0s"
            """
        ).replace("{matrix}", textwrap.dedent(matrix).strip())
        + extra
    )


@dataclass(frozen=True)
class Case:
    """One catalogue entry: how to break the input, and what the user must be told."""

    text: Callable[[str], str]
    code: int
    says: tuple[str, ...]  # fragments of stderr: the place and the fix
    ledger: bytes | None = None  # bytes to put at results/bad.csv first
    env: bool = True  # set the token variable
    directory: str = ""  # a directory to create first (where a file is expected)


def _ledger_of(sweep: str, schema: str = "sweeper-ledger/1") -> bytes:
    from sweeper.ledger import COLUMNS_V1  # a ledger written before flows is still read

    header = ",".join((*COLUMNS_V1, "param.Region"))
    row = [schema, "2026-11-29T00:00:00.000Z", sweep, "r1", "0123456789abcdef", "intent", "1", "0"]
    row += ["swp-x", '"{""Region"":""01""}"', "", "", "", "", "", "", "", "", "", "", "", ""]
    row += ["01"]
    return (header + "\n" + ",".join(row) + "\n").encode()


CASES: dict[str, Case] = {
    "toml-syntax": Case(
        lambda u: sweep_text(u).replace("dataset = 33", "dataset = = 33"),
        2,
        ("bad.toml:3", "TOML"),
    ),
    "unknown-key": Case(
        lambda u: sweep_text(u, extra="concurrenccy = 2\n"),
        2,
        ("run.concurrenccy", "concurrency"),
    ),
    "wrong-type": Case(
        lambda u: sweep_text(u, extra='concurrency = "four"\n'),
        2,
        ("run.concurrency", "integer"),
    ),
    "empty-axis": Case(
        lambda u: sweep_text(u, matrix="Region = []"), 2, ("matrix.Region", "empty")
    ),
    "exclude-unknown-parameter": Case(
        lambda u: sweep_text(u, matrix='Region = ["01", "02"]\n[[matrix.exclude]]\nRegoin = "01"'),
        2,
        ("Regoin", "Region"),
    ),
    "include-unknown-parameter": Case(
        lambda u: sweep_text(u, matrix='Region = ["01", "02"]\n[[matrix.include]]\nRegoin = "01"'),
        2,
        ("Regoin", "Region"),
    ),
    "placeholder-unknown-parameter": Case(
        lambda u: sweep_text(u, path="results/out/{run_id}/region-{Regoin}.csv"),
        2,
        ("{Regoin}", "Region", "overrides.writesettings[0].path"),
    ),
    "same-request-twice": Case(
        lambda u: sweep_text(
            u,
            matrix='day = { start = 2024-01-01, end = 2024-01-02, format = "%Y" }',
            path="results/out/{run_id}/{day}.csv",
        ),
        2,
        ("day=2024", "twice", "format"),
    ),
    "same-output-path": Case(
        lambda u: sweep_text(u, path="results/out/{run_id}/all-regions.csv"),
        2,
        ("overrides.writeSettings.path", "{Region}"),
    ),
    "path-separator-in-value": Case(
        lambda u: sweep_text(u, matrix='Region = ["01", "../etc"]'),
        2,
        ("configs/bad.toml [overrides.writesettings[0].path]", "../etc", "{Region}"),
    ),
    "slash-in-value": Case(
        lambda u: sweep_text(u, matrix='Region = ["01", "a/b"]'), 2, ("a/b", "separator")
    ),
    "dot-dot-value": Case(lambda u: sweep_text(u, matrix='Region = ["01", ".."]'), 2, ("'..'",)),
    "nul-in-value": Case(
        lambda u: sweep_text(u, matrix='Region = ["01", "a\\u0000b"]'), 2, ("NUL",)
    ),
    "control-character-in-parameter-name": Case(
        lambda u: sweep_text(u, matrix='"Re\\rgion" = ["01", "02"]'),
        2,
        ("[matrix.Re\\rgion]", "U+000D", "Rename"),
    ),
    "bidi-control-in-parameter-name": Case(
        lambda u: sweep_text(u, matrix='"Re\\u202egion" = ["01", "02"]'),
        2,
        ("[matrix.Re\\u202egion]", "U+202E", "Rename"),
    ),
    "zero-width-in-parameter-name": Case(
        lambda u: sweep_text(u, matrix='"Region\\u200b" = ["01", "02"]'),
        2,
        ("[matrix.Region\\u200b]", "U+200B", "Rename"),
    ),
    "format-spec-in-placeholder": Case(
        lambda u: sweep_text(u, path="results/out/{run_id}/region-{Region:>200000000}.csv"),
        2,
        ("overrides.writesettings[0].path", "no format spec", "{Region}"),
    ),
    "conversion-in-placeholder": Case(
        lambda u: sweep_text(u, path="results/out/{run_id}/region-{Region!r}.csv"),
        2,
        ("overrides.writesettings[0].path", "no format spec", "{Region}"),
    ),
    "matrix-too-large": Case(
        lambda u: sweep_text(
            u, matrix='Region = ["01", "02", "03"]\n[[matrix.exclude]]\nRegion = "03"'
        ).replace('name = "bad"', 'name = "bad"\nmax_combinations = 2'),
        2,
        ("[sweep.max_combinations]", "up to 3 combinations", "--allow-large"),
    ),
    "missing-token-variable": Case(lambda u: sweep_text(u), 2, (TOKEN_ENV, "export"), env=False),
    "insecure-tls-off-loopback": Case(
        lambda u: sweep_text(u.replace("127.0.0.1", "example.com")).replace(
            "[matrix]", "insecure = true\n\n[matrix]"
        ),
        2,
        ("api.insecure", "ca_bundle"),
    ),
    "ledger-unreadable": Case(
        lambda u: sweep_text(u), 1, ("results/bad.csv", "UTF-8"), ledger=b"\xff\xfe\x00garbage\n"
    ),
    "ledger-is-a-directory": Case(
        lambda u: sweep_text(u).replace('name = "bad"', 'name = "bad"\nledger = "results/adir"'),
        1,
        ("results/adir", "cannot be read", "Is a directory"),
        directory="results/adir",
    ),
    "ledger-not-a-ledger": Case(
        lambda u: sweep_text(u), 1, ("not a sweeper ledger", "sweep.ledger"), ledger=b"a,b\n1,2\n"
    ),
    "ledger-of-another-sweep": Case(
        lambda u: sweep_text(u),
        1,
        ("belongs to the sweep 'other'", "sweep.ledger"),
        ledger=_ledger_of("other"),
    ),
    "ledger-incompatible-schema": Case(
        lambda u: sweep_text(u),
        1,
        ("sweeper-ledger/9", "sweep.ledger"),
        ledger=_ledger_of("bad", schema="sweeper-ledger/9"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_clearly_before_any_post(
    name: str, emulator: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    config = project / "configs" / "bad.toml"
    config.write_text(case.text(emulator), encoding="utf-8")
    ledger = project / "results" / "bad.csv"
    if case.ledger is not None:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        ledger.write_bytes(case.ledger)
    if case.directory:
        (project / case.directory).mkdir(parents=True)
    if case.env:
        monkeypatch.setenv(TOKEN_ENV, "bad-input-token")
    else:
        monkeypatch.delenv(TOKEN_ENV, raising=False)
    before = stats(emulator)["posts_received"]

    result = CliRunner().invoke(cli, ["run", "configs/bad.toml", "--run-id", "r1"])

    assert result.exit_code == case.code, result.output + result.stderr
    for fragment in case.says:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert result.stderr.startswith("Error: ")
    assert stats(emulator)["posts_received"] == before
    if case.ledger is not None:
        assert ledger.read_bytes() == case.ledger  # left untouched


def test_unreadable_ledger_message_says_what_to_do(
    emulator: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = project / "configs" / "bad.toml"
    config.write_text(CASES["ledger-is-a-directory"].text(emulator), encoding="utf-8")
    (project / "results" / "adir").mkdir(parents=True)
    monkeypatch.setenv(TOKEN_ENV, "bad-input-token")
    result = CliRunner().invoke(cli, ["run", "configs/bad.toml"])
    assert result.exit_code == 1
    assert "sweep.ledger" in result.stderr


def test_second_writer_exits_1_and_leaves_the_ledger_untouched(
    emulator: str, project: Path
) -> None:
    """A real second process, while this one holds the ledger's lock."""
    config = project / "configs" / "bad.toml"
    config.write_text(sweep_text(emulator), encoding="utf-8")
    ledger = project / "results" / "bad.csv"
    before = stats(emulator)["posts_received"]
    with Ledger.open(ledger, sweep="bad", param_names=["Region"]):
        content = ledger.read_bytes()
        env = {**os.environ, TOKEN_ENV: "bad-input-token"}
        done = subprocess.run(
            sweeper_argv("run", str(config), "--run-id", "r1"),
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ledger.read_bytes() == content
    assert done.returncode == 1, done.stderr
    assert "locked by another sweeper process" in done.stderr
    assert "bad.csv" in done.stderr
    assert stats(emulator)["posts_received"] == before


def test_the_catalogue_documents_every_case() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text("utf-8")
    for name in [*CASES, "ledger-locked"]:
        assert f"`{name}`" in doc, f"docs/errors.md has no entry for {name}"

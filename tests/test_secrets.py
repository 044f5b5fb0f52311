"""Credentials through the CLI: the token never leaks, a refused token stops the run at once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sweeper.emulator import EmulatorSettings, FaultSettings
from tests.emulator_server import running_emulator
from tests.reliab_support import last_rows, ledger_rows, stats, sweeper_argv, write_sweep

SENTINEL = "SENTINEL-tok-9f3c2a7e51b04d6e"
MATRIX = 'Region = ["01", "02", "03", "04"]\nvarReferenceType = ["PROD", "TEST"]'


def _sweeper(
    project: Path, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RELIAB_TOKEN"}
    if token is not None:
        env["RELIAB_TOKEN"] = token
    return subprocess.run(
        sweeper_argv(*args), cwd=project, env=env, capture_output=True, text=True, timeout=90
    )


def _config(project: Path, url: str, **kwargs: object) -> Path:
    return write_sweep(
        project / "configs" / "s.toml",
        name="s",
        base_url=url,
        matrix=MATRIX,
        run={"concurrency": 2},
        **kwargs,  # type: ignore[arg-type]
    )


def test_sentinel_token_appears_nowhere_after_a_faulty_debug_run(tmp_path: Path) -> None:
    project = tmp_path / "project"
    faults = FaultSettings(
        error_after_rate=0.25,
        error_before_rate=0.3,
        drop_after_rate=0.15,
        rate_limit_every=4,
        rate_limit_retry_after=0,
        job_fail_rate=0.2,
        seed=11,
    )
    settings = EmulatorSettings(
        faults=faults, token=SENTINEL, output_root=project, quota_user_per_min=0
    )
    with running_emulator(settings) as url:
        config = _config(project, url, retry={"attempts": 2, "max_wait": "0.05s"})
        outputs = [_sweeper(project, "run", str(config), "-vv", "--run-id", "r1", token=SENTINEL)]
        outputs.append(
            _sweeper(project, "run", str(config), "-vv", "--run-id", "r1", token=SENTINEL)
        )
        outputs.append(_sweeper(project, "status", str(config), "-vv", token=SENTINEL))
        counters = stats(url)
    ledger = project / "results" / "s.csv"
    for fmt in ("table", "markdown", "csv", "json"):
        args = ["report", str(ledger), "--format", fmt]
        if fmt == "table":
            args += ["--html", str(project / "results" / "report.html")]
        outputs.append(_sweeper(project, *args, token=SENTINEL))

    # The faults really happened, and DEBUG logging really ran.
    faults_served = counters["faults_served"]
    assert {"error_after", "error_before", "drop_after", "rate_limit"} <= set(faults_served)
    assert "DEBUG" in outputs[0].stderr
    assert any(r["event"] == "in_doubt" for r in ledger_rows(ledger))
    assert all(p.returncode in (0, 3) for p in outputs), [p.stderr[-500:] for p in outputs]
    assert (project / "results" / "report.html").exists()

    for proc in outputs:
        assert SENTINEL not in proc.stdout and SENTINEL not in proc.stderr
    files = [p for p in (project / "results").rglob("*") if p.is_file()]
    assert ledger in files and len(files) > 3
    for path in files:
        assert SENTINEL.encode() not in path.read_bytes(), path


def test_refused_token_exits_1_after_one_post_and_the_ledger_resumes(tmp_path: Path) -> None:
    project = tmp_path / "project"
    settings = EmulatorSettings(token="the-right-token", output_root=project)
    with running_emulator(settings) as url:
        config = _config(project, url)
        refused = _sweeper(project, "run", str(config), "--run-id", "r1", "-vv", token=SENTINEL)
        assert refused.returncode == 1, refused.stderr
        assert stats(url)["posts_received"] == 1
        assert "401" in refused.stdout + refused.stderr
        assert SENTINEL not in refused.stdout + refused.stderr
        last = last_rows(ledger_rows(project / "results" / "s.csv"))
        assert [r["event"] for r in last.values()] == ["not_sent"]

        resumed = _sweeper(project, "run", str(config), "--run-id", "r1", token="the-right-token")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert stats(url)["created"] == 8


def test_token_file_readable_by_others_is_refused_before_any_post(tmp_path: Path) -> None:
    project = tmp_path / "project"
    with running_emulator(EmulatorSettings(output_root=project)) as url:
        config = _config(project, url, extra="")
        text = config.read_text(encoding="utf-8").replace(
            'token_env = "RELIAB_TOKEN"', 'token_env = "RELIAB_TOKEN"\ntoken_file = "token.txt"'
        )
        config.write_text(text, encoding="utf-8")
        token_file = config.parent / "token.txt"
        token_file.write_text(SENTINEL + "\n", encoding="utf-8")
        token_file.chmod(0o644)
        loose = _sweeper(project, "run", str(config), "--run-id", "r1")
        assert loose.returncode == 2
        assert "chmod 600" in loose.stderr and "api.token_file" in loose.stderr
        assert SENTINEL not in loose.stdout + loose.stderr
        assert stats(url)["posts_received"] == 0

        token_file.chmod(0o600)
        tight = _sweeper(project, "run", str(config), "--run-id", "r1")
        assert tight.returncode == 0, tight.stderr
        assert stats(url)["created"] == 8


@pytest.mark.parametrize("flag", ["--token", "--token=abc", "--access-token"])
def test_a_token_is_never_accepted_on_the_command_line(tmp_path: Path, flag: str) -> None:
    from click.testing import CliRunner

    from sweeper.cli import cli

    args = ["run", "configs/regions.toml", flag] + ([] if "=" in flag else ["abc"])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "No such option" in result.output + result.stderr


@pytest.mark.parametrize("kind", ["short-env-token", "fifo-token-file", "two-line-token-file"])
def test_unsafe_credentials_exit_2_before_any_post(tmp_path: Path, kind: str) -> None:
    project = tmp_path / "project"
    with running_emulator(EmulatorSettings(output_root=project)) as url:
        config = _config(project, url, extra="")
        token: str | None = None
        if kind == "short-env-token":
            token, expected = "abc12", "shorter than 8 characters"
        else:
            text = config.read_text(encoding="utf-8").replace(
                'token_env = "RELIAB_TOKEN"', 'token_env = "RELIAB_TOKEN"\ntoken_file = "tok"'
            )
            config.write_text(text, encoding="utf-8")
            token_file = config.parent / "tok"
            if kind == "fifo-token-file":
                os.mkfifo(token_file, 0o600)  # reading it would block forever
                expected = "not a regular file"
            else:
                token_file.write_text(f"{SENTINEL}\nsecond-line-value\n", encoding="utf-8")
                token_file.chmod(0o600)
                expected = "2 non-empty lines"
        result = _sweeper(project, "run", str(config), "--run-id", "r1", token=token)
        assert result.returncode == 2, result.stdout + result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert SENTINEL not in result.stdout + result.stderr
        assert stats(url)["posts_received"] == 0

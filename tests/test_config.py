"""load_config: every section, every error names the file and key and says what to do."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sweeper.config import Rate, SweepConfig, load_config, parse_duration, parse_rate
from sweeper.errors import ConfigError, MatrixError
from sweeper.matrix import expand_matrix
from sweeper.planner import Planner

ROOT = Path(__file__).resolve().parent.parent
AS_OF = datetime(2024, 3, 15, tzinfo=timezone.utc)

MINIMAL = """
[sweep]
name = "t"
dataset = 33

[matrix]
Region = ["01", "02"]
"""


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> SweepConfig:
    return load_config(write(tmp_path, text))


def error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert str(tmp_path / "sweep.toml") in str(info.value)  # every error names the file
    return info.value


# ---------------------------------------------------------------- the contract and examples


def test_regions_toml_loads_to_six_combinations() -> None:
    config = load_config(ROOT / "configs" / "regions.toml")
    assert config.sweep.name == "regions"
    assert config.sweep.dataset == 33
    assert config.sweep.ledger == ROOT / "results" / "regions.csv"  # configs/ -> the repo root
    assert config.api.embedded
    assert config.run.rate == Rate(25, 60.0)
    assert config.run.timeout == 600.0
    assert config.retry.max_wait == 600.0
    combos = list(expand_matrix(config.matrix, dataset=33, as_of=AS_OF))
    assert len(combos) == 6
    assert {"Region": "03", "varReferenceType": "TEST"} not in [dict(c.params) for c in combos]
    assert dict(combos[-1].params) == {"Region": "04", "varReferenceType": "PROD"}
    assert list(config.overrides) == ["execution", "profiler", "writesettings"]


@pytest.mark.parametrize(
    ("name", "count"), [("backfill.toml", 31), ("rows.toml", 5), ("glob.toml", 7)]
)
def test_example_configs_load(name: str, count: int) -> None:
    config = load_config(ROOT / "configs" / name)
    assert len(list(expand_matrix(config.matrix, dataset=33, as_of=AS_OF))) == count


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert config.sweep.ledger == tmp_path / "results" / "t.csv"
    assert config.api.base_url == "embedded"
    assert config.api.token_env == "DATAPREP_TOKEN"
    assert config.run.concurrency == 4
    assert config.retry.attempts == 6
    assert config.overrides == {}


def test_overrides_are_read_only_and_hash_tracks_the_template(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + '[overrides]\nexecution = "photon"\n'
        + '[[overrides.writeSettings]]\npath = "o/{Region}.csv"\n'
    )
    config = load(tmp_path, text)
    with pytest.raises(TypeError):
        config.overrides["execution"] = "spark"  # type: ignore[index]
    assert isinstance(config.overrides["writesettings"], tuple)
    changed = load(tmp_path, text.replace("photon", "spark"))
    assert config.config_hash != changed.config_hash
    assert config.config_hash == load(tmp_path, text).config_hash


def test_write_settings_spelling_is_normalised(tmp_path: Path) -> None:
    text = MINIMAL + '[[overrides.writeSettings]]\npath = "o/{Region}.csv"\nformat = "csv"\n'
    config = load(tmp_path, text)
    assert "writeSettings" not in config.overrides
    assert config.overrides["writesettings"][0]["format"] == "csv"


def test_input_paths_and_outputs_are_relative_to_the_config(tmp_path: Path) -> None:
    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "data.csv").write_text("region\n07\n")
    path = write(
        sub,
        """
        [sweep]
        name = "t"
        dataset = 1
        ledger = "out/ledger.csv"
        [api]
        token_file = "secret/token"
        ca_bundle = "ca.pem"
        [matrix]
        Region = { csv = "data.csv", column = "region" }
        """,
    )
    config = load_config(path)
    assert config.api.token_file == sub / "secret" / "token"
    assert config.api.ca_bundle == sub / "ca.pem"
    assert config.sweep.ledger == sub / "out" / "ledger.csv"  # wherever the command runs
    assert [c.params["Region"] for c in expand_matrix(config.matrix, dataset=1, as_of=AS_OF)] == [
        "07"
    ]


# ---------------------------------------------------------------- durations and rates


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("90s", 90.0), ("10m", 600.0), ("2h", 7200.0), ("1d", 86400.0), (45, 45.0), (0.5, 0.5),
     ("1h30m", 5400.0), ("250ms", 0.25), ("12", 12.0), ("10min", 600.0)],
)  # fmt: skip
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["", "ten", "10 parsecs", "5x", True, [], "1h 2"])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("raw", "rate"),
    [("25/min", Rate(25, 60.0)), ("30/1m", Rate(30, 60.0)), ("2/s", Rate(2, 1.0)),
     ("100/h", Rate(100, 3600.0)), ("60/90s", Rate(60, 90.0)), ("1/500ms", Rate(1, 0.5))],
)  # fmt: skip
def test_rates(raw: str, rate: Rate) -> None:
    assert parse_rate(raw) == rate


def test_bad_duration_and_rate_in_config(tmp_path: Path) -> None:
    err = error(tmp_path, MINIMAL + '[run]\ntimeout = "ten minutes"\n')
    assert err.key == "run.timeout" and '"10m"' in str(err)
    err = error(tmp_path, MINIMAL + '[run]\nrate = "25 per minute"\n')
    assert err.key == "run.rate" and '"25/min"' in str(err)
    err = error(tmp_path, MINIMAL + '[run]\nrate = "0/min"\n')
    assert err.key == "run.rate"


# ---------------------------------------------------------------- errors


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config("/nonexistent/sweep.toml")
    assert info.value.path == "/nonexistent/sweep.toml"


def test_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    err = error(tmp_path, '[sweep]\nname = "t"\ndataset = = 3\n')
    assert (err.line, err.column) == (3, 11)
    assert f"{tmp_path / 'sweep.toml'}:3:11" in str(err)
    assert "Invalid TOML" in str(err)


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        (MINIMAL + "[runn]\nrate = 1\n", "runn", "run"),
        (MINIMAL + "[run]\nconcurency = 2\n", "run.concurency", "concurrency"),
        (MINIMAL + "[retry]\nattempt = 2\n", "retry.attempt", "attempts"),
        (MINIMAL + "[overrides]\nprofiller = true\n", "overrides.profiller", "profiler"),
        (MINIMAL + "[overrides]\nwritesetting = []\n", "overrides.writesetting", "writesettings"),
        (
            MINIMAL + '[[overrides.writesettings]]\npath = "o/{Region}"\nasSingelFile = true\n',
            "overrides.writesettings[0].asSingelFile",
            "asSingleFile",
        ),
        (MINIMAL.replace("dataset", "datset"), "sweep.datset", "dataset"),
        (MINIMAL + '[api]\nbase_ur = "embedded"\n', "api.base_ur", "base_url"),
    ],
)
def test_unknown_keys_suggest(tmp_path: Path, text: str, key: str, hint: str) -> None:
    err = error(tmp_path, text)
    assert err.key == key
    assert f"Did you mean '{hint}'?" in str(err)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        (MINIMAL.replace("33", '"33"'), "sweep.dataset", "an integer"),
        (MINIMAL.replace("33", "0"), "sweep.dataset", "at least 1"),
        (MINIMAL.replace("33", "true"), "sweep.dataset", "an integer"),
        (MINIMAL + "[run]\nconcurrency = 65\n", "run.concurrency", "between 1 and 64"),
        (MINIMAL + '[run]\nwait = "yes"\n', "run.wait", "true or false"),
        (MINIMAL + "[retry]\nattempts = 0\n", "retry.attempts", "between 1 and 100"),
        (MINIMAL + "[retry]\nbudget = -1\n", "retry.budget", "at least 0"),
        (
            MINIMAL + '[run]\npoll_interval = "10s"\npoll_max_interval = "5s"\n',
            "run.poll_max_interval",
            "at least run.poll_interval",
        ),
        (MINIMAL + "[overrides]\nprofiler = 1\n", "overrides.profiler", "true or false"),
        (
            MINIMAL + '[[overrides.writesettings]]\npath = "o/{Region}"\naction = "replace"\n',
            "overrides.writesettings[0].action",
            "create, append, overwrite",
        ),
        (MINIMAL + "[[overrides.writesettings]]\nformat = 'csv'\n", None, "needs a path"),
        (
            MINIMAL
            + "[[overrides.writesettings]]\npath = 'o/{Region}.csv'\ncompression = 'gzip'\n",
            "overrides.writesettings[0].path",
            ".gz",
        ),
        (MINIMAL.replace('"t"', '"my sweep"'), "sweep.name", "letters, digits"),
        ("[matrix]\nA = [1]\n", "sweep.name", "needs a name"),
        (MINIMAL + '[api]\nauth = "kerberos"\n', "api.auth", "bearer, basic, oauth"),
        ("name = 1\n" + MINIMAL, "name", "Unknown key 'name'"),
    ],
)
def test_wrong_types_and_ranges(tmp_path: Path, text: str, key: str | None, expected: str) -> None:
    err = error(tmp_path, text)
    if key:
        assert err.key == key
    assert expected in str(err)


def test_wrong_type_shows_the_value(tmp_path: Path) -> None:
    err = error(tmp_path, MINIMAL.replace("33", '"33"'))
    assert "got a string ('33')" in str(err)


@pytest.mark.parametrize("url", ["ftp://example.com", "example.com", "https://", "embeded"])
def test_bad_base_url(tmp_path: Path, url: str) -> None:
    err = error(tmp_path, MINIMAL + f'[api]\nbase_url = "{url}"\n')
    assert err.key == "api.base_url"
    assert "embedded" in str(err)


def test_good_base_urls(tmp_path: Path) -> None:
    for url in ("https://api.clouddataprep.com/", "http://127.0.0.1:3005"):
        config = load(tmp_path, MINIMAL + f'[api]\nbase_url = "{url}"\n')
        assert config.api.base_url == url.rstrip("/")
        assert not config.api.embedded


@pytest.mark.parametrize("url", ["https://me:hunter2@host", "https://host/?token=hunter2"])
def test_credentials_in_url_are_refused_without_echo(tmp_path: Path, url: str) -> None:
    err = error(tmp_path, MINIMAL + f'[api]\nbase_url = "{url}"\n')
    assert "hunter2" not in str(err)
    assert err.key == "api.base_url"


def test_insecure_only_for_loopback(tmp_path: Path) -> None:
    err = error(tmp_path, MINIMAL + '[api]\nbase_url = "https://h.example"\ninsecure = true\n')
    assert err.key == "api.insecure" and "ca_bundle" in str(err)
    config = load(
        tmp_path, MINIMAL + '[api]\nbase_url = "http://localhost:3005"\ninsecure = true\n'
    )
    assert config.api.insecure


@pytest.mark.parametrize("key", ["token", "access_token", "password", "api_key", "TOKEN"])
def test_literal_token_key_is_refused(tmp_path: Path, key: str) -> None:
    err = error(tmp_path, MINIMAL + f'[api]\n{key} = "s3cr3t-value-123"\n')
    assert err.key == f"api.{key}"
    assert "token_env" in str(err) and "token_file" in str(err)
    assert "s3cr3t" not in str(err)


@pytest.mark.parametrize(
    "value",
    ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc", "ghp_1234567890abcdefghijABCDEFGHIJ123456"],
)
def test_token_env_holding_a_token_is_refused(tmp_path: Path, value: str) -> None:
    err = error(tmp_path, MINIMAL + f'[api]\ntoken_env = "{value}"\n')
    assert err.key == "api.token_env"
    assert value not in str(err) and value[:10] not in str(err)
    assert "environment" in str(err)


def test_load_does_not_need_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAPREP_TOKEN", raising=False)
    config = load(tmp_path, MINIMAL + '[api]\nbase_url = "https://h.example"\n')
    assert config.api.token_env == "DATAPREP_TOKEN"


def test_empty_axis(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="'Region' is empty") as info:
        load(tmp_path, MINIMAL.replace('["01", "02"]', "[]"))
    assert info.value.key == "matrix.Region"
    assert info.value.path == str(tmp_path / "sweep.toml")


def test_exclude_unknown_parameter(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="Did you mean 'Region'") as info:
        load(tmp_path, MINIMAL + '[[matrix.exclude]]\nregion = "01"\n')
    assert info.value.key == "matrix.exclude[0].region"


def test_placeholder_naming_unknown_parameter(tmp_path: Path) -> None:
    text = MINIMAL + '[[overrides.writeSettings]]\npath = "o/{Regon}.csv"\n'
    with pytest.raises(MatrixError, match="Did you mean 'Region'") as info:
        load(tmp_path, text)
    assert info.value.key == "overrides.writesettings[0].path"
    assert info.value.path == str(tmp_path / "sweep.toml")


def test_csv_input_missing(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="relative to the config file's directory") as info:
        load(tmp_path, MINIMAL + 'Other = { csv = "nope.csv", column = "x" }\n')
    assert info.value.key == "matrix.Other.csv"


def test_max_combinations_refuses_the_bound_before_excludes_unless_allowed(
    tmp_path: Path,
) -> None:
    text = (
        MINIMAL.replace("dataset = 33", "dataset = 33\nmax_combinations = 3")
        + 'mode = ["a", "b"]\n[[matrix.exclude]]\nRegion = "02"\n'
    )
    config = load(tmp_path, text)  # 4 combinations before the exclude, 2 after
    planner = Planner(config, history=[], run_id="r1", as_of=AS_OF)
    with pytest.raises(MatrixError, match="up to 4 combinations") as info:
        planner.check()
    assert info.value.key == "sweep.max_combinations"
    assert "--allow-large" in str(info.value) and str(config.path) in str(info.value)
    assert planner.check(allow_large=True).total == 2


# ---------------------------------------------------------------- names and placeholders

HIDDEN = {
    "CR": ("\\r", "\\r"),
    "LF": ("\\n", "\\n"),
    "NUL": ("\\u0000", "\\x00"),
    "ESC": ("\\u001b", "\\x1b"),
    "DEL": ("\\u007f", "\\x7f"),
    "C1 NEL": ("\\u0085", "\\x85"),
    "C1 CSI": ("\\u009b", "\\x9b"),
    "RLO": ("\\u202e", "\\u202e"),
    "LRE": ("\\u202a", "\\u202a"),
    "RLI": ("\\u2067", "\\u2067"),
    "PDI": ("\\u2069", "\\u2069"),
    "ZWSP": ("\\u200b", "\\u200b"),
    "ZWJ": ("\\u200d", "\\u200d"),
    "BOM": ("\\ufeff", "\\ufeff"),
}


@pytest.mark.parametrize(("toml_escape", "shown"), list(HIDDEN.values()), ids=list(HIDDEN))
def test_parameter_name_with_a_hidden_character_is_refused(
    tmp_path: Path, toml_escape: str, shown: str
) -> None:
    text = MINIMAL.replace("Region =", f'"Re{toml_escape}gion" =')
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert info.value.key == f"matrix.Re{shown}gion"  # escaped, so it can be read
    assert info.value.path == str(tmp_path / "sweep.toml")
    assert f"Re{shown}gion" in message and "Rename" in message
    assert message.isprintable()


@pytest.mark.parametrize(
    ("matrix", "key"),
    [
        ('[[matrix.zip]]\n"a\\u200bb" = ["1"]\nc = ["2"]\n', "matrix.zip[0].a\\u200bb"),
        ('[[matrix.include]]\n"a\\u202eb" = "1"\n', "matrix.include[0].a\\u202eb"),
        ('[[matrix.exclude]]\n"Region\\u2066" = "01"\n', "matrix.exclude[0].Region\\u2066"),
    ],
    ids=["zip", "include", "exclude"],
)
def test_hidden_characters_are_refused_wherever_a_name_is_written(
    tmp_path: Path, matrix: str, key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + matrix)
    assert info.value.key == key
    assert str(info.value).isprintable()


def test_rows_file_column_with_a_hidden_character_is_refused(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("Region,Mo\u200bde\n01,a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"Mo\\u200bde") as info:
        load(tmp_path, '[sweep]\nname = "t"\ndataset = 1\n[matrix]\nrows = "rows.csv"\n')
    assert info.value.key == "matrix.rows"


def test_visible_non_ascii_names_are_fine(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL.replace("Region =", '"Région_東京" ='))
    assert config.matrix.param_names == ("Région_東京",)


@pytest.mark.parametrize(
    "placeholder", ["{Region:>200000000}", "{Region!r}", "{Region!s:>4}", "{Region:03d}"]
)
def test_placeholder_format_specs_and_conversions_are_refused(
    tmp_path: Path, placeholder: str
) -> None:
    text = MINIMAL + f'[[overrides.writeSettings]]\npath = "o/{placeholder}.csv"\n'
    with pytest.raises(ConfigError, match="placeholders take no format spec") as info:
        load(tmp_path, text)
    assert info.value.key == "overrides.writesettings[0].path"
    assert info.value.path == str(tmp_path / "sweep.toml")
    assert "{Region}" in str(info.value)


def test_a_strftime_pattern_on_a_date_placeholder_is_still_accepted(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + "day = [2024-01-05]\n"
        + '[[overrides.writeSettings]]\npath = "o/{day:%Y/%m/%d}/{Region}.csv"\n'
    )
    assert load(tmp_path, text).overrides["writesettings"][0]["path"].endswith("{Region}.csv")


@pytest.mark.parametrize(
    ("line", "sent"),
    [("", "absent"), ('ranfrom = "null"', None), ('ranfrom = "schedule"', "schedule")],
)
def test_sweep_ranfrom_is_sent_only_when_set_and_null_as_json_null(
    tmp_path: Path, line: str, sent: object
) -> None:
    config = load(tmp_path, f'[sweep]\nname = "r"\ndataset = 33\n{line}\n[matrix]\nA = ["1"]\n')
    (item,) = list(Planner(config, history=[], run_id="r1", as_of=AS_OF))
    assert item.body.get("ranfrom", "absent") == sent  # what the POST sends, None as JSON null


def test_sweep_ranfrom_refuses_values_outside_the_enum(tmp_path: Path) -> None:
    text = '[sweep]\nname = "r"\ndataset = 33\nranfrom = "cli"\n[matrix]\nA = ["1"]\n'
    err = error(tmp_path, text)
    assert err.key == "sweep.ranfrom" and "ui, schedule, api, null" in str(err)

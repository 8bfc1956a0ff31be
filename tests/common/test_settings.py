"""hearth_common.settings: one pydantic model -> flags, HEARTH_<PROGRAM>_* variables and a config file, layered
command line > environment > file > defaults; keys never on a command line; every mistake one line."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from hearth_common.settings import Option, Program, SettingsError, layer
from hearth_common.version import PYPROJECT, version


class Demo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    port: int = Field(8000, ge=0, le=65535, description="port to bind")
    host: str = Field("127.0.0.1", description="address to bind")
    mode: Literal["fast", "slow"] = Field("fast", description="how")
    fancy: bool = Field(False, description="be fancy")
    names: list[str] = Field(default_factory=list, description="more names")
    timeout: float = Field(5.0, gt=0, description="seconds to wait")
    model_path: Path | None = Field(None, description="a file")
    router: str | None = Field(None, description="where to register")
    api_key: str | None = Field(None, description="the key")
    api_key_file: Path | None = Field(None, description="owner-only file holding the key")
    table: dict[str, int] = Field(default_factory=dict, description="config file only")


PROGRAM = Program(
    "demo",
    Demo,
    "python -m demo",
    "A demo.",
    secrets=("api_key",),
    options={"port": Option(aliases=("-p",)), "fancy": Option(aliases=("-f",))},
    refused={"-c": "-c means something else here: give --port"},
)


def load(argv: list[str], env: dict[str, str] | None = None, file: dict[str, Any] | None = None) -> Demo:
    config_file = (lambda given: (file, "demo.toml")) if file is not None else None
    return PROGRAM.load(argv, env or {}, config_file).settings


def one_line_error(argv: list[str], env: dict[str, str] | None = None, file: dict[str, Any] | None = None) -> str:
    with pytest.raises(SettingsError) as info:
        load(argv, env, file)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_an_environment_variable_sets_a_field() -> None:
    cfg = load(
        [],
        {
            "HEARTH_DEMO_PORT": "9001",
            "HEARTH_DEMO_MODE": "slow",
            "HEARTH_DEMO_FANCY": "on",
            "HEARTH_DEMO_NAMES": "a, b",
            "HEARTH_DEMO_HOST": "",
        },
    )  # an empty variable is unset
    assert (cfg.port, cfg.mode, cfg.fancy, cfg.names, cfg.host) == (9001, "slow", True, ["a", "b"], "127.0.0.1")


def test_command_line_over_environment_over_file_over_defaults() -> None:
    file = {"port": 1, "host": "10.0.0.1", "mode": "slow", "timeout": 7.5, "table": {"x": 1}}
    env = {"HEARTH_DEMO_PORT": "2", "HEARTH_DEMO_HOST": "10.0.0.2"}
    cfg = load(["--port", "3"], env, file)
    assert (cfg.port, cfg.host, cfg.mode, cfg.timeout, cfg.table, cfg.fancy) == (
        3,
        "10.0.0.2",
        "slow",
        7.5,
        {"x": 1},
        False,
    )
    assert load(["--no-fancy"], {"HEARTH_DEMO_FANCY": "1"}).fancy is False  # a flag can turn off what env turned on


def test_aliases_and_flags_parse_alike() -> None:
    assert load(["-p", "9", "-f"]) == load(["--port", "9", "--fancy"]) == load(["--port=9", "-f", "on"])
    assert load(["-f", "off"]).fancy is False


@pytest.mark.parametrize(
    ("argv", "env", "file", "where"),
    [
        (["--port", "70000"], {}, None, "--port: "),
        ([], {"HEARTH_DEMO_PORT": "x"}, None, "HEARTH_DEMO_PORT: "),
        ([], {}, {"port": -1}, "demo.toml: port: "),
        ([], {"HEARTH_DEMO_MODE": "medium"}, None, "HEARTH_DEMO_MODE: "),
        ([], {}, {"bogus": 1}, "demo.toml: bogus: "),
        ([], {"HEARTH_DEMO_PROT": "1"}, None, "HEARTH_DEMO_PROT: not a setting"),  # a typo is not ignored
        ([], {"HEARTH_DEMO_TABLE": "{}"}, None, "HEARTH_DEMO_TABLE: not a setting"),  # tables: the file only
        (["--mode", "medium"], {}, None, "invalid choice"),
        (["--prot", "1"], {}, None, "unrecognized arguments: --prot"),
        (["--table", "x"], {}, None, "unrecognized arguments"),
        (["-c", "4096"], {}, None, "-c means something else here"),
        ([], {"HEARTH_DEMO_LOG_LEVEL": "loud"}, None, "HEARTH_DEMO_LOG_LEVEL"),
    ],
)
def test_a_bad_value_is_one_line_naming_where_it_came_from(
    argv: list[str], env: dict[str, str], file: dict[str, Any] | None, where: str
) -> None:
    assert where in one_line_error(argv, env, file)


def test_a_key_is_refused_on_the_command_line_and_never_echoed() -> None:
    for argv in (["--api-key", "sk-secret-1"], ["--api-key=sk-secret-1"], ["--api-key"]):
        message = one_line_error(argv)
        assert "sk-secret-1" not in message
        assert "--api-key-file" in message and "HEARTH_DEMO_API_KEY" in message
    # not an abbreviation of --api-key-file either (argparse would take a prefix by default)
    assert "--api-key-file" in one_line_error(["--api-key", "/tmp/x"])
    assert "--api-key" not in PROGRAM.parser().format_help().replace("--api-key-file", "")


def test_keys_from_the_environment_or_an_owner_only_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-file\n")
    key.chmod(0o600)
    assert load([], {"HEARTH_DEMO_API_KEY": "sk-env"}).api_key == "sk-env"
    assert load(["--api-key-file", str(key)], {"HEARTH_DEMO_API_KEY": "sk-env"}).api_key == "sk-file"  # CLI over env
    assert load([], {"HEARTH_DEMO_API_KEY": "sk-env"}, {"api_key_file": str(key)}).api_key == "sk-env"  # env over file
    assert load([], {}, {"api_key": "sk-in-file"}).api_key == "sk-in-file"
    key.chmod(0o644)
    assert "chmod 600" in one_line_error(["--api-key-file", str(key)])


def test_a_layer_giving_a_key_or_its_file_replaces_both_under_it() -> None:
    merged = layer(["api_key"], [{"api_key": "a", "port": 1}, {"api_key_file": "f"}, {"port": 2}])
    assert merged == {"api_key_file": "f", "port": 2}


def test_help_says_each_default_once_with_placeholders_that_mean_something() -> None:
    text = PROGRAM.parser().format_help()
    assert "(default: None)" not in text and "(default: [])" not in text and "(default: False)" not in text
    assert "--port N, -p N" in text and "(default: 8000)" in text
    assert "--timeout SECONDS" in text and "--router URL" in text and "--host ADDR" in text
    assert "--model-path PATH" in text and "--api-key-file PATH" in text
    assert "HEARTH_DEMO_" in text  # the environment is said once, in the epilog
    assert "-f [on|off]" in text


def test_version_is_the_package_metadata_or_the_checkout_pyproject() -> None:
    with PYPROJECT.open("rb") as f:
        checkout = tomllib.load(f)["project"]["version"]
    try:
        installed = metadata.version("hearth")
    except metadata.PackageNotFoundError:
        installed = checkout
    assert version() == installed
    with pytest.raises(SystemExit) as exit_info:
        PROGRAM.parser().parse_args(["--version"])
    assert exit_info.value.code == 0


def test_the_converter_prints_its_version_too(capsys: pytest.CaptureFixture[str]) -> None:
    from convert.__main__ import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"hearth-convert {version()}\n"

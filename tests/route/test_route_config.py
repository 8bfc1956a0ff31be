"""Settings: flags generated from the model, the TOML file under them, one-line errors; the state file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from route.config import SECRETS, BackendSpec, RouterConfig, build_parser, load_config
from route.errors import ConfigError
from route.registry import Registry, load_state


def test_every_simple_field_has_a_flag() -> None:
    flags = {a.dest for a in build_parser()._actions}
    simple = {n for n in RouterConfig.model_fields if n not in ("backends", "model_strategies", *SECRETS)}
    assert simple <= flags
    assert not flags & set(SECRETS)  # keys never on a command line: `ps` shows it to every user


def test_defaults_follow_the_api() -> None:
    cfg = load_config([])
    assert (cfg.host, cfg.port, cfg.strategy, cfg.health_interval) == ("127.0.0.1", 8080, "least_connections", 30.0)


def test_file_under_flags(tmp_path: Path) -> None:
    f = tmp_path / "router.toml"
    f.write_text(
        'strategy = "round_robin"\nport = 9000\n'
        '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:8001/"\nmodels = ["qwen", "q"]\n'
        '[model_strategies]\nqwen = "prefix"\n'
    )
    cfg = load_config(["--config", str(f), "--port", "9100"])
    assert cfg.port == 9100 and cfg.strategy == "round_robin"
    assert cfg.backends[0].url == "http://127.0.0.1:8001" and cfg.strategy_for("qwen") == "prefix"
    assert cfg.strategy_for("other") == "round_robin"


@pytest.mark.parametrize(
    ("text", "needle"),
    [("strategy = 'fastest'", "strategy"), ("port = -1", "port"), ("bogus = 1", "bogus"), ("x = [", "not valid TOML"),
     ('[model_strategies]\nm = "best"', "model_strategies.m")],
)
def test_bad_files_give_one_line(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle) as info:
        load_config(["--config", str(f)])
    assert "\n" not in str(info.value)


@pytest.mark.slow  # three interpreter starts
def test_cli_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "state.json"
    broken.write_text("{not json")
    for args in (["--health-interval", "0"], ["--state-file", str(broken)], ["--config", str(tmp_path / "missing.toml")]):
        p = subprocess.run([sys.executable, "-m", "route", *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, args
        assert p.stderr.startswith("route: ") and p.stderr.count("\n") == 1, p.stderr
        assert "Traceback" not in p.stderr


@pytest.mark.parametrize(
    "body",
    [
        {"name": "a", "url": "ftp://host/", "models": ["m"]},
        {"name": "a", "url": "http:///nohost", "models": ["m"]},
        {"name": "a", "url": "http://h", "models": []},
        {"name": "", "url": "http://h", "models": ["m"]},
        {"name": "a", "url": "http://h", "models": ["m"], "weight": 0},
        {"name": "a", "url": "http://h", "models": "m"},
        {"url": "http://h", "models": ["m"]},
    ],
)
def test_bad_registrations_fail_validation(body: dict) -> None:
    with pytest.raises(ValueError):
        BackendSpec.model_validate(body)


def test_state_file_round_trip_is_atomic(tmp_path: Path) -> None:
    r = Registry()
    r.register(BackendSpec(name="a", url="http://127.0.0.1:1", models=["m", "alias"], weight=2), healthy=True)
    r.register(BackendSpec(name="b", url="http://127.0.0.1:2", models=["m"]), healthy=False)
    r.unregister("b")  # gone from the file at once
    path = tmp_path / "sub" / "state.json"
    r.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp file left
    specs, served = load_state(path)
    assert [s.model_dump() for s in specs] == [r.backends["a"].spec.model_dump()]
    assert served == {"m", "alias"}
    assert json.loads(path.read_text())["version"] == 1
    assert load_state(tmp_path / "absent.json") == ([], set())

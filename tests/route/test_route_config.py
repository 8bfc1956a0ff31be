"""Settings: flags and HEARTH_ROUTE_* variables generated from the model, the TOML file under them, one-line
errors; the state file; the router's log (one format, access lines, no key, a clean stop)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from hearth_common.version import version
from route.__main__ import main
from route.config import SECRETS, BackendSpec, RouterConfig, build_parser, load_config
from route.errors import ConfigError
from route.registry import Registry, load_state
from tests.route.route_procs import ADMIN_KEY, Cluster


def test_every_simple_field_has_a_flag() -> None:
    flags = {a.dest for a in build_parser()._actions}
    simple = {n for n in RouterConfig.model_fields if n not in ("backends", "model_strategies", *SECRETS)}
    assert simple <= flags
    assert not flags & set(SECRETS)  # keys never on a command line: `ps` shows it to every user


def test_defaults_follow_the_api() -> None:
    cfg = load_config([], {})
    assert (cfg.host, cfg.port, cfg.strategy, cfg.health_interval) == ("127.0.0.1", 8080, "least_connections", 5.0)


def test_environment_between_flags_and_file(tmp_path: Path) -> None:
    f = tmp_path / "router.toml"
    f.write_text('strategy = "round_robin"\nport = 9000\nhealth_interval = 7\n')
    env = {
        "HEARTH_ROUTE_PORT": "9100",
        "HEARTH_ROUTE_STRATEGY": "prefix",
        "HEARTH_ROUTE_CONFIG": str(f),
        "HEARTH_ROUTE_ALLOW_BACKEND_HOSTS": "10.0.0.0/8, *.lan",
        "HEARTH_ROUTE_OPEN_ADMIN": "yes",
    }
    cfg = load_config(["--port", "9200"], env)
    assert (cfg.port, cfg.strategy, cfg.health_interval) == (9200, "prefix", 7)  # flag > env > file > default
    assert cfg.allow_backend_hosts == ["10.0.0.0/8", "*.lan"] and cfg.open_admin
    assert load_config([], env).port == 9100


def test_keys_never_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert not {a.dest for a in build_parser()._actions if a.help != "==SUPPRESS=="} & set(SECRETS)
    for flag in ("--admin-key", "--api-key", "--backend-key"):
        assert main([flag, "sk-on-the-command-line"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{flag}-file" in err and "HEARTH_ROUTE_" in err
        assert "sk-on-the-command-line" not in err
    f = tmp_path / "router.toml"
    f.write_text('admin_key = "from-file"\n')
    f.chmod(0o600)
    assert load_config(["--config", str(f)], {}).admin_key == "from-file"
    assert load_config(["--config", str(f)], {"HEARTH_ROUTE_ADMIN_KEY": "from-env"}).admin_key == "from-env"


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"hearth-route {version()}\n"
    text = build_parser().format_help()
    assert "(default: None)" not in text and "--health-interval SECONDS" in text and "(default: 5)" in text


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
    [
        ("strategy = 'fastest'", "strategy"),
        ("port = -1", "port"),
        ("bogus = 1", "bogus"),
        ("x = [", "not valid TOML"),
        ('[model_strategies]\nm = "best"', "model_strategies.m"),
    ],
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
    for args in (
        ["--health-interval", "0"],
        ["--state-file", str(broken)],
        ["--config", str(tmp_path / "missing.toml")],
    ):
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


LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")


@pytest.mark.slow  # a real model server and a router
def test_router_log_access_lines_no_key_clean_stop(cluster: Cluster, demo_gguf: Callable[[str], Path]) -> None:
    api_key, backend_key, wrong = (f"sk-{n}-" + secrets.token_hex(8) for n in ("api", "backend", "wrong"))
    server = cluster.serve(
        demo_gguf("demo-think"), "--model-name", "demo-think", env={"HEARTH_SERVE_API_KEY": backend_key}
    )
    router = cluster.router(
        env={**os.environ, "HEARTH_ROUTE_API_KEY": api_key, "HEARTH_ROUTE_BACKEND_KEY": backend_key}
    )
    registered = router.http.post(
        "/backends/register", json={"name": "s1", "url": server.url, "model_type": "qwen", "models": ["demo-think"]}
    )
    assert registered.status_code == 200, registered.text
    client = openai.OpenAI(base_url=router.url + "/v1", api_key=api_key, max_retries=0)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(model="demo-think", messages=question, max_tokens=40)
    chunks = list(
        client.chat.completions.create(
            model="demo-think",
            messages=question,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=router.url + "/v1", api_key=wrong, max_retries=0).models.list()
    router.stop(signal.SIGTERM)
    assert router.proc is not None and router.proc.returncode == 0
    log = router.log_text()
    assert not any(k in log for k in (api_key, backend_key, wrong, ADMIN_KEY))
    lines = log.splitlines()
    assert all(LINE.match(line) for line in lines), log
    assert [line.split(": ", 1)[1] for line in lines if "listening" in line or "running" in line.lower()] == [
        f"listening on http://127.0.0.1:{router.port}"
    ]
    assert lines[-1].endswith(" INFO route: stopped") and "Traceback" not in log
    access = [line.split("route.access: ", 1)[1] for line in lines if "route.access: " in line]
    streamed = chunks[-1].usage
    assert whole.usage is not None and streamed is not None
    expected = [
        rf"POST /v1/chat/completions 200 \d+ ms model=demo-think backend=s1 prompt_tokens={u.prompt_tokens} "
        rf"completion_tokens={u.completion_tokens}"
        for u in (whole.usage, streamed)
    ]
    assert [a for a in access if a.startswith("POST /v1/chat")] and all(
        re.fullmatch(e, a) for e, a in zip(expected, [a for a in access if a.startswith("POST /v1/chat")], strict=True)
    ), access
    assert any(re.fullmatch(r"GET /v1/models 401 \d+ ms", a) for a in access), access

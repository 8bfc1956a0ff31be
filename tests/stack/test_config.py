"""The stack file: parsing, relative paths, and one-line errors that name the field (exit 2 from the CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack.__main__ import main
from stack.commands import router_toml, serve_argv
from stack.config import load_stack
from stack.errors import ConfigError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "models" / "hf").mkdir(parents=True)
    (tmp_path / "models" / "hf" / "config.json").write_text("{}")
    (tmp_path / "models" / "small.gguf").write_bytes(b"GGUF")
    (tmp_path / "notes.txt").write_text("not a model")
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "stack.toml"
    path.write_text(text)
    path.chmod(0o600)  # GOOD holds a key
    return path


GOOD = """
[router]
port = 9000
strategy = "round_robin"
admin_key = "secret"
state_file = "state/router.json"
[router.model_strategies]
think = "prefix"

[budget]
vram_gb = 6

[[models]]
name = "think"
aliases = ["t", "thinker"]
source = "models/hf"
port = 9100
replicas = 2
max_queue = 64

[[models]]
name = "small"
source = "models/small.gguf"
n_gpu_layers = 3
"""


def test_full_file_parses_and_paths_resolve_against_its_folder(folder: Path) -> None:
    stack = load_stack(write(folder, GOOD))
    think, small = stack.models
    assert think.source == folder / "models" / "hf"
    assert small.source == folder / "models" / "small.gguf"
    assert stack.router.state_file == folder / "state" / "router.json"
    assert think.names == ["think", "t", "thinker"]
    assert (think.replicas, think.max_queue, think.ctx_size) == (2, 64, 4096)
    assert stack.budget is not None and stack.budget.vram_gb == 6
    assert stack.router.model_strategies == {"think": "prefix"}


def test_on_demand_settings(folder: Path) -> None:
    stack = load_stack(
        write(
            folder,
            '[budget]\nram_gb = 7.5\n[[models]]\nname = "a"\nsource = "models/hf"\n'
            'ttl = 300\npreload = false\npinned = true\n[[models]]\nname = "b"\n'
            'source = "models/small.gguf"\n',
        )
    )
    a, b = stack.models
    assert stack.budget is not None and (stack.budget.ram_gb, stack.budget.vram_gb) == (7.5, None)
    assert (a.ttl, a.preload, a.pinned) == (300, False, True)
    assert (b.ttl, b.preload, b.pinned) == (0, True, False)  # as before on-demand: loaded at start, kept loaded


def test_router_config_is_valid_route_config(folder: Path) -> None:
    """What the supervisor writes for `python -m route --config` is read back by route's own loader."""
    from route.config import load_config

    stack = load_stack(write(folder, GOOD))
    config = folder / "router.toml"
    config.write_text(router_toml(stack, 9000, folder / "catalog.json"))
    cfg = load_config(["--config", str(config)])
    assert (cfg.port, cfg.strategy, cfg.admin_key) == (9000, "round_robin", None)
    assert "secret" not in config.read_text()  # the admin key reaches the router through its environment
    assert cfg.catalog == folder / "catalog.json"
    assert cfg.strategy_for("think") == "prefix" and cfg.strategy_for("small") == "round_robin"
    assert cfg.state_file == folder / "state" / "router.json"


def test_serve_argv_is_valid_serve_config(folder: Path) -> None:
    """The flags the supervisor passes are accepted by serve's own parser with the same values."""
    from serve.config import from_args

    stack = load_stack(write(folder, GOOD))
    argv = serve_argv(stack.models[0], folder / "x.gguf", 9101, 7)
    cfg = from_args(argv[3:])  # past `python -m serve`
    assert (cfg.port, cfg.n_gpu_layers, cfg.max_queue, cfg.model_name) == (9101, 7, 64, "think")
    hosts = stack.models[0].model_copy(update={"image_url_hosts": ["img.example", "[::1]:9000"]})
    assert from_args(serve_argv(hosts, folder / "x.gguf", 9101, 7)[3:]).image_url_hosts == (
        "img.example",
        "[::1]:9000",
    )


BAD = [
    ("[router]\nport = 8080\n", "models: Field required"),
    ('[[models]]\nname = "a"\nsource = "models/hf"\nport = 70000\n', "models.0.port"),
    ('[router]\nbogus = 1\n[[models]]\nname = "a"\nsource = "models/hf"\n', "router.bogus"),
    ('[[models]]\nname = "a"\nsource = "missing"\n', "models.0.source"),
    ('[[models]]\nname = "a"\nsource = "notes.txt"\n', "models.0.source"),
    ('[[models]]\nname = "a"\nsource = "models"\n', "models.0.source"),
    ('[[models]]\nname = "a b"\nsource = "models/hf"\n', "models.0.name"),
    ('[[models]]\nname = "a"\nsource = "models/hf"\nmax_concurrent = "two"\n', "models.0.max_concurrent"),
    ('[router]\nstrategy = "fastest"\n[[models]]\nname = "a"\nsource = "models/hf"\n', "router.strategy"),
    ('[budget]\nvram_gb = -1\n[[models]]\nname = "a"\nsource = "models/hf"\n', "budget.vram_gb"),
    (
        '[[models]]\nname = "a"\nsource = "models/hf"\n[[models]]\nname = "b"\naliases = ["a"]\nsource = "models/hf"\n',
        "'a' is already used",
    ),
    ('[[models]]\nname = "a"\nsource = "models/hf"\nport = 8080\n', "models.0.port"),  # the router's port
    ("[[models]\n", "not valid TOML"),
    ('[[models]]\nname = "a"\nsource = "models/hf"\nttl = -1\n', "models.0.ttl"),
    ('[[models]]\nname = "a"\nsource = "models/hf"\npreload = "maybe"\n', "models.0.preload"),
    ('[budget]\nram_gb = "lots"\n[[models]]\nname = "a"\nsource = "models/hf"\n', "budget.ram_gb"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_stack_file_names_the_field(folder: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_stack(write(folder, text))
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_cli_bad_file_one_line_exit_2(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(folder, '[[models]]\nname = "a"\nsource = "models/hf"\nctx_size = 1\n')
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "models.0.ctx_size" in err and "Traceback" not in err


def test_cli_missing_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.toml")]) == 2
    assert "cannot read the stack file" in capsys.readouterr().err


def test_commented_example_is_a_valid_stack_file(tmp_path: Path) -> None:
    """stack.example.toml (also in the README) parses once its example sources exist."""
    example = Path(__file__).resolve().parents[2] / "stack.example.toml"
    (tmp_path / "models" / "Qwen3-8B").mkdir(parents=True)
    (tmp_path / "models" / "Qwen3-8B" / "config.json").write_text("{}")
    (tmp_path / "models" / "gpt-oss-20b-q4_k_m.gguf").write_bytes(b"GGUF")
    (tmp_path / "models" / "gemma-3-4b-it-q4_k_m.gguf").write_bytes(b"GGUF")
    stack = load_stack(write(tmp_path, example.read_text()))
    assert [m.name for m in stack.models] == ["qwen3-8b", "gpt-oss-20b", "gemma3-4b"]
    assert stack.models[0].names == ["qwen3-8b", "qwen3", "default"]
    assert stack.budget is not None and (stack.budget.vram_gb, stack.budget.ram_gb) == (6.0, 12.0)
    assert [(m.preload, m.ttl, m.pinned) for m in stack.models] == [
        (True, 0, True),
        (False, 300, False),
        (False, 600, False),
    ]
    assert stack.router.port == 8080 and stack.router.model_strategies == {}


def test_readme_shows_the_example_as_it_is() -> None:
    root = Path(__file__).resolve().parents[2]
    section = (root / "README.md").read_text().split("## Stack file", 1)[1].split("\n## ", 1)[0]
    assert (root / "stack.example.toml").read_text() in section


def test_toml_under_environment_under_flags(folder: Path) -> None:
    from stack.__main__ import load

    path = write(folder, GOOD)
    env = {
        "HEARTH_STACK_FILE": str(path),
        "HEARTH_STACK_ROUTER__HEALTH_INTERVAL": "12",
        "HEARTH_STACK_ROUTER__STRATEGY": "prefix",
        "HEARTH_STACK_BUDGET__RAM_GB": "3.5",
        "HEARTH_STACK_LOAD_TIMEOUT": "60",
        "HEARTH_STACK_ROUTER__PORT": "9001",
    }
    options, stack, level = load([], env)
    assert (stack.router.health_interval, stack.router.strategy, stack.router.port) == (12, "prefix", 9001)
    assert stack.budget is not None and (stack.budget.vram_gb, stack.budget.ram_gb) == (6, 3.5)  # the file's and env's
    assert stack.router.admin_key == "secret" and stack.models[0].name == "think" and options.load_timeout == 60
    assert level == "info"
    assert load([], {**env, "HEARTH_STACK_PORT": "9002"})[1].router.port == 9002  # the --port option's variable
    assert load(["--port", "9003", "--log-level", "debug"], {**env, "HEARTH_STACK_PORT": "9002"})[1:] == (
        load([], {**env, "HEARTH_STACK_PORT": "9003"})[1],
        "debug",
    )
    # a key from the environment replaces the file's key and key file alike
    assert load([], {**env, "HEARTH_STACK_ROUTER__ADMIN_KEY": "from-env"})[1].router.admin_key == "from-env"


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        ([], {"HEARTH_STACK_ROUTER__PORT": "x"}, "HEARTH_STACK_ROUTER__PORT: "),
        (["--port", "70000"], {}, "--port: "),
        ([], {"HEARTH_STACK_PORT": "70000"}, "HEARTH_STACK_PORT: "),
        ([], {"HEARTH_STACK_ROUTER__MODEL_STRATEGIES": "{}"}, "HEARTH_STACK_ROUTER__MODEL_STRATEGIES"),
        ([], {"HEARTH_STACK_ROUTER__BOGUS": "1"}, "HEARTH_STACK_ROUTER__BOGUS"),
        ([], {"HEARTH_STACK_PORTS": "1"}, "HEARTH_STACK_PORTS: not a setting"),
        (["--api-key", "sk-typed"], {}, "HEARTH_STACK_ROUTER__API_KEY"),
        (["--apikey", "sk-typed"], {}, "unrecognized arguments: --apikey (see --help)"),
    ],
)
def test_option_and_environment_mistakes_are_one_line(
    folder: Path, argv: list[str], env: dict[str, str], needle: str
) -> None:
    from stack.__main__ import load

    path = write(folder, GOOD)
    with pytest.raises(ConfigError) as err:
        load([str(path), *argv], env)
    assert needle in str(err.value) and "\n" not in str(err.value) and "sk-typed" not in str(err.value)


def test_router_defaults_are_the_routers_own() -> None:
    """One value per setting: the stack file's [router] defaults are route's (the health interval was 5 s in one
    and 30 s in the other)."""
    from route.config import RouterConfig
    from stack.config import RouterSection

    shared = set(RouterSection.model_fields) & set(RouterConfig.model_fields) - {"admin_key", "admin_key_file"}
    assert {"health_interval", "port", "host", "strategy", "timeout", "max_retries"} <= shared
    for name in shared:
        assert RouterSection.model_fields[name].get_default(call_default_factory=True) == RouterConfig.model_fields[
            name
        ].get_default(call_default_factory=True), name
    assert RouterConfig().health_interval == RouterSection().health_interval == 5.0


def test_children_take_their_settings_from_the_stack_file_only(folder: Path) -> None:
    from stack.supervise import Supervisor

    stack = load_stack(write(folder, GOOD))
    sup = Supervisor(
        stack,
        {m.name: folder / "x.gguf" for m in stack.models},
        {"think": "qwen", "small": "llama"},
        {"think": 0, "small": 0},
        folder / "state",
        log_level="warning",
    )
    environ = {
        "HEARTH_SERVE_FLASH_ATTN": "1",
        "HEARTH_SERVE_ROUTER": "http://elsewhere",
        "HEARTH_ROUTE_PORT": "1",
        "HEARTH_STACK_PORT": "9000",
        "PATH": "/bin",
        "PYTHONPATH": "/extra",
    }
    server, router = sup.child_env(sup.servers[0], environ), sup.child_env(sup.router, environ)
    assert not any(k.startswith(("HEARTH_SERVE_FLASH", "HEARTH_SERVE_ROUTER", "HEARTH_ROUTE_PORT")) for k in server)
    assert server["HEARTH_SERVE_LOG_LEVEL"] == router["HEARTH_ROUTE_LOG_LEVEL"] == "warning"
    assert server["HEARTH_SERVE_API_KEY"] == router["HEARTH_ROUTE_BACKEND_KEY"]  # the keys the stack made
    assert server["PATH"] == "/bin" and server["PYTHONPATH"].endswith("/extra")


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    from hearth_common.version import version
    from stack.config import PROGRAM

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"hearth {version()}\n"
    text = PROGRAM.parser().format_help()
    assert "(default: None)" not in text and "STACK_FILE" in text and "--load-timeout SECONDS" in text

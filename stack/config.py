"""The stack file (TOML): one pydantic model for `[router]`, an optional `[budget]` and `[[models]]`; and the options of
`python -m stack` itself (StackOptions), whose flags and HEARTH_STACK_* variables come from hearth_common.settings.

Relative paths in the file resolve against the file's own folder, so a stack file can sit next to its models (the
built-in default.toml's against the demo models' folder, which a wheel ships elsewhere: hearth_common.paths).
The environment may set `[router]` and `[budget]` entries over the file: HEARTH_STACK_ROUTER__PORT=9000,
HEARTH_STACK_BUDGET__VRAM_GB=4 (relative paths there are relative to the working directory).
`load_stack(path)` raises ConfigError with one line naming the field, e.g. `stack.toml: models.0.port: ...`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hearth_common.keys import KeyFileError, read_key_file
from hearth_common.names import BACKEND_NAME as NAME, ModelType, StrategyName
from hearth_common.paths import demo_dir, stack_state_dir
from hearth_common.redis_link import check_url
from hearth_common.settings import Option, Program, layer
from hearth_common.validation import first_error
from route.config import HEALTH_INTERVAL, RouterConfig
from stack.errors import ConfigError

DEFAULT_STACK = Path(__file__).with_name("default.toml")  # its relative paths resolve against the demo models' folder
STATE_DIR = stack_state_dir()  # HEARTH_CACHE/stack, else the user's cache directory
ROUTE = RouterConfig.model_fields  # the router's own defaults: one value for each setting, here and there


class RouterSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(ROUTE["host"].default, description="address the router binds; clients talk to it")
    port: int = Field(ROUTE["port"].default, ge=0, le=65535, description="the router's port (0: any free port)")
    strategy: StrategyName = Field(ROUTE["strategy"].default, description="default routing strategy")
    model_strategies: dict[str, StrategyName] = Field(default_factory=dict, description="strategy per model name")
    health_interval: float = Field(
        HEALTH_INTERVAL,
        gt=0,
        le=3600,
        description="seconds between health checks of each model server (the "
        "router's, and the supervisor's hang check)",
    )
    health_timeout: float = Field(
        ROUTE["health_timeout"].default, gt=0, le=600, description="seconds one health check may take"
    )
    hang_checks: int = Field(
        2, ge=1, le=100, description="failed checks in a row after which the supervisor kills and restarts a server"
    )
    max_retries: int = Field(
        ROUTE["max_retries"].default, ge=0, le=10, description="retries on another backend before a response starts"
    )
    timeout: float = Field(
        ROUTE["timeout"].default, gt=0, description="seconds the router waits for a backend's next bytes"
    )
    admin_key: str | None = Field(
        None, min_length=1, description="the router's admin key (default: one made at each start)"
    )
    admin_key_file: Path | None = Field(None, description="an owner-only file holding the admin key")
    api_key: str | None = Field(None, min_length=1, description="key clients must give the router on /v1/*")
    api_key_file: Path | None = Field(None, description="an owner-only file holding the API key")

    @model_validator(mode="before")
    @classmethod
    def _key_files(cls, data: Any) -> Any:
        """A key file's key becomes the key (an owner-only file: checked here, at load)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in ("admin_key", "api_key"):
            file = data.get(f"{name}_file")
            if isinstance(file, str | Path):
                try:
                    data[name] = read_key_file(Path(file))
                except KeyFileError as err:
                    raise ValueError(str(err)) from None
        return data

    state_file: Path | None = Field(None, description="where the router keeps registrations across restarts")


class BudgetSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vram_gb: float | None = Field(None, ge=0, description="VRAM the models may use together (default: what is free)")
    ram_gb: float | None = Field(None, ge=0, description="RAM the model servers may use together (default: no limit)")
    reserve_mb: float = Field(512, ge=0, description="compute buffer each model server keeps on the GPU")


class NodeSection(BaseModel):
    """`[node]`: this stack as one node of a cluster (`python -m stack --node`): its supervisor and model servers on
    this host, with no router of its own; the routers it joins decide what it loads (route/nodes.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        pattern=NAME,
        description="its name at the routers, and its model servers' prefix NAME.MODEL (default: its host)",
    )
    host: str = Field("127.0.0.1", description="the node's address: its control API and model servers bind it")
    port: int = Field(0, ge=0, le=65535, description="its control API's port (0: any free port)")
    join: list[str] = Field(default_factory=list, description="the routers it joins (http://HOST:PORT, each)")
    key_file: Path | None = Field(None, description="owner-only file holding the node key (or HEARTH_NODE_KEY)")
    backend_key_file: Path | None = Field(
        None,
        description="owner-only file holding the key its model servers require, the routers' backend key "
        "(or HEARTH_NODE_BACKEND_KEY; default: none)",
    )
    rejoin_interval: float = Field(
        2.0, gt=0, le=600, description="seconds between its checks that each router still knows it"
    )
    shared_state: str | None = Field(
        None,
        description="redis://HOST:PORT/DB, the routers' --shared-state: its model servers keep stored responses "
        "there, so previous_response_id works on every node (default: each server keeps its own)",
    )
    shared_state_password_file: Path | None = Field(
        None, description="owner-only file holding the Redis password (or HEARTH_NODE_SHARED_STATE_PASSWORD)"
    )

    @field_validator("shared_state")
    @classmethod
    def _shared_state(cls, value: str | None) -> str | None:
        if value is None:
            return value
        return check_url(value, "shared_state_password_file or HEARTH_NODE_SHARED_STATE_PASSWORD")

    @field_validator("join")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.fullmatch(r"https?://[^/@?#\s]+", url.rstrip("/")):
                raise ValueError(f"{url!r} is not a router's URL (http://HOST:PORT)")
        return list(dict.fromkeys(u.rstrip("/") for u in value))

    @field_validator("host")
    @classmethod
    def _one_address(cls, value: str) -> str:
        if value in ("", "0.0.0.0", "::"):
            raise ValueError("a node binds the one address the routers reach it at, not every address")
        return value

    def node_name(self) -> str:
        return self.name or self.host


class ModelSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128, pattern=NAME, description="the name clients ask for")
    aliases: list[str] = Field(default_factory=list, description="more names for the same model")
    source: Path = Field(description="a .gguf file, or a HuggingFace folder converted on first start and cached")
    model_type: ModelType | None = Field(None, description="chat format family (default: what the GGUF says)")
    port: int | None = Field(None, ge=1, le=65535, description="first server port (default: a free port)")
    replicas: int = Field(1, ge=1, le=16, description="servers for this model (ports port, port+1, ...)")
    device_map: Literal["auto", "cpu", "gpu"] = Field("auto", description="auto: planned against the budget")
    n_gpu_layers: int | None = Field(None, ge=0, description="layers on the GPU; overrides device_map")
    ctx_size: int = Field(4096, ge=64, description="context per sequence")
    max_concurrent: int = Field(2, ge=1, le=64, description="sequences decoded together")
    max_queue: int = Field(16, ge=0, description="waiting requests beyond the running ones")
    kv_type: Literal["f16", "q8_0", "q4_0"] = Field("f16", description="KV cache element type")
    threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp; None: all cores")
    embeddings: bool = Field(False, description="serve /v1/embeddings (only), as `python -m serve --embeddings`")
    rerank: bool = Field(
        False,
        description="serve /v1/rerank (only) with a reranker (a cross-encoder, Qwen3-Reranker), as `python -m serve --rerank`",
    )
    image_url_hosts: list[str] = Field(
        default_factory=list,
        description="hosts whose http(s) image URLs its servers fetch (serve --image-url-hosts); default none",
    )
    cache_disk_gb: float | None = Field(
        None,
        ge=0,
        description="GiB of disk keeping its prompt cache's KV states across unloads and restarts (serve "
        "--cache-disk); 0: off; default: the server's (4 GiB, at most a tenth of the free space)",
    )
    ttl: float = Field(0, ge=0, description="idle seconds before it is unloaded; 0 keeps it loaded")
    preload: bool = Field(True, description="load at start; false: at its first request")
    pinned: bool = Field(False, description="never unloaded to make room for another model")

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys([self.name, *self.aliases]))

    @model_validator(mode="after")
    def _one_kind(self) -> ModelSection:
        if self.embeddings and self.rerank:
            raise ValueError("a model serves embeddings or reranks, not both: set one of embeddings, rerank")
        return self

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        if any(not a or len(a) > 256 for a in value):
            raise ValueError("aliases must be 1 to 256 characters")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: Path) -> Path:
        if value.is_file():
            if value.suffix != ".gguf":
                raise ValueError(f"{value} is neither a .gguf file nor a HuggingFace folder")
        elif value.is_dir():
            if not (value / "config.json").is_file():
                raise ValueError(f"{value} is a folder without config.json, not a HuggingFace checkpoint")
        else:
            raise ValueError(f"{value}: no such file or folder")
        return value


class StackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    router: RouterSection = Field(default_factory=RouterSection)
    budget: BudgetSection | None = None
    node: NodeSection | None = None
    models: list[ModelSection] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> StackConfig:
        seen: dict[str, str] = {}
        for i, model in enumerate(self.models):
            for name in model.names:
                if name in seen:
                    raise ValueError(f"models.{i}: name {name!r} is already used by model {seen[name]!r}")
                seen[name] = model.name
        ports: set[int] = {self.router.port} if self.router.port else set()
        for i, model in enumerate(self.models):
            if model.port is None:
                continue
            wanted = set(range(model.port, model.port + model.replicas))
            if wanted & ports or max(wanted) > 65535:
                raise ValueError(
                    f"models.{i}.port: ports {model.port}..{max(wanted)} clash with another port or run past 65535"
                )
            ports |= wanted
        return self


PATHS = ("state_file", "admin_key_file", "api_key_file")  # [router] entries that are paths
NODE_PATHS = ("key_file", "backend_key_file")  # [node] entries that are paths


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative `source` and [router] path entries become paths under the stack file's folder."""

    def under(value: Any) -> Any:
        if isinstance(value, str):
            path = Path(value).expanduser()
            return path if path.is_absolute() else (base / path).resolve()
        return value

    out = dict(raw)
    if isinstance(out.get("router"), dict):
        out["router"] = {k: under(v) if k in PATHS else v for k, v in out["router"].items()}
    if isinstance(out.get("node"), dict):
        out["node"] = {k: under(v) if k in NODE_PATHS else v for k, v in out["node"].items()}
    if isinstance(out.get("models"), list):
        out["models"] = [
            {**m, "source": under(m["source"])} if isinstance(m, dict) and "source" in m else m for m in out["models"]
        ]
    return out


SECTIONS: dict[str, type[BaseModel]] = {"router": RouterSection, "budget": BudgetSection, "node": NodeSection}
KEYS = ("admin_key", "api_key")  # [router] keys: a layer that gives a key or its file replaces both under it


def overlay(raw: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The file's [router] and [budget] under the environment's and the command line's entries."""
    out = dict(raw)
    for section, given in overrides.items():
        if given:
            below = out.get(section)
            out[section] = layer(KEYS, [below if isinstance(below, dict) else {}, given])
    return out


def parse_stack(
    raw: dict[str, Any],
    base: Path,
    label: str = "stack",
    overrides: dict[str, dict[str, Any]] | None = None,
    origin: dict[tuple[str, str], str] | None = None,
) -> StackConfig:
    """Validate a stack file's contents; `overrides` ({section: {key: value}}) go over its [router] and [budget],
    and an error in one of them is named by `origin` ((section, key) -> `HEARTH_STACK_ROUTER__PORT`, `--port`)."""
    try:
        return StackConfig.model_validate(overlay(_resolve_paths(raw, base), overrides or {}))
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"]]
        where = (origin or {}).get((loc[0], loc[1])) if len(loc) >= 2 else None
        if where is not None:
            raise ConfigError(f"{where}: {str(first['msg']).removeprefix('Value error, ')}") from None
        raise ConfigError(f"{label}: {first_error(err, default='stack')}") from None


def load_stack(
    path: Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    origin: dict[tuple[str, str], str] | None = None,
) -> StackConfig:
    """Read and validate a stack file (default: the built-in one), with parse_stack's overrides. Raises ConfigError."""
    path = path or DEFAULT_STACK
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the stack file ({err.strerror})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    router = raw.get("router")
    if isinstance(router, dict) and (router.get("admin_key") or router.get("api_key")) and path.stat().st_mode & 0o077:
        raise ConfigError(f"{path}: holds a key but other users can read it; chmod 600 it (or use api_key_file)")
    base = demo_dir() if path.resolve() == DEFAULT_STACK.resolve() else path.resolve().parent
    return parse_stack(raw, base, str(path), overrides, origin)


class StackOptions(BaseModel):
    """`python -m stack`'s own options (the stack file holds the rest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Path | None = Field(
        None, description="the stack file; default: the built-in stack/default.toml (the demo models)"
    )
    state_dir: Path = Field(
        STATE_DIR,
        description="logs, state.json, keys and the router's config go here; "
        "default: stack/ in the cache directory ($HEARTH_CACHE, else "
        "the user's cache directory)",
    )
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="the router's port, over the stack file's [router] port (with --node: the node's control API's)",
    )
    plan_only: bool = Field(False, description="convert and print the placement plan, start nothing")
    load_timeout: float = Field(
        600.0, gt=0, description="seconds a model server may take to load, and a request may wait for its model"
    )
    node: bool = Field(
        False,
        description="run as a node: this host's supervisor and model servers, no router; it joins the routers "
        "of --join (or [node] join) with the node key from HEARTH_NODE_KEY or --node-key-file",
    )
    host: str | None = Field(None, description="with --node: the node's address, over [node] host")
    join: list[str] | None = Field(None, description="with --node: a router to join (repeat it), over [node] join")
    node_name: str | None = Field(None, description="with --node: its name at the routers, over [node] name")
    node_key_file: Path | None = Field(None, description="with --node: owner-only file holding the node key")


PROGRAM = Program(
    "stack",
    StackOptions,
    "python -m stack",
    "Run the whole stack from one stack file: convert what needs converting, start a model server per model and "
    "the router, supervise them until Ctrl-C.",
    options={"file": Option(metavar="STACK_FILE")},
    positional="file",
    sections=SECTIONS,
    script="hearth",
    refused={
        f"--{name}": f"--{name} would put the key on the command line, where every user can read it (ps): use "
        f"{name.replace('-', '_')}_file in the stack file's [router] or "
        f"HEARTH_STACK_ROUTER__{name.replace('-', '_').upper()}"
        for name in ("api-key", "admin-key")
    }
    | {
        "--node-key": "--node-key would put the key on the command line, where every user can read it (ps): use "
        "--node-key-file or HEARTH_NODE_KEY"
    },
    epilog="[router] and [budget] entries of the stack file too: HEARTH_STACK_ROUTER__HEALTH_INTERVAL=10, "
    "HEARTH_STACK_BUDGET__VRAM_GB=4, HEARTH_STACK_ROUTER__API_KEY (over the file; a key never on the "
    "command line). The stack's children take their settings from the stack file only: HEARTH_SERVE_* and "
    "HEARTH_ROUTE_* are not passed on to them.",
)

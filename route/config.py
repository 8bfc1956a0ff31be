"""Router settings: one pydantic model; its flags, HEARTH_ROUTE_* variables and the --config TOML file are all read
into it (hearth_common.settings): the command line over the environment over the file over the defaults."""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hearth_common.names import StrategyName
from hearth_common.redis_link import check_url
from hearth_common.registration import Registration
from hearth_common.settings import Loaded, Option, Program, SettingsError
from route.errors import ConfigError
from route.hosts import check_pattern

BackendSpec = Registration  # one registration: POST /backends/register, a `[[backends]]` entry, a state-file line

# Keys never come from the command line (every user sees it in `ps`): the config file, a `--NAME-file` or
# HEARTH_ROUTE_NAME.
SECRETS = ("admin_key", "api_key", "backend_key", "shared_state_password", "node_key")
LOOPBACK = ["127.0.0.0/8", "::1", "localhost"]
# Seconds between active health checks, here and in the stack file. On one machine or a LAN a check is a GET of a
# model server's /health (under a millisecond, off its decode thread), so checking often costs nothing: a server that
# hangs without failing a request is out after 2 checks (10 s), and one that recovers is back within 5 s.
HEALTH_INTERVAL = 5.0


class RouterConfig(BaseModel):
    """Everything the router is told at start. Field descriptions become the --help text."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=8080, ge=0, le=65535, description="port to bind; 0: any free port")
    server: Literal["uvicorn", "hypercorn"] = Field(
        default="uvicorn", description="ASGI server; uvicorn (httptools) measured twice hypercorn's requests/s here"
    )
    strategy: StrategyName = Field(
        default="least_connections", description="routing strategy of models without their own"
    )
    health_interval: float = Field(
        default=HEALTH_INTERVAL, gt=0, le=3600, description="seconds between active health checks"
    )
    health_timeout: float = Field(default=5.0, gt=0, le=600, description="seconds one health check may take")
    unhealthy_after: int = Field(
        default=2, ge=1, le=100, description="failed checks in a row that mark a backend unhealthy"
    )
    healthy_after: int = Field(default=1, ge=1, le=100, description="passed checks in a row that mark it healthy again")
    max_retries: int = Field(
        default=2, ge=0, le=10, description="retries on another backend before the response starts"
    )
    timeout: float = Field(
        default=600.0, gt=0, description="seconds to wait for a backend's response or its next bytes"
    )
    connect_timeout: float = Field(default=5.0, gt=0, description="seconds to wait for a backend connection")
    eject_base: float = Field(default=10.0, gt=0, description="first passive ejection, seconds; doubles on each repeat")
    eject_max: float = Field(default=300.0, gt=0, description="longest passive ejection, seconds")
    prefix_block: int = Field(default=64, ge=1, le=65536, description="prefix strategy: characters per hashed block")
    prefix_threshold: float = Field(
        default=0.5, ge=0, le=1, description="prefix strategy: share of the prompt that must match"
    )
    prefix_margin: int = Field(
        default=4, ge=0, description="prefix strategy: extra active requests tolerated on the cached backend"
    )
    max_body: int = Field(default=16 * 1024 * 1024, ge=1024, description="largest request body; more get 413")
    body_timeout: float = Field(
        default=30.0, gt=0, le=3600, description="seconds a client may take to send its whole body; 408 after"
    )
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024, description="largest request line plus headers; 431 over"
    )
    max_headers: int = Field(default=100, ge=8, le=10000, description="most header lines in one request; 431 over")
    header_timeout: float = Field(
        default=10.0, gt=0, le=600, description="seconds a client may take to send its request headers; 408 after"
    )
    keep_alive: int = Field(default=5, ge=1, le=3600, description="seconds an idle client connection stays open")
    max_backend_connections: int = Field(
        default=256, ge=1, le=100_000, description="open connections to one backend, at most"
    )
    state_file: Path | None = Field(default=None, description="file that keeps registrations across restarts")
    admin_key: str | None = Field(
        default=None, min_length=1, description="Bearer key for /backends/*, /status, /metrics"
    )
    admin_key_file: Path | None = Field(
        default=None, description="owner-only file holding the admin key (or HEARTH_ROUTE_ADMIN_KEY)"
    )
    open_admin: bool = Field(default=False, description="without an admin key, let anyone register and remove backends")
    api_key: str | None = Field(default=None, min_length=1, description="key clients must send on /v1/*")
    api_key_file: Path | None = Field(
        default=None, description="owner-only file holding the client API key (or HEARTH_ROUTE_API_KEY)"
    )
    backend_key: str | None = Field(default=None, min_length=1, description="Bearer key sent to backends")
    backend_key_file: Path | None = Field(
        default=None, description="owner-only file holding the backends' key (or HEARTH_ROUTE_BACKEND_KEY)"
    )
    allow_backend_hosts: list[str] = Field(
        default_factory=lambda: list(LOOPBACK),
        min_length=1,
        description="hosts /backends/register accepts, comma-separated: IPs, networks, names, *.domain or *; default: loopback",
    )
    catalog: Path | None = Field(
        default=None, description="the stack's models to load on demand, written by python -m stack"
    )
    shared_state: str | None = Field(
        default=None,
        description="redis://HOST:PORT/DB: share backends, ejections, loads and counts with the other routers there",
    )
    shared_state_password: str | None = Field(default=None, min_length=1, description="the shared state's password")
    shared_state_password_file: Path | None = Field(
        default=None, description="owner-only file holding the Redis password (or HEARTH_ROUTE_SHARED_STATE_PASSWORD)"
    )
    node_key: str | None = Field(default=None, min_length=16, description="the key nodes register with")
    node_key_file: Path | None = Field(
        default=None, description="owner-only file holding the nodes' key (or HEARTH_ROUTE_NODE_KEY)"
    )
    config: Path | None = Field(
        default=None, description="TOML file of settings, [[backends]] to register at start and [model_strategies]"
    )
    backends: list[BackendSpec] = Field(default_factory=list, description="backends registered at start (config file)")
    model_strategies: dict[str, StrategyName] = Field(
        default_factory=dict, description="per-model strategy (config file)"
    )

    @field_validator("shared_state")
    @classmethod
    def _shared_state(cls, value: str | None) -> str | None:
        if value is None:
            return value
        return check_url(value, "--shared-state-password-file or HEARTH_ROUTE_SHARED_STATE_PASSWORD")

    @field_validator("allow_backend_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for pattern in value:
            check_pattern(pattern)
        return value

    def strategy_for(self, model: str) -> StrategyName:
        return self.model_strategies.get(model, self.strategy)


OPTIONS = {
    "allow_backend_hosts": Option(metavar="HOST[,HOST...]"),
    "prefix_threshold": Option(metavar="FRACTION"),
    "prefix_block": Option(metavar="CHARS"),
}
PROGRAM = Program(
    "route",
    RouterConfig,
    "python -m route",
    "Route OpenAI API requests over model servers.",
    options=OPTIONS,
    secrets=SECRETS,
    epilog="The --config file is under both. Keys never go on the command line: --admin-key-file, --api-key-file, "
    "--backend-key-file, --shared-state-password-file, --node-key-file (owner-only files) or HEARTH_ROUTE_ADMIN_KEY, "
    "HEARTH_ROUTE_API_KEY, HEARTH_ROUTE_BACKEND_KEY, HEARTH_ROUTE_SHARED_STATE_PASSWORD, HEARTH_ROUTE_NODE_KEY.",
)


def build_parser() -> argparse.ArgumentParser:
    return PROGRAM.parser()


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None


def _config_file(given: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The --config file's settings (none without one); a file holding a key must be owner-only."""
    if given.get("config") is None:
        return {}, "config file"
    path = Path(given["config"])
    values = load_toml(path)
    if any(values.get(name) for name in SECRETS):
        _owner_only(path)
    return values, str(path)


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> Loaded[RouterConfig]:
    """Flags over HEARTH_ROUTE_* over the --config file over the defaults; raises ConfigError with one line."""
    try:
        return PROGRAM.load(argv, environ, _config_file)
    except SettingsError as err:
        raise ConfigError(str(err)) from None


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> RouterConfig:
    return load(argv, environ).settings


def _owner_only(path: Path) -> None:
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise SettingsError(f"config file {path} holds a key but other users can read it; chmod 600 it")

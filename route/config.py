"""Router settings: one pydantic model; the CLI flags and the TOML config file are both read into it."""

from __future__ import annotations

import argparse
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hearth_common.keys import KeyFileError, read_key_file
from hearth_common.names import StrategyName
from hearth_common.registration import Registration
from hearth_common.validation import first_error
from route.errors import ConfigError
from route.hosts import check_pattern

BackendSpec = Registration  # one registration: POST /backends/register, a `[[backends]]` entry, a state-file line

# Keys never come from the command line (every user sees it in `ps`): the config file, a `--NAME-file` or the
# environment. Field name -> environment variable.
SECRETS = {"admin_key": "HEARTH_ROUTE_ADMIN_KEY", "api_key": "HEARTH_ROUTE_API_KEY", "backend_key": "HEARTH_ROUTE_BACKEND_KEY"}
LOOPBACK = ["127.0.0.0/8", "::1", "localhost"]


class RouterConfig(BaseModel):
    """Everything the router is told at start. Field descriptions become the --help text."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=8080, ge=0, le=65535, description="port to bind (0: any free port)")
    server: Literal["uvicorn", "hypercorn"] = Field(
        default="uvicorn", description="ASGI server; uvicorn (httptools) measured twice hypercorn's requests/s here"
    )
    strategy: StrategyName = Field(default="least_connections", description="default routing strategy")
    health_interval: float = Field(default=30.0, gt=0, le=3600, description="seconds between active health checks")
    health_timeout: float = Field(default=5.0, gt=0, le=600, description="timeout of one health check, seconds")
    unhealthy_after: int = Field(default=2, ge=1, le=100, description="failed checks in a row that mark a backend unhealthy")
    healthy_after: int = Field(default=1, ge=1, le=100, description="passed checks in a row that mark it healthy again")
    max_retries: int = Field(default=2, ge=0, le=10, description="retries on another backend before the response starts")
    timeout: float = Field(default=600.0, gt=0, description="seconds to wait for a backend's response or its next bytes")
    connect_timeout: float = Field(default=5.0, gt=0, description="seconds to wait for a backend connection")
    eject_base: float = Field(default=10.0, gt=0, description="first passive ejection, seconds; doubles on each repeat")
    eject_max: float = Field(default=300.0, gt=0, description="longest passive ejection, seconds")
    prefix_block: int = Field(default=64, ge=1, le=65536, description="prefix strategy: characters per hashed block")
    prefix_threshold: float = Field(default=0.5, ge=0, le=1, description="prefix strategy: share of the prompt that must match")
    prefix_margin: int = Field(default=4, ge=0, description="prefix strategy: extra active requests tolerated on the cached backend")
    max_body: int = Field(default=16 * 1024 * 1024, ge=1024, description="largest request body, bytes")
    body_timeout: float = Field(default=30.0, gt=0, le=3600, description="seconds a client may take to send its whole body (408 after)")
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024, description="largest request line plus headers, bytes (431 over)")
    max_headers: int = Field(default=100, ge=8, le=10000, description="most header lines in one request (431 over)")
    header_timeout: float = Field(default=10.0, gt=0, le=600, description="seconds a client may take to send its request headers (408 after)")
    keep_alive: int = Field(default=5, ge=1, le=3600, description="seconds an idle client connection stays open")
    max_backend_connections: int = Field(default=256, ge=1, le=100_000, description="open connections to one backend, at most")
    state_file: Path | None = Field(default=None, description="file that keeps registrations across restarts")
    admin_key: str | None = Field(default=None, min_length=1, description="Bearer key for /backends/*, /status, /metrics")
    admin_key_file: Path | None = Field(default=None, description="owner-only file holding the admin key (or HEARTH_ROUTE_ADMIN_KEY)")
    open_admin: bool = Field(default=False, description="without an admin key, let anyone register and remove backends")
    api_key: str | None = Field(default=None, min_length=1, description="key clients must send on /v1/*")
    api_key_file: Path | None = Field(default=None, description="owner-only file holding the client API key (or HEARTH_ROUTE_API_KEY)")
    backend_key: str | None = Field(default=None, min_length=1, description="Bearer key sent to backends")
    backend_key_file: Path | None = Field(default=None, description="owner-only file holding the backends' key (or HEARTH_ROUTE_BACKEND_KEY)")
    allow_backend_hosts: list[str] = Field(
        default_factory=lambda: list(LOOPBACK), min_length=1,
        description="hosts /backends/register accepts, comma-separated: IPs, networks, names, *.domain or * (default: loopback)",
    )
    catalog: Path | None = Field(default=None, description="the stack's models to load on demand (python -m stack writes it)")
    config: Path | None = Field(default=None, description="TOML file: settings, [[backends]], [model_strategies]")
    backends: list[BackendSpec] = Field(default_factory=list, description="backends registered at start (config file)")
    model_strategies: dict[str, StrategyName] = Field(default_factory=dict, description="per-model strategy (config file)")

    @field_validator("allow_backend_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for pattern in value:
            check_pattern(pattern)
        return value

    def strategy_for(self, model: str) -> StrategyName:
        return self.model_strategies.get(model, self.strategy)


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _flag_type(annotation: Any) -> tuple[Any, list[str] | None] | None:
    """argparse type and choices for a simple field, None for fields only the config file sets."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _flag_type(args[0]) if len(args) == 1 else None
    if typing.get_origin(annotation) is Literal:
        return str, list(typing.get_args(annotation))
    if annotation == list[str]:
        return _comma_list, None
    if annotation in (str, int, float, Path, bool):
        return annotation, None
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m route", description="Route OpenAI API requests over model servers.")
    for name, field in RouterConfig.model_fields.items():
        flag = _flag_type(field.annotation)
        if flag is None or name in SECRETS:
            continue
        kind, choices = flag
        if kind is bool:
            parser.add_argument("--" + name.replace("_", "-"), dest=name, action="store_true", default=argparse.SUPPRESS,
                                help=field.description)
            continue
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            choices=choices,
            default=argparse.SUPPRESS,  # so the file's value wins over an untouched flag
            help=f"{field.description} (default: {field.default})",
        )
    return parser


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_config(argv: list[str] | None = None) -> RouterConfig:
    """CLI flags over the --config file over the defaults; raises ConfigError with one line."""
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    if args.get("config") is not None:
        values.update(load_toml(args["config"]))
        if any(values.get(name) for name in SECRETS):
            _owner_only(args["config"])
    values.update(args)
    values.update(_keys(values))
    try:
        return RouterConfig(**values)
    except ValidationError as exc:
        raise ConfigError(f"invalid setting {first_error(exc)}") from None


def _owner_only(path: Path) -> None:
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise ConfigError(f"config file {path} holds a key but other users can read it; chmod 600 it")


def _keys(values: dict[str, Any], environ: typing.Mapping[str, str] = os.environ) -> dict[str, str]:
    """Each key from its --NAME-file, else the config file, else the environment."""
    found = {}
    for name, env in SECRETS.items():
        file = values.get(f"{name}_file")
        try:
            key = read_key_file(Path(file)) if file is not None else values.get(name) or environ.get(env)
        except KeyFileError as exc:
            raise ConfigError(str(exc)) from None
        if key:
            found[name] = key
    return found

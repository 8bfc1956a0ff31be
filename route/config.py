"""Router settings: one pydantic model; the CLI flags and the TOML config file are both read into it."""

from __future__ import annotations

import argparse
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from route.errors import ConfigError

StrategyName = Literal["round_robin", "least_connections", "random", "weighted", "sticky", "prefix"]


class BackendSpec(BaseModel):
    """One registration: POST /backends/register, a `[[backends]]` entry, or a state-file line."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$")
    url: str = Field(min_length=1, max_length=2048)
    model_type: str = Field(default="generic", max_length=64)
    models: list[str] = Field(min_length=1, max_length=256)
    weight: float = Field(default=1.0, gt=0, le=1000)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an absolute http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError("url must not carry a query or fragment")
        return value.rstrip("/")

    @field_validator("models")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        if any(not m or len(m) > 256 for m in value):
            raise ValueError("model names must be 1 to 256 characters")
        return list(dict.fromkeys(value))  # drop duplicates, keep order


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
    state_file: Path | None = Field(default=None, description="file that keeps registrations across restarts")
    admin_key: str | None = Field(default=None, description="Bearer key required on /backends/* and /models/*")
    catalog: Path | None = Field(default=None, description="the stack's models to load on demand (python -m stack writes it)")
    config: Path | None = Field(default=None, description="TOML file: settings, [[backends]], [model_strategies]")
    backends: list[BackendSpec] = Field(default_factory=list, description="backends registered at start (config file)")
    model_strategies: dict[str, StrategyName] = Field(default_factory=dict, description="per-model strategy (config file)")

    def strategy_for(self, model: str) -> StrategyName:
        return self.model_strategies.get(model, self.strategy)


def _flag_type(annotation: Any) -> tuple[Any, list[str] | None] | None:
    """argparse type and choices for a simple field, None for fields only the config file sets."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _flag_type(args[0]) if len(args) == 1 else None
    if typing.get_origin(annotation) is Literal:
        return str, list(typing.get_args(annotation))
    if annotation in (str, int, float, Path):
        return annotation, None
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m route", description="Route OpenAI API requests over model servers.")
    for name, field in RouterConfig.model_fields.items():
        flag = _flag_type(field.annotation)
        if flag is None:
            continue
        kind, choices = flag
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


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{where}: {err['msg']}"


def load_config(argv: list[str] | None = None) -> RouterConfig:
    """CLI flags over the --config file over the defaults; raises ConfigError with one line."""
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    if args.get("config") is not None:
        values.update(load_toml(args["config"]))
    values.update(args)
    try:
        return RouterConfig(**values)
    except ValidationError as exc:
        raise ConfigError(f"invalid setting {first_error(exc)}") from None

"""The server's settings: one pydantic model; the command line is generated from it."""

from __future__ import annotations

import argparse
import types
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hearth_common.keys import KeyFileError, find_key
from hearth_common.names import ModelType
from serve.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "demo" / "demo-think"
CACHE = REPO / ".cache" / "serve"

# Keys never come from the command line (`ps` shows it to every user): a --NAME-file or the environment.
SECRETS = {"api_key": "HEARTH_SERVE_API_KEY", "router_key": "HEARTH_SERVE_ROUTER_KEY"}


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: Path = Field(DEMO_MODEL, description="a .gguf file, or a HuggingFace folder (converted once, cached)")
    model_type: ModelType | None = Field(None, description="chat format family; read from the GGUF when omitted")
    model_name: str | None = Field(None, description="the name clients ask for; default: the file or folder name")
    alias: tuple[str, ...] = Field((), description="more names clients may ask for, comma-separated")
    embeddings: bool = Field(False, description="serve /v1/embeddings (only) with the model's pooling")
    pooling: Literal["mean", "cls", "last"] | None = Field(None, description="embeddings pooling; default: the GGUF's")
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="port to bind (0: any free port)")
    device_map: Literal["auto", "cpu", "gpu"] = Field("auto", description="auto: as many layers as free VRAM holds")
    n_gpu_layers: int | None = Field(None, ge=0, description="layers to offload; overrides --device-map")
    flash_attn: bool = Field(False, description="use flash attention")
    kv_type: Literal["f16", "q8_0", "q4_0"] = Field("f16", description="KV cache element type")
    ctx_size: int = Field(4096, ge=64, description="context per sequence (capped at the model's training context)")
    max_concurrent: int = Field(2, ge=1, le=64, description="sequences decoded together in one batch")
    max_queue: int = Field(16, ge=0, description="waiting requests beyond the running ones; more get 429")
    prompt_chunk: int = Field(256, ge=16, description="prompt tokens processed per step, so streams keep flowing")
    threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp; None: all cores")
    cache_ram: int | None = Field(
        None, ge=0, description="MiB of host RAM keeping the KV state of sequences evicted from the prompt cache, "
        "found again by longest prefix (0: off; default: an eighth of the RAM available at start, at most 8192)")
    swa_full: bool = Field(
        True, description="full-size sliding-window KV cache (gemma3, gpt-oss; llama.cpp's library default): a prompt "
        "can reuse a cached prefix ending anywhere, e.g. the long system prompt and tool list agents share between "
        "conversations; --no-swa-full only a prefix ending near the cached end (a growing conversation's). Measured "
        "KV at 2 sequences x 4,096 tokens: gemma-3-1b's shape 208 MiB, 76 with --no-swa-full; gpt-oss-20b's 384 MiB, "
        "216 with it (the difference is 1.3%% of its weights)")
    api_key: str | None = Field(None, description="require 'Authorization: Bearer KEY' (or x-api-key) on /v1/*")
    api_key_file: Path | None = Field(None, description="owner-only file holding the API key (or HEARTH_SERVE_API_KEY)")
    max_body_bytes: int = Field(4 * 2**20, ge=1024, description="largest request body accepted")
    router: str | None = Field(None, description="router URL to register with at start and leave at shutdown")
    router_key: str | None = Field(None, description="the router's admin key, if it has one")
    router_key_file: Path | None = Field(None, description="owner-only file holding the router's admin key (or HEARTH_SERVE_ROUTER_KEY)")
    advertise_url: str | None = Field(None, description="URL the router should use (default: http://host:port)")

    @field_validator("alias", mode="before")
    @classmethod
    def _split_alias(cls, value: object) -> object:
        # The command line gives one string, as llama.cpp's --alias does.
        return tuple(a.strip() for a in value.split(",") if a.strip()) if isinstance(value, str) else value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """One flag per settings field, with the field's description and default."""
    parser = argparse.ArgumentParser(prog="python -m serve", description="Serve one model behind the OpenAI API.")
    for name, info in ServeConfig.model_fields.items():
        if name in SECRETS:
            continue
        annotation = info.annotation
        args = [a for a in get_args(annotation) if a is not type(None)]
        if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
        help_text = f"{info.description} (default: {info.default})"
        if annotation is bool:
            parser.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif get_origin(annotation) is Literal:
            parser.add_argument(_flag(name), choices=get_args(annotation), default=None, help=help_text)
        else:
            parser.add_argument(_flag(name), default=None, help=help_text)
    return parser


def from_args(argv: list[str] | None = None) -> ServeConfig:
    """Parse the command line; pydantic does the type checks. Raises pydantic.ValidationError, or ConfigError
    for a key file that cannot be used."""
    values = {k: v for k, v in vars(build_parser().parse_args(argv)).items() if v is not None}
    for name, env in SECRETS.items():
        file = values.get(f"{name}_file")
        try:
            key = find_key(Path(file) if file is not None else None, env)
        except KeyFileError as err:
            raise ConfigError(str(err)) from None
        if key:
            values[name] = key
    return ServeConfig(**values)

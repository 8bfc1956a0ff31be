"""The server's settings: one pydantic model; its flags and HEARTH_SERVE_* variables come from it
(hearth_common.settings), with llama.cpp's server spellings as aliases where they mean the same."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hearth_common.names import ModelType
from hearth_common.paths import conversions_dir, demo_dir
from hearth_common.redis_link import check_url
from hearth_common.settings import Loaded, Option, Program, SettingsError
from serve.errors import ConfigError

DEMO_MODEL = demo_dir() / "demo-think"
CACHE = conversions_dir()  # HEARTH_CACHE/gguf, else the user's cache directory

# Keys never come from the command line (`ps` shows it to every user): a --NAME-file or HEARTH_SERVE_NAME.
SECRETS = ("api_key", "router_key", "shared_state_password")


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: Path = Field(
        DEMO_MODEL,
        description="a .gguf file, or a HuggingFace folder (converted once, cached in "
        "$HEARTH_CACHE/gguf, else the user's cache directory); "
        "default: the built-in demo model demo-think",
    )
    model_type: ModelType | None = Field(None, description="chat format family; read from the GGUF when omitted")
    model_name: str | None = Field(None, description="the name clients ask for (default: the file or folder name)")
    alias: tuple[str, ...] = Field((), description="more names clients may ask for, comma-separated")
    embeddings: bool = Field(False, description="serve /v1/embeddings (only) with the model's pooling")
    pooling: Literal["mean", "cls", "last"] | None = Field(None, description="embeddings pooling (default: the GGUF's)")
    rerank: bool = Field(
        False,
        description="serve /v1/rerank (only) with a reranker: a GGUF whose pooling is rank (a cross-encoder, Qwen3-Reranker)",
    )
    mmproj: Path | None = Field(
        None,
        description="the image projector GGUF (llama.cpp's mmproj) of the model; default: NAME.mmproj.gguf beside "
        "NAME.gguf (a converted multimodal folder has one)",
    )
    max_images: int = Field(8, ge=0, description="images per request; more get 400")
    max_image_bytes: int = Field(8 * 2**20, ge=1024, description="bytes of one encoded image; more get 400")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="width x height of one image; more get 400")
    image_url_hosts: tuple[str, ...] = Field(
        (),
        description="hosts whose http(s) image URLs the server fetches (host: any port, host:port: that one), "
        "comma-separated; default none: remote image URLs get 400",
    )
    image_url_timeout: float = Field(10.0, gt=0, le=300, description="seconds to fetch one remote image, in all")
    host: str = Field("127.0.0.1", description="address to bind")
    server: Literal["uvicorn", "hypercorn"] = Field(
        "uvicorn", description="HTTP server; uvicorn (httptools) costs the event loop a third less a request here"
    )
    port: int = Field(8000, ge=0, le=65535, description="port to bind; 0: any free port")
    device_map: Literal["auto", "cpu", "gpu"] = Field("auto", description="auto: as many layers as free VRAM holds")
    n_gpu_layers: int | None = Field(None, ge=0, description="layers to offload; overrides --device-map")
    flash_attn: bool | None = Field(
        None,
        description="use flash attention (default: on for --embeddings and --rerank, where an encoder's batch of "
        "masked sequences runs 1.6-2.2x faster with it on CPU, as llama.cpp's own default does; off for chat)",
    )
    kv_type: Literal["f16", "q8_0", "q4_0"] = Field("f16", description="KV cache element type")
    ctx_size: int = Field(
        4096, ge=64, description="tokens of context per sequence, at most the model's training context"
    )
    max_concurrent: int = Field(2, ge=1, le=64, description="sequences decoded together in one batch")
    max_queue: int = Field(16, ge=0, description="waiting requests beyond the running ones; more get 429")
    prompt_chunk: int = Field(256, ge=16, description="prompt tokens processed per step, so streams keep flowing")
    threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp; None: all cores")
    cache_ram: int | None = Field(
        None,
        ge=0,
        description="MiB of host RAM keeping the KV state of sequences evicted from the prompt cache, "
        "found again by longest prefix (0: off; default: an eighth of the RAM available at start, at most 8192)",
    )
    cache_disk: int | None = Field(
        None,
        ge=0,
        description="MiB of disk keeping the KV states of cached sequences when the server stops (and, where that "
        "measures faster than decoding, those evicted from host RAM), in $HEARTH_CACHE/kv/MODEL-KEY/, restored by "
        "longest prefix after a restart (0: off; default: 4096, at most a tenth of the free space there)",
    )
    swa_full: bool = Field(
        True,
        description="full-size sliding-window KV cache (gemma3, gpt-oss; llama.cpp's library default): a prompt "
        "can reuse a cached prefix ending anywhere, e.g. the long system prompt and tool list agents share between "
        "conversations; --no-swa-full only a prefix ending near the cached end (a growing conversation's). Measured "
        "KV at 2 sequences x 4,096 tokens: gemma-3-1b's shape 208 MiB, 76 with --no-swa-full; gpt-oss-20b's 384 MiB, "
        "216 with it (the difference is 1.3%% of its weights)",
    )
    api_key: str | None = Field(None, description="require 'Authorization: Bearer KEY' (or x-api-key) on /v1/*")
    api_key_file: Path | None = Field(None, description="owner-only file holding the API key (or HEARTH_SERVE_API_KEY)")
    max_body_bytes: int = Field(4 * 2**20, ge=1024, description="largest request body accepted; more get 413")
    router: str | None = Field(None, description="router URL to register with at start and leave at shutdown")
    router_key: str | None = Field(None, description="the router's admin key, if it has one")
    router_key_file: Path | None = Field(
        None, description="owner-only file holding the router's admin key (or HEARTH_SERVE_ROUTER_KEY)"
    )
    advertise_url: str | None = Field(None, description="URL the router should use (default: http://host:port)")
    shared_state: str | None = Field(
        None,
        description="redis://HOST:PORT/DB (the routers' --shared-state): stored responses are kept there too, so "
        "previous_response_id works on every server of the cluster (serve/api/responses_shared.py)",
    )
    shared_state_password: str | None = Field(None, min_length=1, description="the shared state's password")
    shared_state_password_file: Path | None = Field(
        None, description="owner-only file holding the Redis password (or HEARTH_SERVE_SHARED_STATE_PASSWORD)"
    )
    responses_ttl: float = Field(
        86400.0, gt=0, description="seconds a stored response lives in the shared state after its last write"
    )
    responses_shared_bytes: int = Field(
        256 * 2**20, ge=1024, description="bytes of stored responses the shared state holds; the oldest go first"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ServeConfig:
        if self.rerank and (self.embeddings or self.pooling):
            raise ValueError("--rerank serves a reranker: it takes neither --embeddings nor --pooling")
        return self

    @field_validator("shared_state")
    @classmethod
    def _shared_state(cls, value: str | None) -> str | None:
        if value is None:
            return value
        return check_url(value, "--shared-state-password-file or HEARTH_SERVE_SHARED_STATE_PASSWORD")

    @property
    def use_flash_attn(self) -> bool:
        """--flash-attn as given, else on for an encoder (embeddings, rerank) and off for chat."""
        return self.flash_attn if self.flash_attn is not None else self.embeddings or self.rerank

    @field_validator("alias", "image_url_hosts", mode="before")
    @classmethod
    def _split_alias(cls, value: object) -> object:
        # The command line gives one string, as llama.cpp's --alias does.
        return tuple(a.strip() for a in value.split(",") if a.strip()) if isinstance(value, str) else value


# llama.cpp's server spellings, accepted where they mean the same thing here.
OPTIONS = {
    "model_path": Option(aliases=("-m", "--model")),
    "alias": Option(aliases=("-a",), metavar="NAME[,NAME...]"),
    "image_url_hosts": Option(metavar="HOST[:PORT][,...]"),
    "n_gpu_layers": Option(aliases=("-ngl", "--gpu-layers")),
    "max_concurrent": Option(aliases=("-np", "--parallel")),
    "threads": Option(aliases=("-t",)),
    "flash_attn": Option(aliases=("-fa",)),
    "ctx_size": Option(note="llama.cpp's -c is the total over its slots, here --ctx-size x --max-concurrent"),
}
REFUSED = {
    # llama.cpp's -c is the context of all its slots together, and with its unified KV cache (its newer default) each
    # slot may use all of it: no one reading of `-c N` here would be right for every llama.cpp user, so we ask.
    "-c": "-c is llama.cpp's context over all its slots; here --ctx-size is per sequence "
    "(total = --ctx-size x --max-concurrent): give --ctx-size N",
}
PROGRAM = Program(
    "serve",
    ServeConfig,
    "python -m serve",
    "Serve one model behind the OpenAI API.",
    options=OPTIONS,
    secrets=SECRETS,
    refused=REFUSED,
    epilog="Keys never go on the command line: --api-key-file PATH (owner-only) or HEARTH_SERVE_API_KEY; "
    "the router's admin key likewise (--router-key-file, HEARTH_SERVE_ROUTER_KEY), and the shared state's password "
    "(--shared-state-password-file, HEARTH_SERVE_SHARED_STATE_PASSWORD).",
)


def build_parser() -> argparse.ArgumentParser:
    return PROGRAM.parser()


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> Loaded[ServeConfig]:
    """The command line over HEARTH_SERVE_* over the defaults, keys read from their files. Raises ConfigError with
    one line (a bad value named by its flag or variable)."""
    try:
        return PROGRAM.load(argv, environ)
    except SettingsError as err:
        raise ConfigError(str(err)) from None


def from_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> ServeConfig:
    return load(argv, environ).settings

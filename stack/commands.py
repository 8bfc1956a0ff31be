"""What the stack's children are started with: the command line of a model server, the router's config file, and the
environment of each (ours without HEARTH_SERVE_* and HEARTH_ROUTE_*, plus the log level and its keys). Pure: the
supervisor writes the files and starts the processes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hearth_common.procs import child_env
from stack.config import ModelSection, StackConfig

CHILD_PREFIXES = ("HEARTH_SERVE_", "HEARTH_ROUTE_")  # settings the stack's children never take from our environment


def _toml_value(value: Any) -> str:
    # JSON's string and number syntax is valid TOML for the plain values written here.
    return json.dumps(str(value) if isinstance(value, Path) else value)


def router_toml(stack: StackConfig, port: int, catalog: Path | None = None) -> str:
    r = stack.router
    values = {
        "host": r.host,
        "port": port,
        "strategy": r.strategy,
        "health_interval": r.health_interval,
        "health_timeout": r.health_timeout,
        "max_retries": r.max_retries,
        "timeout": r.timeout,
        "state_file": r.state_file,
        "catalog": catalog,
    }
    lines = [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    if r.model_strategies:
        lines.append("[model_strategies]")
        lines += [f"{_toml_value(k)} = {_toml_value(v)}" for k, v in r.model_strategies.items()]
    return "\n".join(lines) + "\n"


def router_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "route", "--config", str(config)]


def serve_argv(model: ModelSection, gguf: Path, port: int, n_gpu_layers: int, host: str = "127.0.0.1") -> list[str]:
    """`host`: the address it binds (a node's own, stack/node.py; else loopback, behind the stack's router)."""
    argv = [
        sys.executable,
        "-m",
        "serve",
        "--model-path",
        str(gguf),
        "--model-name",
        model.name,
        "--port",
        str(port),
        *(["--host", host] if host != "127.0.0.1" else []),
        "--n-gpu-layers",
        str(n_gpu_layers),
        "--ctx-size",
        str(model.ctx_size),
        "--max-concurrent",
        str(model.max_concurrent),
        "--max-queue",
        str(model.max_queue),
        "--kv-type",
        model.kv_type,
    ]
    if model.model_type:
        argv += ["--model-type", model.model_type]
    if model.threads:
        argv += ["--threads", str(model.threads)]
    if model.cache_disk_gb is not None:
        argv += ["--cache-disk", str(round(model.cache_disk_gb * 1024))]
    if model.aliases:  # the server answers to them too (404 model_not_found for any other name)
        argv += ["--alias", ",".join(model.aliases)]
    if model.embeddings:
        argv.append("--embeddings")
    if model.rerank:
        argv.append("--rerank")
    if model.image_url_hosts:
        argv += ["--image-url-hosts", ",".join(model.image_url_hosts)]
    return argv


def environment(
    program: str, log_level: str, keys: Mapping[str, str], environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """A child's environment: ours without HEARTH_SERVE_* and HEARTH_ROUTE_* (the stack file is the children's one
    source of settings), our log level as `program`'s (HEARTH_SERVE_ or HEARTH_ROUTE_), and its keys."""
    env = child_env({k: v for k, v in environ.items() if not k.startswith(CHILD_PREFIXES)})
    return {**env, program + "LOG_LEVEL": log_level, **keys}

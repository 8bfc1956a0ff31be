"""Keys stay out of sight: read from an owner-only file or the environment, never from a command line
(`ps` shows every argument to every user), compared in constant time.

Environment names: HEARTH_SERVE_API_KEY, HEARTH_SERVE_ROUTER_KEY (serve); HEARTH_ROUTE_API_KEY,
HEARTH_ROUTE_ADMIN_KEY, HEARTH_ROUTE_BACKEND_KEY (route). A process's environment is readable by its owner only.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path


class KeyFileError(ValueError):
    """A key file that cannot be used; the message is one line for the CLI."""


def read_key_file(path: Path) -> str:
    try:
        info = path.stat()
        text = path.read_text()
    except OSError as err:
        raise KeyFileError(f"cannot read key file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path} is not text") from None
    if os.name == "posix" and info.st_mode & 0o077:
        raise KeyFileError(
            f"key file {path} is readable by other users (mode {stat.S_IMODE(info.st_mode):o}); chmod 600 it"
        )
    key = text.strip()
    if not key or any(c.isspace() for c in key):
        raise KeyFileError(f"key file {path} must hold one key on one line")
    return key


def find_key(file: Path | None, env: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The key from `file` when given, else from the environment variable `env`, else None."""
    if file is not None:
        return read_key_file(file)
    return environ.get(env) or None


def new_key() -> str:
    return secrets.token_urlsafe(32)


def write_key_file(path: Path, key: str) -> None:
    """Create (or overwrite) an owner-only file holding the key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, (key + "\n").encode())
    finally:
        os.close(fd)


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a client sent: `Authorization: Bearer KEY` (OpenAI's SDK) or `x-api-key: KEY` (Anthropic's)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return x_api_key.strip() if x_api_key else None


def key_matches(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())

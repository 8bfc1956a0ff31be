"""Where hearth finds its own files and keeps what it writes, the same in a checkout and in an installed wheel.

The demo models live in models/demo/ in a checkout; a wheel ships them as the package data of `hearth_demo`
(pyproject.toml maps that package to models/demo). Everything hearth writes (converted GGUFs, the stack's logs,
keys and state) goes under one cache directory: HEARTH_CACHE, else the user's cache directory (platformdirs:
~/.cache/hearth on Linux, ~/Library/Caches/hearth on macOS), never into the source tree or site-packages.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import platformdirs

CACHE_ENV = "HEARTH_CACHE"
CHECKOUT = Path(__file__).resolve().parents[1]
DEMO_PACKAGE = "hearth_demo"  # the wheel's name for models/demo (pyproject.toml: package-dir)


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The root of everything hearth writes: $HEARTH_CACHE, else the user's cache directory."""
    given = environ.get(CACHE_ENV)
    return Path(given).expanduser().absolute() if given else Path(platformdirs.user_cache_dir("hearth"))


def conversions_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Converted HuggingFace folders (serve --model-path FOLDER and the stack share them)."""
    return cache_dir(environ) / "gguf"


def stack_state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The stack's logs, keys, state.json and router config (`python -m stack --state-dir` moves them)."""
    return cache_dir(environ) / "stack"


class UnwritableDir(Exception):
    """A folder hearth must write to cannot be made or written; the message is one line naming it."""


def writable_dir(path: Path, what: str) -> Path:
    """Make `path` (with its parents) and write a scratch file there: UnwritableDir if either fails. Writing is the
    test, not the mode bits, which do not stop root (a folder under a file, or on a read-only mount, stops anyone)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UnwritableDir(f"cannot write to {what} {path} ({err.strerror or err})") from None
    return path


def demo_dir() -> Path:
    """The folder holding the demo checkpoints: the checkout's models/demo when run from one (also under an editable
    install, whose finder could point at another checkout), else the installed package data."""
    checkout = CHECKOUT / "models" / "demo"
    if (checkout / "MANIFEST.sha256").is_file():
        return checkout
    return Path(str(resources.files(DEMO_PACKAGE)))


def mmproj_path(text_gguf: Path) -> Path:
    """models/foo.q8_0.gguf -> models/foo.q8_0.mmproj.gguf: the image projector beside its text model, where the
    converter writes it and a model server looks for it."""
    text_gguf = Path(text_gguf)
    return text_gguf.with_name(text_gguf.name.removesuffix(".gguf") + ".mmproj.gguf")

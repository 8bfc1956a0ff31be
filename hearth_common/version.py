"""The version every CLI prints for --version: the installed package's, else the checkout's pyproject.toml."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def version() -> str:
    try:
        return metadata.version("hearth")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        pass
    try:
        with PYPROJECT.open("rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def version_line(program: str) -> str:
    return f"{program} {version()}"

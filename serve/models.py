"""--model-path -> a GGUF to load: a .gguf as is, a HuggingFace folder converted once into .cache/serve/.

The cache key is a hash of the folder's files, so an edited checkpoint converts again and an unchanged one is
loaded straight away.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from serve.config import CACHE
from serve.errors import ConfigError

HASHED = (".json", ".safetensors", ".model", ".txt", ".jinja")


def content_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in HASHED):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()[:16]


def resolve_model(path: Path, cache: Path = CACHE) -> tuple[Path, str]:
    """(GGUF path, default model name). Raises ConfigError with a one-line reason."""
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(f"{path}: not a .gguf file or a HuggingFace folder")
        return path, path.stem
    if not path.is_dir():
        raise ConfigError(f"{path}: no such file or folder")
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: a folder without config.json is not a HuggingFace checkpoint")
    out = cache / f"{path.resolve().name}-{content_hash(path)}.gguf"
    if not out.exists():
        from convert import convert_checkpoint  # imported late: only folders need it
        from convert.errors import ConvertError

        cache.mkdir(parents=True, exist_ok=True)
        try:
            convert_checkpoint(path, out, progress=False)
        except ConvertError as err:
            raise ConfigError(f"cannot convert {path}: {err}") from err
    return out, path.resolve().name

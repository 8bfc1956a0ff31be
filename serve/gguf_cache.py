"""--model-path -> a GGUF to load: a .gguf as is, a HuggingFace folder converted once into the cache
(hearth_common.paths: $HEARTH_CACHE/gguf, else the user's cache directory).

The cache key is a hash of the folder's files, so an edited checkpoint converts again and an unchanged one is
loaded straight away. The stack (stack/prepare.py) uses the same cache through `convert_cached`.

Each cached conversion has a record beside it (`NAME.gguf.json`): the source folder and its hash, the GGUF's size,
sha256 and a stamp (mtime, ctime, inode). Before a cached GGUF is used it is checked: the size and the stamp always
(instant), the sha256 only when the stamp changed (the file was touched, copied or written to). A GGUF that fails the
check is converted again when its source is there, and refused with a clear message when it is not: a truncated
file would crash-loop a server, and one with bytes overwritten would load and answer garbage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serve.config import CACHE
from serve.errors import ConfigError

HASHED = (".json", ".safetensors", ".model", ".txt", ".jinja")
RECORD = ".json"  # appended to the GGUF's name

log = logging.getLogger("serve")


def content_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in HASHED):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def cached_path(folder: Path, cache: Path = CACHE, source_hash: str | None = None) -> Path:
    """Where the conversion of `folder` is cached (one place for serve and the stack)."""
    return cache / f"{folder.resolve().name}-{source_hash or content_hash(folder)}.gguf"


def _stamp(stat: os.stat_result) -> list[int]:
    # ctime cannot be set by a user: any write, rename or chmod moves it, so a stamp that matches means untouched.
    return [stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def record_path(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + RECORD)


def read_record(gguf: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(record_path(gguf).read_text())
    except (OSError, ValueError):
        return None
    keys = {"source": str, "source_hash": str, "size": int, "sha256": str, "stamp": list}
    if not isinstance(record, dict) or any(not isinstance(record.get(k), t) for k, t in keys.items()):
        return None
    return record


def write_record(gguf: Path, source: Path, source_hash: str, sha256: str | None = None) -> None:
    """Record what `gguf` came from and what it is; written to a temp file and renamed."""
    stat = gguf.stat()
    record = {
        "source": str(source.resolve()),
        "source_hash": source_hash,
        "size": stat.st_size,
        "sha256": sha256 or file_sha256(gguf),
        "stamp": _stamp(stat),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{gguf.name}.", dir=gguf.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, record_path(gguf))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_cached(gguf: Path) -> str | None:
    """None when the cached GGUF is what its record says, else what is wrong (for a message)."""
    record = read_record(gguf)
    if record is None:
        return "has no readable record of what it was converted from"
    try:
        stat = gguf.stat()
    except FileNotFoundError:
        return "is missing"
    if stat.st_size != record["size"]:
        return f"is {stat.st_size} bytes, but was {record['size']} when written (truncated or replaced)"
    if _stamp(stat) == record["stamp"]:
        return None
    sha = file_sha256(gguf)
    if sha != record["sha256"]:
        return "has changed since it was written (its sha256 differs)"
    write_record(gguf, Path(record["source"]), record["source_hash"], sha)  # same bytes, new stamp: remember it
    return None


def convert_cached(
    folder: Path, cache: Path = CACHE, progress: bool = False, say: Callable[[str], None] | None = None
) -> Path:
    """The checked cached conversion of `folder`, converted now if missing or damaged. Raises ConfigError."""
    source_hash = content_hash(folder)
    out = cached_path(folder, cache, source_hash)
    if out.exists():
        problem = check_cached(out)
        if problem is None:
            return out
        if say:
            say(f"the cached conversion {out} {problem}; converting {folder} again")
    elif say:
        say(f"converting {folder} (once; cached as {out})")
    from convert import convert_checkpoint  # imported late: only folders need it
    from convert.errors import ConvertError

    cache.mkdir(parents=True, exist_ok=True)
    try:
        convert_checkpoint(folder, out, progress=progress, force=True)
    except ConvertError as err:
        raise ConfigError(f"cannot convert {folder}: {err}") from err
    write_record(out, folder, source_hash)
    return out


def checked_gguf(gguf: Path, say: Callable[[str], None] | None = None) -> Path:
    """A .gguf given by path: checked against its record when it is a cached conversion; reconverted from its
    source when damaged and the source is there; ConfigError when it is damaged and the source is not."""
    record = read_record(gguf)
    if record is None:  # a GGUF of the user's own: nothing to check it against
        return gguf
    problem = check_cached(gguf)
    if problem is None:
        return gguf
    source = Path(record["source"])
    if not (source / "config.json").is_file() or content_hash(source) != record["source_hash"]:
        raise ConfigError(
            f"{gguf}: this cached conversion {problem}, and its source {source} is gone or has changed; "
            f"delete the file, or serve the source folder to convert it again"
        )
    return convert_cached(source, gguf.parent, say=say)


def resolve_model(path: Path, cache: Path = CACHE) -> tuple[Path, str]:
    """(GGUF path, default model name). Raises ConfigError with a one-line reason."""
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(f"{path}: not a .gguf file or a HuggingFace folder")
        return checked_gguf(path, say=log.warning), path.stem
    if not path.is_dir():
        raise ConfigError(f"{path}: no such file or folder")
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: a folder without config.json is not a HuggingFace checkpoint")
    return convert_cached(path, cache, say=log.info), path.resolve().name

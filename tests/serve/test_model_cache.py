"""Cached conversions are checked before use: a record of source, size, sha256 and stamp beside each GGUF.
The demo checkpoint converts in well under a second; the oracle is the first conversion's own bytes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from serve.errors import ConfigError
from serve.gguf_cache import check_cached, checked_gguf, convert_cached, file_sha256, read_record, resolve_model
from stack.gguf_info import read_info

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo" / "demo-think"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    if not (DEMO / "config.json").is_file():
        pytest.skip("demo checkpoint not built")
    return Path(shutil.copytree(DEMO, tmp_path / "demo-think"))


def test_a_conversion_is_recorded_and_reused(source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    lines: list[str] = []
    gguf = convert_cached(source, cache, say=lines.append)
    record = read_record(gguf)
    assert record is not None and record["size"] == gguf.stat().st_size and record["sha256"] == file_sha256(gguf)
    assert record["source"] == str(source.resolve()) and len(lines) == 1 and "converting" in lines[0]
    inode = gguf.stat().st_ino
    assert convert_cached(source, cache, say=lines.append) == gguf and gguf.stat().st_ino == inode  # not again
    os.utime(gguf)  # touched, same bytes: the hash is checked once and the new stamp remembered
    assert check_cached(gguf) is None and read_record(gguf)["stamp"][0] == gguf.stat().st_mtime_ns
    assert len(lines) == 1


def damage_truncate(gguf: Path) -> None:
    with gguf.open("r+b") as f:
        f.truncate(gguf.stat().st_size // 2)


def damage_overwrite(gguf: Path) -> None:
    stat = gguf.stat()
    with gguf.open("r+b") as f:
        f.seek(stat.st_size // 2)
        f.write(os.urandom(4096))
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with its mtime put back


@pytest.mark.parametrize(("damage", "said"), [(damage_truncate, "bytes"), (damage_overwrite, "sha256")])
def test_a_damaged_conversion_is_converted_again(source: Path, tmp_path: Path, damage, said: str) -> None:
    cache = tmp_path / "cache"
    gguf = convert_cached(source, cache)
    good = file_sha256(gguf)
    damage(gguf)
    problem = check_cached(gguf)
    assert problem is not None and said in problem
    lines: list[str] = []
    assert checked_gguf(gguf, say=lines.append) == gguf  # serve --model-path CACHED.gguf, as the stack runs it
    assert file_sha256(gguf) == good and check_cached(gguf) is None and said in lines[0]
    read_info(gguf)  # a whole GGUF again


def test_a_damaged_conversion_without_its_source_is_refused(source: Path, tmp_path: Path) -> None:
    gguf = convert_cached(source, tmp_path / "cache")
    damage_truncate(gguf)
    shutil.rmtree(source)
    with pytest.raises(ConfigError, match="gone or has changed") as err:
        resolve_model(gguf)
    assert "\n" not in str(err.value)


def test_a_gguf_of_ones_own_is_loaded_as_is(tmp_path: Path) -> None:
    mine = tmp_path / "mine.gguf"
    mine.write_bytes(b"GGUF whatever")
    assert resolve_model(mine) == (mine, "mine")

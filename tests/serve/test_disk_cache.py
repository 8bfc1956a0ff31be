"""The prompt cache's disk tier on a real llama.cpp model, in process: an engine that stops keeps its cached
states in files that a new engine restores by longest prefix, answering exactly as a fresh decode does; damaged,
truncated and foreign files are dropped, never restored; the byte bound drops the least recently used; files are
owner-only; `cache_prompt: false` writes nothing. The server and stack round trips are in
tests/serve/test_serve_disk_cache.py and tests/e2e/test_kvdisk_swap.py."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serve.engine.disk_cache import HEADER, DiskCache, folder_for, gguf_identity, layout_key, pack, parse_header
from serve.engine.engine import Engine, Finished, Model
from testkit.tiny_gguf import build_tiny_gguf
from tests.serve.test_prompt_cache import conversation, run

LAYOUT = {"ctx_per_seq": 1024, "kv_type": "f16", "flash_attn": False, "swa_full": True}


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    m = Model(build_tiny_gguf())
    yield m
    m.close()


def key_of(path: Path) -> bytes:
    return layout_key(gguf_identity(path), LAYOUT)


def disk(folder: Path, capacity: int = 64 << 20, key: bytes | None = None) -> DiskCache:
    return DiskCache(folder, key or key_of(build_tiny_gguf()), capacity)


def engine_for(model: Model, cache: DiskCache | None, cache_ram: int = 0) -> Engine:
    e = Engine(model, n_seq=2, ctx_per_seq=1024, prompt_chunk=64, threads=2, cache_ram=cache_ram, disk=cache)
    e.start()
    return e


def two_turns(model: Model, seed: int = 1) -> tuple[list[int], list[int]]:
    """A conversation's first prompt with its answer (the history), and the second turn's whole prompt."""
    first, second = conversation(model, seed, 2)
    e = engine_for(model, None)
    try:
        pieces, _ = run(e, first)
    finally:
        e.stop()
    history = first + model.tokenize("".join(pieces), False) + model.tokenize("<|im_end|>\n", False)
    return history, history + second


def fresh_answer(model: Model, prompt: list[int]) -> list[str]:
    e = engine_for(model, None)
    try:
        return run(e, prompt, cache_prompt=False)[0]
    finally:
        e.stop()


def talk_and_stop(model: Model, cache: DiskCache, prompt: list[int], **params: object) -> Finished:
    e = engine_for(model, cache)
    try:
        return run(e, prompt, **params)[1]
    finally:
        e.stop()


def test_a_stopped_engine_keeps_its_cache_on_disk(model: Model, tmp_path: Path) -> None:
    history, turn2 = two_turns(model)
    talk_and_stop(model, disk(tmp_path), history)
    files = list(tmp_path.glob("*.kv"))
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600 and stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    again = disk(tmp_path)
    e = engine_for(model, again)
    try:
        pieces, fin = run(e, turn2)
    finally:
        e.stop()
    assert fin.cached_tokens >= len(history) - 1  # the whole history, restored
    assert pieces == fresh_answer(model, turn2)


def test_damaged_truncated_and_foreign_files_are_dropped(
    model: Model, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    history, turn2 = two_turns(model)
    expected = fresh_answer(model, turn2)
    for damage in ("flip", "truncate", "foreign"):
        folder = tmp_path / damage
        talk_and_stop(model, disk(folder), history)
        (path,) = folder.glob("*.kv")
        raw = bytearray(path.read_bytes())
        if damage == "flip":
            raw[-10] ^= 0xFF  # in the data: found only by the checksum, when restored
        elif damage == "truncate":
            raw = raw[: len(raw) // 2]
        path.write_bytes(bytes(raw))
        key = key_of(build_tiny_gguf(seed=1)) if damage == "foreign" else None  # another GGUF's folder
        caplog.clear()
        with caplog.at_level(logging.WARNING, "serve.engine.disk"):
            e = engine_for(model, disk(folder, key=key))
            try:
                pieces, fin = run(e, turn2)
            finally:
                e.stop()
        assert "KV cache: dropped" in caplog.text, damage
        assert fin.cached_tokens == 0 and pieces == expected, damage


def test_the_byte_bound_drops_the_least_recently_used(model: Model, tmp_path: Path) -> None:
    prompts = [conversation(model, 10 + i, 1)[0] for i in range(3)]
    cache = disk(tmp_path)
    for p in prompts:
        talk_and_stop(model, cache, p)
        time.sleep(0.02)  # distinct mtimes
    assert len(cache) == 3
    oldest, middle, newest = cache.entries()[::-1]
    cache.touch(oldest)  # used again: now the newest
    bounded = DiskCache(tmp_path, cache.key, cache.used - 1)  # room for two
    assert len(bounded) == 2 and not middle.path.exists() and oldest.path.exists() and newest.path.exists()


def test_cache_prompt_false_writes_nothing(model: Model, tmp_path: Path) -> None:
    prompt = conversation(model, 3, 1)[0]
    talk_and_stop(model, disk(tmp_path), prompt, cache_prompt=False)
    assert list(tmp_path.iterdir()) == []


def test_the_host_cache_entries_go_to_disk_too(model: Model, tmp_path: Path) -> None:
    """Three conversations through two sequences: the first one's cells were saved to host RAM when another
    took its sequence; at stop all three go to disk."""
    prompts = [conversation(model, 20 + i, 1)[0] for i in range(3)]
    e = engine_for(model, disk(tmp_path), cache_ram=64 << 20)
    try:
        for p in prompts:
            run(e, p)
    finally:
        e.stop()
    cache = disk(tmp_path)
    assert len(cache) == 3
    assert all(cache.best(np.asarray([*p, 1, 2, 3], np.int32))[1] >= len(p) for p in prompts)


def test_header_round_trip_and_refusals(tmp_path: Path) -> None:
    key = b"k" * 32
    tokens = np.arange(5, dtype=np.int32)
    data = bytes(range(40))
    header, ids = pack(key, tokens, 0, data, len(data))
    size = len(header) + len(ids) + len(data)
    assert parse_header(header, key, size)[:3] == (5, 0, 40)
    with pytest.raises(Exception, match="another GGUF"):
        parse_header(header, b"x" * 32, size)
    with pytest.raises(Exception, match="truncated"):
        parse_header(header, key, size - 1)
    with pytest.raises(Exception, match="not a KV state file"):
        parse_header(b"\0" * HEADER.size, key, size)
    assert folder_for(tmp_path, "a/b c", key).name == "a_b_c-" + key.hex()[:16]
    assert os.path.basename(str(folder_for(tmp_path, "", key))).startswith("model-")


def test_host_ram_evictions_spill_to_disk_while_running(model: Model, tmp_path: Path) -> None:
    """Host RAM holding one state: the ones it lets go are written to disk at once (a restore from there beats
    decoding this model's prompts by far), and a later turn restores one from disk, answering as a fresh decode."""
    prompts = [conversation(model, 30 + i, 1)[0] for i in range(4)]
    cache = disk(tmp_path)
    # A state of this model takes 512 bytes a token (2 layers x K and V x 64 x f16), a prompt ~150 tokens.
    e = engine_for(model, cache, cache_ram=250_000)
    assert e.host is not None and e.spiller is not None and cache.read_rate > 0
    try:
        for p in prompts:  # 3 and 4 take the sequences of 1 and 2, which go to RAM; 1 then leaves RAM for 2
            run(e, p)
        deadline = time.monotonic() + 10
        while len(cache) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(cache) >= 1 and e.prompt_rate > 0  # spilled while running, before any stop
        spilled = cache.entries()[-1]
        turn = [*spilled.tokens.tolist(), *model.tokenize("<|im_start|>user\nmore<|im_end|>\n", False)]
        pieces, fin = run(e, turn)
    finally:
        e.stop()
    assert fin.cached_tokens >= len(spilled.tokens) - 1
    assert pieces == fresh_answer(model, turn)

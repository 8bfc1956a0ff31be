"""The prompt cache's disk tier: saved sequence states in files, found again by longest prefix after the server
(or the whole stack) stopped, so the next turn of a long conversation restores its history instead of decoding it.

One folder per model and layout, `$HEARTH_CACHE/kv/<model name>-<key>/`: the key hashes the GGUF's identity and
every setting that changes what a state holds (see `layout_key`), so a state is only ever read by the model and
layout that wrote it. Each file holds one state:

    header    magic "HEARTHKV", version, the 32-byte key, token count, oldest position kept, data length,
              CRC-32 of the token ids and the data (HEADER)
    tokens    the token ids its cells hold (int32, little-endian)
    data      llama_state_seq_get_data's bytes

Written to a temporary file and renamed (a reader never sees half a file; a torn file after a crash fails its
length or checksum check), owner-only (0600 in a 0700 folder: the states derive from prompts). A file whose header,
length, key or checksum is wrong is dropped and logged, never restored. Bounded by bytes, least recently used out
first (a file's mtime is its last use: set when written or restored).

The engine thread reads and writes here (restores, and the states it keeps at stop); a spill writer may write from
its own thread: the index is guarded by a lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serve.engine.prompt_cache import DECODED, common_prefix, usable

log = logging.getLogger("serve.engine.disk")

MAGIC = b"HEARTHKV"
VERSION = 1
HEADER = struct.Struct("<8sI32sIIQI")  # magic, version, key, n_tokens, pos_min, data length, crc32
SUFFIX = ".kv"
WHOLE_FILE_MAX = 64 << 20  # a GGUF up to this size is hashed whole; a larger one by its first and last MiB
EDGE = 1 << 20
PROBE_BYTES = 16 << 20


class DiskObserver(Protocol):
    """What the disk tier reports (serve/metrics.py counts it)."""

    def disk_hit(self, nbytes: int, seconds: float) -> None: ...
    def disk_miss(self) -> None: ...
    def disk_written(self, nbytes: int) -> None: ...
    def disk_dropped(self, reason: str) -> None: ...
    def disk_used(self, nbytes: int) -> None: ...


class _Quiet:
    def disk_hit(self, nbytes: int, seconds: float) -> None:
        pass

    def disk_miss(self) -> None:
        pass

    def disk_written(self, nbytes: int) -> None:
        pass

    def disk_dropped(self, reason: str) -> None:
        pass

    def disk_used(self, nbytes: int) -> None:
        pass


def gguf_identity(path: Path) -> bytes:
    """A GGUF's identity: its size, mtime and a sha256 of its content, whole up to WHOLE_FILE_MAX (the demo and
    test models: milliseconds), else of its first and last MiB (the header with the metadata and vocabulary, and
    the last tensors' data: a few milliseconds for a model of gigabytes, where hashing all of it would cost seconds
    at every load). A file rewritten in place changes its mtime; a reconverted model its bytes."""
    st = path.stat()
    digest = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode())
    with path.open("rb") as f:
        if st.st_size <= WHOLE_FILE_MAX:
            for block in iter(lambda: f.read(EDGE), b""):
                digest.update(block)
        else:
            digest.update(f.read(EDGE))
            f.seek(st.st_size - EDGE)
            digest.update(f.read(EDGE))
    return digest.digest()


def layout_key(identity: bytes, layout: Mapping[str, Any]) -> bytes:
    """The 32-byte key of a model's states: the GGUF's identity and the settings that change a state's bytes or
    where it may be restored (context per sequence, KV element type, flash attention (V transposed or not),
    full-size sliding window, the llama.cpp build)."""
    return hashlib.sha256(identity + json.dumps(dict(layout), sort_keys=True).encode()).digest()


def folder_for(root: Path, model_name: str, key: bytes) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_name)[:64] or "model"
    return root / f"{safe}-{key.hex()[:16]}"


@dataclass(eq=False)
class DiskEntry:
    path: Path
    tokens: np.ndarray
    pos_min: int
    size: int  # the data's bytes
    file_size: int
    used: float  # last use (the file's mtime)


@dataclass(frozen=True)
class Loaded:
    tokens: np.ndarray
    data: Any  # a ctypes byte array, as llama_state_seq_set_data takes it
    size: int
    pos_min: int


class Damaged(Exception):
    """A file that must not be restored; the message says why (logged when it is dropped)."""


def pack(key: bytes, tokens: np.ndarray, pos_min: int, data: Any, size: int) -> tuple[bytes, bytes]:
    """The header and token bytes of a file holding `data` (`size` bytes: a ctypes array or any buffer)."""
    ids = np.asarray(tokens, "<i4").tobytes()
    crc = zlib.crc32(memoryview(data).cast("B")[:size], zlib.crc32(ids))
    return HEADER.pack(MAGIC, VERSION, key, len(tokens), pos_min, size, crc), ids


def parse_header(raw: bytes, key: bytes, file_size: int) -> tuple[int, int, int, int]:
    """(n_tokens, pos_min, data length, crc) of a file's header; Damaged when it is not one of ours for `key` or
    the file's length does not match."""
    if len(raw) < HEADER.size:
        raise Damaged("shorter than a header")
    magic, version, file_key, n_tokens, pos_min, length, crc = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise Damaged("not a KV state file")
    if version != VERSION:
        raise Damaged(f"format version {version}, not {VERSION}")
    if file_key != key:
        raise Damaged("written for another GGUF or layout")
    if HEADER.size + 4 * n_tokens + length != file_size:
        raise Damaged(f"{file_size} bytes where its header says {HEADER.size + 4 * n_tokens + length} (truncated?)")
    return n_tokens, pos_min, length, crc


class DiskCache:
    """The states of one model and layout in `folder`, at most `capacity` bytes of files."""

    def __init__(
        self, folder: Path, key: bytes, capacity: int, n_swa: int = 0, observer: DiskObserver | None = None
    ) -> None:
        self.folder = folder
        self.key = key
        self.capacity = capacity
        self.n_swa = n_swa
        self.observer: DiskObserver = observer or _Quiet()
        self.used = 0
        self.read_rate = 0.0  # bytes/s a state is read at (probe(), then restores); 0: not measured
        self._entries: dict[Path, DiskEntry] = {}
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
        self._scan()

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[DiskEntry]:
        """Most recently used first."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: -e.used)

    # -- the index -------------------------------------------------------------------------------------------

    def _scan(self) -> None:
        """Index the folder's files by their headers and token ids (the data is checked when restored); drop
        leftovers of an interrupted write and files that are not ours."""
        for path in self.folder.iterdir():
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                continue
            if path.suffix != SUFFIX:
                continue
            try:
                entry = self._read_index(path)
            except Damaged as err:
                self._drop_file(path, str(err))
                continue
            except OSError as err:
                log.warning("KV cache: cannot read %s (%s)", path.name, err.strerror or err)
                continue
            self._entries[path] = entry
            self.used += entry.file_size
        self._evict(0)
        self.observer.disk_used(self.used)
        if self._entries:
            log.info(
                "KV cache on disk: %d saved states, %.1f MiB in %s", len(self._entries), self.used / 2**20, self.folder
            )

    def _read_index(self, path: Path) -> DiskEntry:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            n_tokens, pos_min, length, _ = parse_header(f.read(HEADER.size), self.key, st.st_size)
            ids = f.read(4 * n_tokens)
        tokens = np.frombuffer(ids, "<i4").astype(np.int32)
        return DiskEntry(path, tokens, pos_min, length, st.st_size, st.st_mtime)

    def _drop_file(self, path: Path, why: str) -> None:
        log.warning("KV cache: dropped %s: %s", path.name, why)
        self.observer.disk_dropped(why)
        path.unlink(missing_ok=True)

    def _forget(self, entry: DiskEntry) -> None:
        if self._entries.pop(entry.path, None) is not None:
            self.used -= entry.file_size
        entry.path.unlink(missing_ok=True)

    def _evict(self, room: int) -> None:
        """Least recently used files out until `room` more bytes fit."""
        while self._entries and self.used + room > self.capacity:
            self._forget(min(self._entries.values(), key=lambda e: e.used))

    # -- lookups ---------------------------------------------------------------------------------------------

    def best(self, prompt: np.ndarray, min_share: float = 0.1, decoded: int = DECODED) -> tuple[DiskEntry | None, int]:
        """The file sharing the longest usable prefix with `prompt` (short of its last `decoded` tokens), if that
        is more than `min_share` of the prompt (the host cache's rule)."""
        limit = max(0, len(prompt) - decoded)
        found: DiskEntry | None = None
        most = 0
        with self._lock:
            for e in self._entries.values():
                shared = usable(min(common_prefix(e.tokens, prompt), limit), e.pos_min, self.n_swa)
                if shared > min_share * len(prompt) and shared > most:
                    found, most = e, shared
        return found, most

    def covers(self, tokens: np.ndarray) -> DiskEntry | None:
        """A file that already serves every prompt these tokens could."""
        n = len(tokens)
        with self._lock:
            for e in self._entries.values():
                if common_prefix(e.tokens, tokens) == n and usable(n, e.pos_min, self.n_swa) == n:
                    return e
        return None

    def load(self, entry: DiskEntry) -> Loaded | None:
        """The file's state, checked (header, length, checksum, token ids); None when it is damaged or gone (a
        damaged one is dropped and logged). A restore marks it used."""
        began = time.perf_counter()
        try:
            with entry.path.open("rb") as f:
                st = os.fstat(f.fileno())
                n_tokens, pos_min, length, crc = parse_header(f.read(HEADER.size), self.key, st.st_size)
                ids = f.read(4 * n_tokens)
                data = (ctypes.c_uint8 * max(length, 1))()
                got = f.readinto(memoryview(data).cast("B")[:length])
            if got != length:
                raise Damaged("truncated while being read")
            if zlib.crc32(memoryview(data).cast("B")[:length], zlib.crc32(ids)) != crc:
                raise Damaged("checksum mismatch")
            tokens = np.frombuffer(ids, "<i4").astype(np.int32)
            if not np.array_equal(tokens, entry.tokens):
                raise Damaged("its token ids changed since it was indexed")
        except Damaged as err:
            with self._lock:
                self._forget(entry)
            self._drop_file(entry.path, str(err))
            self.observer.disk_used(self.used)
            return None
        except OSError as err:  # removed by a sibling replica sharing the folder, or unreadable
            log.warning("KV cache: cannot read %s (%s)", entry.path.name, err.strerror or err)
            with self._lock:
                self._forget(entry)
            self.observer.disk_used(self.used)
            return None
        self.touch(entry)
        elapsed = time.perf_counter() - began
        if elapsed > 0 and length >= 1 << 20:  # a rolling estimate from real restores (page cache included)
            rate = length / elapsed
            self.read_rate = rate if self.read_rate <= 0 else 0.7 * self.read_rate + 0.3 * rate
        return Loaded(tokens, data, length, pos_min)

    def touch(self, entry: DiskEntry) -> None:
        now = time.time()
        entry.used = now
        with contextlib.suppress(OSError):  # gone: the next lookup's read says so
            os.utime(entry.path, (now, now))

    # -- writing ---------------------------------------------------------------------------------------------

    def fits(self, size: int) -> bool:
        return HEADER.size + size <= self.capacity

    def write(self, tokens: np.ndarray, data: Any, size: int, pos_min: int = 0) -> bool:
        """Store a state (unless a file already serves it, or it can never fit); files whose tokens are a prefix
        of these (which this one serves too) are replaced, then the least recently used go until it fits. False
        when nothing was written."""
        tokens = np.asarray(tokens, np.int32)
        pos_min = max(pos_min, len(tokens) - self.n_swa) if self.n_swa else 0
        held = self.covers(tokens)
        if held is not None:
            self.touch(held)
            return False
        file_size = HEADER.size + 4 * len(tokens) + size
        if file_size > self.capacity:
            return False
        header, ids = pack(self.key, tokens, pos_min, data, size)
        name = hashlib.sha256(ids).hexdigest()[:32] + SUFFIX
        path = self.folder / name
        tmp = self.folder / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(header)
                f.write(ids)
                f.write(memoryview(data).cast("B")[:size])
            with self._lock:
                for e in [
                    e
                    for e in self._entries.values()
                    if common_prefix(e.tokens, tokens) == len(e.tokens)
                    and usable(len(e.tokens), pos_min, self.n_swa) == len(e.tokens)
                ]:
                    self._forget(e)
                old = self._entries.pop(path, None)
                if old is not None:
                    self.used -= old.file_size
                self._evict(file_size)
                os.replace(tmp, path)
                self._entries[path] = DiskEntry(path, tokens, pos_min, size, file_size, time.time())
                self.used += file_size
        except OSError as err:
            log.warning("KV cache: cannot write %s (%s)", path.name, err.strerror or err)
            tmp.unlink(missing_ok=True)
            return False
        self.observer.disk_written(file_size)
        self.observer.disk_used(self.used)
        return True

    # -- speed ---------------------------------------------------------------------------------------------------

    def probe(self, nbytes: int = PROBE_BYTES) -> float:
        """The folder's write speed in bytes/s, measured with a scratch file written and synced (the device's
        speed, not the page cache's): the first estimate of what a restore reads at, until restores measure it."""
        path = self.folder / f".probe.{os.getpid()}.tmp"
        block = os.urandom(1 << 20)
        start = time.perf_counter()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                for _ in range(max(1, nbytes >> 20)):
                    os.write(fd, block)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            return 0.0
        finally:
            path.unlink(missing_ok=True)
        self.read_rate = max(1, nbytes >> 20) * (1 << 20) / max(time.perf_counter() - start, 1e-6)
        return self.read_rate

    def __iter__(self) -> Iterator[DiskEntry]:
        return iter(self.entries())


class Spiller:
    """Writes states evicted from host RAM to the disk tier on a thread of its own, so the engine never waits for
    the disk: each state's bytes are its own (a ctypes array nothing else holds). At most `max_pending` bytes wait;
    a state beyond that is not written (host RAM has already let it go: it costs a decode, as without the tier)."""

    def __init__(self, disk: DiskCache, max_pending: int) -> None:
        self.disk = disk
        self.max_pending = max_pending
        self.pending = 0
        self._queue: list[tuple[np.ndarray, Any, int, int]] = []
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="kv-spill", daemon=True)
        self._thread.start()

    def submit(self, tokens: np.ndarray, data: Any, size: int, pos_min: int) -> bool:
        with self._wake:
            if self._closing or self.pending + size > self.max_pending:
                return False
            self._queue.append((tokens, data, size, pos_min))
            self.pending += size
            self._wake.notify()
        return True

    def close(self, timeout: float) -> None:
        """Write what waits (for at most `timeout` seconds), then end the thread."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    return
                tokens, data, size, pos_min = self._queue.pop(0)
            try:
                self.disk.write(tokens, data, size, pos_min)
            except Exception:  # a spill that fails costs a decode later, nothing more
                log.exception("KV cache: spilling a state to disk failed")
            finally:
                with self._wake:
                    self.pending -= size

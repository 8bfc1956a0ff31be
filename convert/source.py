"""Reading a HuggingFace checkpoint folder: config.json and safetensors tensors, one at a time.

Safetensors is parsed from its own header (8-byte length, JSON, raw data). Tensors are read with plain
`os.pread` calls into fresh buffers, row block by row block, rather than through a memory map: pages of a map
that were touched count toward the process's RSS until unmapped, and the goal is a peak near one tensor.
bf16 is carried as uint16 words (numpy has no bfloat16) and widened to float32 only where a transform needs it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import SourceError, UnsupportedError

# safetensors dtype -> numpy storage dtype (bf16 kept as its raw 16-bit words)
DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(np.uint16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}

# A safetensors header is JSON; anything this large is not one.
MAX_HEADER = 100 * 1024 * 1024
# Rows are read in blocks of about this many bytes, so no transform ever holds a whole large tensor.
BLOCK_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes lie: a file, an absolute offset, a dtype and a shape."""

    name: str
    dtype: str  # safetensors name: "BF16", "F32", ...
    shape: tuple[int, ...]
    path: Path
    offset: int
    nbytes: int

    @property
    def np_dtype(self) -> np.dtype[Any]:
        return DTYPES[self.dtype]

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_bytes(self) -> int:
        return self.nbytes // self.rows if self.rows else 0

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as a fresh array in the storage dtype (bf16 -> uint16)."""
        stop = self.rows if stop is None else stop
        count = (stop - start) * self.row_bytes
        buf = bytearray(count)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            view = memoryview(buf)
            done = 0
            while done < count:
                n = os.preadv(fd, [view[done:]], self.offset + start * self.row_bytes + done)
                if n == 0:
                    raise SourceError(f"{self.path.name}: file ends inside tensor {self.name} (truncated?)")
                done += n
        finally:
            os.close(fd)
        shape = (stop - start, *self.shape[1:]) if self.shape else ()
        return np.frombuffer(buf, dtype=self.np_dtype).reshape(shape)

    def blocks(self, align: int = 1, block_bytes: int = BLOCK_BYTES) -> Iterator[np.ndarray]:
        """The tensor as consecutive row blocks; each block's row count is a multiple of `align`."""
        per = max(align, (block_bytes // max(self.row_bytes, 1)) // align * align)
        for start in range(0, self.rows, per):
            yield self.read(start, min(self.rows, start + per))


def to_f32(a: np.ndarray, dtype: str) -> np.ndarray:
    """Storage array -> float32 (bf16 words are the top half of a float32)."""
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32, copy=False)


def read_header(path: Path) -> dict[str, TensorRef]:
    """Parse one .safetensors header and check every tensor lies inside the file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SourceError(f"{path.name}: not a safetensors file (shorter than its 8-byte header length)")
            n = int.from_bytes(head, "little")
            if n <= 0 or n > MAX_HEADER or 8 + n > size:
                raise SourceError(
                    f"{path.name}: corrupt or truncated safetensors header (length {n}, file {size} bytes)"
                )
            raw = f.read(n)
    except OSError as e:
        raise SourceError(f"{path.name}: cannot read: {e.strerror}") from e
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{path.name}: corrupt safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise SourceError(f"{path.name}: corrupt safetensors header (not a JSON object)")
    base = 8 + n
    refs: dict[str, TensorRef] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise SourceError(f"{path.name}: corrupt safetensors header entry for {name}") from e
        if dtype not in DTYPES:
            raise UnsupportedError(f"{path.name}: tensor {name} has dtype {dtype}; supported: {', '.join(DTYPES)}")
        nbytes = math.prod(shape) * DTYPES[dtype].itemsize
        if end - begin != nbytes or begin < 0:
            raise SourceError(f"{path.name}: tensor {name}: {end - begin} bytes stored for shape {list(shape)} {dtype}")
        if base + end > size:
            raise SourceError(
                f"{path.name} is truncated: tensor {name} ends at byte {base + end} but the file has {size} bytes"
            )
        refs[name] = TensorRef(name, dtype, shape, path, base + begin, nbytes)
    return refs


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files, from the index when there is one (every file it names must exist)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise SourceError(f"{index.name}: unreadable or has no weight_map") from e
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise SourceError(f"{folder}: files named in {index.name} are missing: {', '.join(missing)}")
        return [folder / n for n in names]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise SourceError(f"{folder}: no *.safetensors weights found")
    return files


def read_tensors(folder: Path) -> dict[str, TensorRef]:
    refs: dict[str, TensorRef] = {}
    for path in safetensors_files(folder):
        for name, ref in read_header(path).items():
            if name in refs:
                raise SourceError(f"tensor {name} is stored twice ({refs[name].path.name} and {path.name})")
            refs[name] = ref
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        listed = set(json.loads(index.read_text())["weight_map"])
        if missing := sorted(listed - set(refs)):
            raise SourceError(f"tensors listed in {index.name} are missing from the files: {', '.join(missing[:5])}")
    return refs


def read_json(path: Path, *, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise SourceError(f"{path.parent}: missing {path.name}")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise SourceError(f"{path}: expected a JSON object")
    return data


@dataclass(frozen=True)
class Checkpoint:
    """A HuggingFace folder: its config and the location of every tensor."""

    folder: Path
    config: dict[str, Any]
    tensors: dict[str, TensorRef]

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        if not archs or not isinstance(archs, list):
            raise SourceError(f"{self.folder / 'config.json'}: no 'architectures' entry")
        return str(archs[0])

    def weight_dtype(self) -> str:
        """The precision of the checkpoint's matrices (the first 2-D float tensor)."""
        for ref in self.tensors.values():
            if len(ref.shape) >= 2 and ref.dtype in ("BF16", "F16", "F32"):
                return ref.dtype
        return "F32"


def open_checkpoint(folder: Path) -> Checkpoint:
    if not folder.is_dir():
        raise SourceError(f"{folder}: not a folder")
    config = read_json(folder / "config.json", required=True)
    return Checkpoint(folder, config, read_tensors(folder))

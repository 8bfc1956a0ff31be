"""Read a GGUF file's layer sizes and KV width into placement.ModelShape (the I/O half of layer fitting).

gguf-py's GGUFReader memory-maps the file, so this reads the header and tensor table only, never the weights.
Added by the stack helper; serve's --device-map auto can use it too (runtime.load passes shape=None today).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from serve.placement import ModelShape

BLOCK = re.compile(r"^blk\.(\d+)\.")
OUTPUT = ("output.weight", "output.bias", "output_norm.weight", "output_norm.bias")


class ShapeError(ValueError):
    """The file is not a GGUF this reader understands; the message is one line."""


@dataclass(frozen=True)
class GGUFSizes:
    shape: ModelShape
    total_bytes: int  # every tensor in the file: what the CPU holds when no layer is offloaded
    architecture: str  # general.architecture, e.g. "qwen3", "gpt-oss"


def _field(reader: object, key: str) -> object | None:
    field = reader.fields.get(key)  # type: ignore[attr-defined]
    return None if field is None else field.contents()


def _widest(value: object) -> int:
    """A per-layer array (some models vary the KV head count by layer) counts as its largest entry."""
    return max(int(v) for v in value) if isinstance(value, list) else int(value)  # type: ignore[arg-type]


def read_sizes(path: Path) -> GGUFSizes:
    from gguf import GGUFReader  # imported late: a plain `import serve` stays light

    try:
        reader = GGUFReader(path)
    except (OSError, ValueError) as err:
        raise ShapeError(f"{path}: not a readable GGUF file ({err})") from err
    arch = _field(reader, "general.architecture")
    if not isinstance(arch, str):
        raise ShapeError(f"{path}: GGUF without general.architecture")
    n_layers = _field(reader, f"{arch}.block_count")
    n_embd = _field(reader, f"{arch}.embedding_length")
    n_head = _field(reader, f"{arch}.attention.head_count")
    if n_layers is None or n_embd is None or n_head is None:
        raise ShapeError(f"{path}: GGUF lacks {arch}.block_count, embedding_length or attention.head_count")
    n_head_kv = _widest(_field(reader, f"{arch}.attention.head_count_kv") or n_head)
    head_dim = int(n_embd) // _widest(n_head)  # type: ignore[call-overload]
    key_len = _field(reader, f"{arch}.attention.key_length")
    value_len = _field(reader, f"{arch}.attention.value_length")
    layer_bytes = [0] * int(n_layers)  # type: ignore[call-overload]
    by_name = {}
    for tensor in reader.tensors:
        size = int(tensor.n_bytes)
        by_name[tensor.name] = size
        match = BLOCK.match(tensor.name)
        if match and int(match.group(1)) < len(layer_bytes):
            layer_bytes[int(match.group(1))] += size
    output = sum(by_name.get(name, 0) for name in OUTPUT)
    if "output.weight" not in by_name:  # tied embeddings: llama.cpp puts a copy of token_embd on the output's device
        output += by_name.get("token_embd.weight", 0)
    shape = ModelShape(
        n_layers=len(layer_bytes),
        layer_bytes=tuple(layer_bytes),
        output_bytes=output,
        n_embd_k_gqa=(int(key_len) if key_len is not None else head_dim) * n_head_kv,  # type: ignore[call-overload]
        n_embd_v_gqa=(int(value_len) if value_len is not None else head_dim) * n_head_kv,  # type: ignore[call-overload]
    )
    return GGUFSizes(shape, sum(by_name.values()), arch)

"""What Ollama's API says about a GGUF (`details` of /api/show, /api/tags, /api/ps; `digest`, `size`), read from the
file's header: one reader for the model server's /api/show and the stack's catalog, which the router lists.

- parameter_size: Ollama's human form (`8.0B`, `494.03M`) of `general.parameter_count`, else the tensors' elements.
- quantization_level: `general.file_type`'s name (`Q4_K_M`, `Q8_0`, `F16`), else the commonest type of the
  matrices.
- digest: the sha256 of the file's header (metadata and tensor table, everything before the tensor data). Stable across
  restarts and copies, different for another conversion or quantization, and cheap for a file of many gigabytes:
  the weights themselves are not read (Ollama's digest is the sha256 of the whole file).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNITS = ((10**9, "B", 1), (10**6, "M", 2), (10**3, "K", 2))
HASH_CHUNK = 1 << 20


def parameter_size(count: int) -> str:
    """Ollama's human form of a parameter count."""
    for size, unit, digits in UNITS:
        if count >= size:
            return f"{count / size:.{digits}f}{unit}"
    return str(count)


def quantization_level(info: dict[str, Any], tensor_types: list[str]) -> str:
    """`general.file_type`'s name, else the commonest type of the matrices (`tensor_types`: theirs, by name)."""
    from gguf import LlamaFileType

    try:
        return LlamaFileType(int(info["general.file_type"])).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (KeyError, TypeError, ValueError):  # no file type, or one this gguf-py does not name
        common = Counter(tensor_types).most_common(1)
        return common[0][0] if common else "unknown"


@dataclass(frozen=True)
class GgufDetails:
    info: dict[str, Any]  # every GGUF key (arrays as None unless asked for), general.parameter_count added
    template: str | None  # the chat template, kept out of `info`
    family: str  # general.architecture
    parameter_size: str
    quantization_level: str
    header_bytes: int  # where the tensor data begins


TEMPLATE_KEYS = ("tokenizer.chat_template",)


def read_details(path: Path, arrays: bool = False) -> GgufDetails:
    """The file's metadata as Ollama reports it. Raises OSError or ValueError for a file that is not a GGUF."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType

    reader = GGUFReader(path)
    info: dict[str, Any] = {}
    template: str | None = None
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if key in TEMPLATE_KEYS:
            template = str(f.contents())
        elif f.types and f.types[0] == GGUFValueType.ARRAY:
            info[key] = f.contents() if arrays else None
        else:
            info[key] = f.contents()
    info.setdefault("general.parameter_count", sum(int(t.n_elements) for t in reader.tensors))
    matrices = [GGMLQuantizationType(t.tensor_type).name for t in reader.tensors if len(t.shape) > 1]
    return GgufDetails(
        info,
        template,
        str(info.get("general.architecture", "unknown")),
        parameter_size(int(info["general.parameter_count"])),
        quantization_level(info, matrices),
        int(reader.data_offset),
    )


def header_digest(path: Path, header_bytes: int) -> str:
    """The sha256 (hex, as Ollama writes digests) of the file's first `header_bytes` bytes (read_details' `header_bytes`)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        left = header_bytes
        while left > 0:
            chunk = f.read(min(HASH_CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()

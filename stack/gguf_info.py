"""What the plan needs from a GGUF file: serve's layer shape plus the file's total tensor bytes and architecture.

The per-layer sizes and KV widths come from serve.placement.read_shape (one reader for serve and the stack); this
adds the two figures the stack alone uses: total bytes (the RAM column) and general.architecture (model type).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serve.placement import ModelShape, read_shape


class InfoError(ValueError):
    """The file is not a GGUF llama.cpp's reader understands; one-line message."""


@dataclass(frozen=True)
class GGUFInfo:
    shape: ModelShape
    total_bytes: int  # every tensor in the file
    architecture: str  # general.architecture, e.g. "qwen3", "gpt-oss"


def read_info(path: Path) -> GGUFInfo:
    from gguf import GGUFReader  # late: a plain `import stack` stays light

    try:
        reader = GGUFReader(path)
        arch = reader.fields["general.architecture"].contents()
        shape = read_shape(str(path))
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise InfoError(f"{path}: not a readable GGUF file ({type(err).__name__}: {err})") from None
    return GGUFInfo(shape, sum(int(t.n_bytes) for t in reader.tensors), str(arch))

"""What the plan needs from a GGUF file: serve's layer shape plus the figures the stack alone uses.

The per-layer sizes and KV widths come from serve.placement.read_shape (one reader for serve and the stack); this
adds the file's total tensor bytes (the RAM column), general.architecture (model type), and what sizes llama.cpp's
compute buffer: the vocabulary (logits), attention heads, feed-forward width and training context (serve caps the
context at it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serve.engine.placement import ModelShape, read_shape


class InfoError(ValueError):
    """The file is not a GGUF llama.cpp's reader understands; one-line message."""


@dataclass(frozen=True)
class GGUFInfo:
    shape: ModelShape
    total_bytes: int  # every tensor in the file
    architecture: str  # general.architecture, e.g. "qwen3", "gpt-oss"
    n_vocab: int = 0
    n_head: int = 0
    n_ff: int = 0
    n_ctx_train: int = 0  # 0: not stated


def read_info(path: Path) -> GGUFInfo:
    from gguf import GGUFReader  # late: a plain `import stack` stays light

    try:
        reader = GGUFReader(path)
        arch = str(reader.fields["general.architecture"].contents())
        shape = read_shape(str(path))

        def number(key: str) -> int:
            field = reader.fields.get(f"{arch}.{key}")
            value = field.contents() if field is not None else 0
            return int(value[0] if isinstance(value, list) else value or 0)

        tokens = reader.fields.get("tokenizer.ggml.tokens")
        n_vocab = len(tokens.data) if tokens is not None else number("vocab_size")
        info = GGUFInfo(
            shape,
            sum(int(t.n_bytes) for t in reader.tensors),
            arch,
            n_vocab,
            number("attention.head_count"),
            number("feed_forward_length"),
            number("context_length"),
        )
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise InfoError(f"{path}: not a readable GGUF file ({type(err).__name__}: {err})") from None
    return info

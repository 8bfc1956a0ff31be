"""What the plan needs from a GGUF file: serve's layer shape plus the figures the stack alone uses.

The per-layer sizes and KV widths come from serve.placement.read_shape (one reader for serve and the stack); this
adds the file's total tensor bytes (the RAM column), general.architecture (model type), and what sizes llama.cpp's
compute buffer: the vocabulary (logits), attention heads, feed-forward width and training context (serve caps the
context at it). An image projector beside the GGUF (NAME.mmproj.gguf, which serve loads with it) adds its tensor
bytes and what sizes its vision tower's compute buffer (image and patch size, heads, feed-forward width).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hearth_common.paths import mmproj_path
from serve.engine.placement import ModelShape, read_shape


class InfoError(ValueError):
    """The file is not a GGUF llama.cpp's reader understands; one-line message."""


@dataclass(frozen=True)
class ProjectorInfo:
    total_bytes: int  # every tensor in the projector file
    image_size: int
    patch_size: int
    n_head: int
    n_ff: int
    scale: int = 1  # patches pooled per side into one image token (clip.vision.projector.scale_factor)

    @property
    def n_patches(self) -> int:
        return (self.image_size // max(self.patch_size, 1)) ** 2

    @property
    def tokens_per_image(self) -> int:
        return self.n_patches // self.scale**2


@dataclass(frozen=True)
class GGUFInfo:
    shape: ModelShape
    total_bytes: int  # every tensor in the file
    architecture: str  # general.architecture, e.g. "qwen3", "gpt-oss"
    n_vocab: int = 0
    n_head: int = 0
    n_ff: int = 0
    n_ctx_train: int = 0  # 0: not stated
    projector: ProjectorInfo | None = None  # NAME.mmproj.gguf beside it


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
            read_projector(mmproj_path(path)) if mmproj_path(path).is_file() else None,
        )
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise InfoError(f"{path}: not a readable GGUF file ({type(err).__name__}: {err})") from None
    return info


def read_projector(path: Path) -> ProjectorInfo:
    """The sizes of an image projector GGUF (llama.cpp's clip format). Raises what GGUFReader raises."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def number(key: str) -> int:
        field = reader.fields.get(f"clip.vision.{key}")
        value = field.contents() if field is not None else 0
        return int(value[0] if isinstance(value, list) else value or 0)

    return ProjectorInfo(
        sum(int(t.n_bytes) for t in reader.tensors),
        number("image_size"),
        number("patch_size"),
        number("attention.head_count"),
        number("feed_forward_length"),
        number("projector.scale_factor") or 1,
    )

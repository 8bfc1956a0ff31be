"""Images through llama.cpp's mtmd: a projector GGUF (`--mmproj`) beside the text model.

`Projector(path, model)` opens the projector for a loaded text model. From any thread:
`tokenize(text, images)` turns a rendered prompt, whose images stand at mtmd's marker (`MARKER`), and the images'
encoded bytes into a `Tokenized`: prompt ids where each image occupies its `n_tokens` positions with pseudo-token
ids, and one `ImageSpan` per image chunk (its start, length and mtmd chunk; Idefics3 cuts a picture into tiles and
an overview, a chunk each). From one thread at a time (the engine's image encoder, serve/engine/encoder.py):
`encode(span)` runs the vision tower and projector on one image chunk (mtmd_encode_chunk) and returns its
embeddings. From the engine thread only: `decode_embeddings` puts embeddings into a sequence at given positions (a
llama_batch of embeddings, with causal attention off while it decodes where the model attends within an image both
ways, as Gemma 3 does: mtmd_decode_use_non_causal; the whole image in one micro-batch, which that needs).

Pseudo-token ids make the prompt cache key an image by its content: an image's ids are negative (no vocabulary
id is), derived from a SHA-256 of the projector file's identity and the decoded pixels, one id per position. A
conversation that sends the same picture again therefore shares the cached prefix through the image and up to the
next new part, exactly as for text; a different picture differs at its first position.

M-RoPE (Qwen2.5-VL): llama.cpp takes 4 positions per image embedding, (t, row, column, 0) with t the image's first
position and row / column added to it (mtmd_image_tokens_get_decoder_pos; a span's `mrope` holds them relative
to 0), and the text after an image resumes `n_pos` (max(rows, columns)) past the image's start, not n_tokens.
`decode_embeddings(..., mrope=span.mrope)` places them; the engine keeps each sequence's offset between cells and
positions (serve/engine/engine.py's `_Slot.shift`) and reuses cached cells only up to a prompt's first image
under M-RoPE (prompt_cache.before_images).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp as ll
import numpy as np
from llama_cpp import mtmd_cpp as mt

from serve.engine.context import EngineError

MARKER = "<__media__>"  # mtmd's default media marker, where the chat core puts each image
BLACK_8X8_PNG = b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x08\x00\x00\x00\x08\x08\x02\x00\x00\x00Km)\xdc\x00\x00\x00\x0cIDATx\x9cc`\x18\x1e\x00\x00\x00\xc8\x00\x01\xad@v"\x00\x00\x00\x00IEND\xaeB`\x82'


class ImageError(ValueError):
    """An image llama.cpp cannot decode (the message names the problem; a client's 400)."""


@dataclass(eq=False)
class ImageSpan:
    """One image of a prompt: positions start..start+n_tokens-1 hold its embeddings."""

    start: int
    n_tokens: int
    key: bytes  # content hash (projector + pixels; and the tile's number, after an image's first chunk)
    chunk: Any = field(repr=False)  # an owned mtmd_input_chunk (freed with this object)
    n_pos: int = 0  # positions the image advances the text by (n_tokens, but max(rows, columns) under M-RoPE)
    mrope: np.ndarray | None = field(default=None, repr=False)  # (n_tokens, 4) int32 (t, row, col, 0) from 0

    def __post_init__(self) -> None:
        weakref.finalize(self, mt.mtmd_input_chunk_free, self.chunk)

    @property
    def end(self) -> int:
        return self.start + self.n_tokens


@dataclass(frozen=True)
class Tokenized:
    ids: list[int]
    images: tuple[ImageSpan, ...]


def pseudo_ids(key: bytes, n: int) -> list[int]:
    """n negative int32 ids for an image whose content hash is `key` (position i's from SHA-256(key, i))."""
    out = []
    for i in range(n):
        word = int.from_bytes(hashlib.sha256(key + i.to_bytes(4, "little")).digest()[:4], "little")
        out.append(-1 - (word & 0x7FFFFFFF))
    return out


class Projector:
    def __init__(
        self,
        path: Path,
        model_ptr: Any,
        threads: int | None = None,
        use_gpu: bool = False,
        flash_attn: bool = False,
    ) -> None:
        """`flash_attn`: llama.cpp's default for the tower is auto (on); its CPU kernel rounds keys and values to
        f16 (a relative error of 4e-4 on the tiny test tower's output, 1e-6 without), so it follows --flash-attn."""
        params = mt.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.flash_attn_type = 1 if flash_attn else 0
        params.n_threads = threads or os.cpu_count() or 1
        params.print_timings = False
        params.warmup = False
        params.media_marker = MARKER.encode()
        self.path = Path(path)
        self.ctx = mt.mtmd_init_from_file(str(path).encode(), model_ptr, params)
        if not self.ctx:
            raise EngineError(f"llama.cpp could not load the projector {path} for this model")
        self.model_ptr = model_ptr
        if not mt.mtmd_support_vision(self.ctx):
            self.close()
            raise EngineError(f"{path} is not an image projector (no vision encoder)")
        self.mrope = bool(mt.mtmd_decode_use_mrope(self.ctx))  # Qwen2.5-VL: 4 positions an image embedding
        self.non_causal = bool(mt.mtmd_decode_use_non_causal(self.ctx, None))
        self.n_embd = int(ll.llama_model_n_embd_inp(model_ptr))
        st = self.path.stat()
        self.identity = f"{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()

    def close(self) -> None:
        if self.ctx:
            mt.mtmd_free(self.ctx)
            self.ctx = None

    # -- any thread ------------------------------------------------------------------------------------------

    def bitmap(self, data: bytes) -> Any:
        """Decode an encoded image (PNG, JPEG, GIF, BMP: stb_image) into an mtmd bitmap. Bound the size first
        (serve/chat/images.py): stb decodes whatever the header says."""
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        bmp = mt.mtmd_helper_bitmap_init_from_buf(self.ctx, buf, len(data), False)
        if not bmp:
            raise ImageError("the image could not be decoded (corrupt or truncated?)")
        if mt.mtmd_bitmap_is_audio(bmp):
            mt.mtmd_bitmap_free(bmp)
            raise ImageError("the data is audio, not an image")
        return bmp

    def tokenize(self, text: str, images: list[bytes], add_special: bool = True) -> Tokenized:
        """The prompt's ids and image spans; `text` holds MARKER once per image, in order."""
        if text.count(MARKER) != len(images):
            raise ImageError(f"{len(images)} images but {text.count(MARKER)} image markers in the prompt")
        bitmaps = []
        try:
            keys = []
            for data in images:
                bmp = self.bitmap(data)
                bitmaps.append(bmp)
                n = mt.mtmd_bitmap_get_n_bytes(bmp)
                pixels = ctypes.string_at(mt.mtmd_bitmap_get_data(bmp), n)
                nx, ny = mt.mtmd_bitmap_get_nx(bmp), mt.mtmd_bitmap_get_ny(bmp)
                key = hashlib.sha256(self.identity + f":{nx}x{ny}:".encode() + pixels).digest()
                keys.append(key)
                mt.mtmd_bitmap_set_id(bmp, key.hex().encode())
            return self._tokenize(text, bitmaps, keys, add_special)
        finally:
            for bmp in bitmaps:
                mt.mtmd_bitmap_free(bmp)

    def _tokenize(self, text: str, bitmaps: list[Any], keys: list[bytes], add_special: bool) -> Tokenized:
        data = text.encode()
        inp = mt.mtmd_input_text(data, len(data), add_special, True)
        arr = (mt.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
        chunks = mt.mtmd_input_chunks_init()
        try:
            rc = mt.mtmd_tokenize(self.ctx, chunks, ctypes.byref(inp), arr, len(bitmaps))
            if rc != 0:
                raise ImageError(f"llama.cpp could not prepare the images (mtmd_tokenize returned {rc})")
            ids: list[int] = []
            spans: list[ImageSpan] = []
            by_id = {key.hex().encode(): key for key in keys}  # mtmd gives each chunk its bitmap's id
            seen: dict[bytes, int] = {}  # chunks of each image so far (Idefics3 cuts one picture into tiles)
            for i in range(mt.mtmd_input_chunks_size(chunks)):
                chunk = mt.mtmd_input_chunks_get(chunks, i)
                kind = mt.mtmd_input_chunk_get_type(chunk)
                if kind == mt.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t()
                    toks = mt.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                    ids.extend(toks[i] for i in range(n.value))
                elif kind == mt.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    n_tok = int(mt.mtmd_input_chunk_get_n_tokens(chunk))
                    n_pos = int(mt.mtmd_input_chunk_get_n_pos(chunk))
                    if n_pos != n_tok and not self.mrope:
                        raise ImageError("this projector's images take positions unlike their tokens (unsupported)")
                    image = by_id[mt.mtmd_input_chunk_get_id(chunk)]
                    part = seen[image] = seen.get(image, -1) + 1
                    key = image if part == 0 else hashlib.sha256(image + part.to_bytes(4, "little")).digest()
                    grid = mrope_grid(chunk, n_tok) if self.mrope else None
                    spans.append(ImageSpan(len(ids), n_tok, key, mt.mtmd_input_chunk_copy(chunk), n_pos, grid))
                    ids.extend(pseudo_ids(key, n_tok))
                else:
                    raise ImageError("only images are supported (not audio)")
            return Tokenized(ids, tuple(spans))
        finally:
            mt.mtmd_input_chunks_free(chunks)

    def tokens_per_image(self) -> int:
        """Positions a small image takes (fixed-size projectors such as Gemma 3's: every image; Idefics3's: the
        fewest tiles, one and its overview)."""
        return sum(span.n_tokens for span in self.tokenize(MARKER, [BLACK_8X8_PNG], add_special=False).images)

    # -- one thread at a time (the image encoder's) -----------------------------------------------------------

    def encode(self, span: ImageSpan) -> np.ndarray:
        """The image's embeddings, (n_tokens, n_embd) float32 (a copy: mtmd reuses its buffer)."""
        rc = mt.mtmd_encode_chunk(self.ctx, span.chunk)
        if rc != 0:
            raise EngineError(f"llama.cpp could not encode the image (mtmd_encode_chunk returned {rc})")
        ptr = mt.mtmd_get_output_embd(self.ctx)
        return np.ctypeslib.as_array(ptr, shape=(span.n_tokens * self.n_embd,)).reshape(span.n_tokens, -1).copy()


def mrope_grid(chunk: Any, n_tokens: int) -> np.ndarray:
    """(n_tokens, 4) int32: each image embedding's M-RoPE (t, row, column, 0) for an image at position 0, in
    llama.cpp's section order (mtmd-helper's set_position_mrope_2d: t, y, x, z)."""
    image = mt.mtmd_input_chunk_get_tokens_image(chunk)
    out = np.zeros((n_tokens, 4), np.int32)
    for i in range(n_tokens):
        p = mt.mtmd_image_tokens_get_decoder_pos(image, 0, i)
        out[i] = (p.t, p.y, p.x, p.z)
    return out


def mrope_positions(grid: np.ndarray, pos0: int) -> np.ndarray:
    """llama_batch.pos for an image at pos0: 4 x n values, section-major (all t, then rows, columns, z)."""
    pos = grid.astype(np.int32).copy()
    pos[:, :3] += pos0  # z stays 0, as mtmd sets it
    return np.ascontiguousarray(pos.T).ravel()


def decode_embeddings(
    ctx: Any,
    embd: np.ndarray,
    pos0: int,
    seq: int,
    *,
    non_causal: bool,
    logits: bool = False,
    mrope: np.ndarray | None = None,
) -> None:
    """Decode rows of embeddings into sequence `seq` at positions pos0.. in one llama_decode (the context's
    n_ubatch must hold them all when `non_causal`); `logits`: output logits for every row (tests); `mrope`: the
    image's M-RoPE grid (ImageSpan.mrope; its rows for these embeddings), placed at pos0."""
    n, width = embd.shape
    batch = ll.llama_batch_init(n, width, 1)
    own_pos = ctypes.cast(batch.pos, ctypes.c_void_p).value  # the address (a pointer field read aliases the struct)
    try:
        flat = np.ascontiguousarray(embd, np.float32).ravel()
        ctypes.memmove(batch.embd, flat.ctypes.data, flat.nbytes)
        if mrope is not None:  # 4 positions a row: our array in place of the batch's, put back before the free
            pos = mrope_positions(mrope, pos0)
            batch.pos = pos.ctypes.data_as(ctypes.POINTER(ll.llama_pos))
        for i in range(n):
            if mrope is None:
                batch.pos[i] = pos0 + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = n
        if non_causal:
            ll.llama_set_causal_attn(ctx, False)
        try:
            rc = ll.llama_decode(ctx, batch)
        finally:
            if non_causal:
                ll.llama_set_causal_attn(ctx, True)
        if rc != 0:
            raise EngineError(f"llama_decode of image embeddings returned {rc}")
    finally:
        batch.pos = ctypes.cast(ctypes.c_void_p(own_pos), ctypes.POINTER(ll.llama_pos))
        ll.llama_batch_free(batch)

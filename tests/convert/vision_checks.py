"""llama.cpp driven directly on a converted vision model, for the tests that hold it against transformers: the
model and its projector loaded, logits at every position of a prompt with images in it, llama.cpp's f16 GELU put
on transformers' side, and a copy of a checkpoint with one setting changed that the converter must refuse."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from convert import convert_checkpoint
from convert.errors import UnsupportedError
from hearth_common.paths import mmproj_path


@contextmanager
def loaded(gguf: Path) -> Iterator[tuple[Any, Any]]:
    """(Model, Projector) for a GGUF and the mmproj beside it, closed afterwards."""
    from serve.engine.engine import Model
    from serve.engine.vision import Projector

    model = Model(gguf)
    proj = Projector(mmproj_path(gguf), model.ptr, threads=2)
    try:
        yield model, proj
    finally:
        proj.close()
        model.close()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference relative to the reference's largest magnitude."""
    return float(np.abs(a - b).max() / np.abs(b).max())


class F16TanhGelu(torch.nn.Module):
    """ggml's CPU GELU: the tanh approximation, the input rounded to f16, the output read from a table of f16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x.half().float(), approximate="tanh").half().float()


def new_test_context(model: Any, n_ctx: int = 128, n_batch: int = 64) -> Any:
    from serve.engine.context import new_context

    return new_context(model.ptr, n_ctx=n_ctx, n_batch=n_batch, n_seq_max=1, kv_unified=True, threads=2,
                       flash_attn=False, kv_type="f16", what="a test context")  # fmt: skip


def _rows(ctx: Any, n: int, n_vocab: int) -> np.ndarray:
    import llama_cpp as ll

    return np.stack([np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).copy() for i in range(n)])


def decode_text(ctx: Any, ids: list[int], pos0: int, n_vocab: int) -> np.ndarray:
    """Decode `ids` at positions pos0.. in sequence 0; their logits, (len(ids), n_vocab)."""
    import llama_cpp as ll

    batch = ll.llama_batch_init(len(ids), 0, 1)
    try:
        for i, t in enumerate(ids):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, pos0 + i, 1, True
            batch.seq_id[i][0] = 0
        batch.n_tokens = len(ids)
        assert ll.llama_decode(ctx, batch) == 0
        return _rows(ctx, len(ids), n_vocab)
    finally:
        ll.llama_batch_free(batch)


def logits_with_images(model: Any, proj: Any, tok: Any, n_ctx: int = 128, n_batch: int = 64) -> np.ndarray:
    """llama.cpp's logits at every position of a tokenized prompt (Projector.tokenize): the text between images
    decoded as tokens, each image's embeddings decoded in its place (at its M-RoPE grid where it has one); the text
    after an image resumes n_pos past the image's start, as mtmd places it."""
    import llama_cpp as ll

    from serve.engine.vision import decode_embeddings

    n = len(tok.ids)
    got = np.zeros((n, model.n_vocab), np.float32)
    ctx = new_test_context(model, n_ctx, n_batch)
    try:
        pos, shift = 0, 0
        for span in (*tok.images, None):
            hi = span.start if span is not None else n
            if hi > pos:
                got[pos:hi] = decode_text(ctx, list(tok.ids[pos:hi]), pos + shift, model.n_vocab)
            if span is not None:
                embd = proj.encode(span)
                decode_embeddings(
                    ctx, embd, span.start + shift, 0, non_causal=proj.non_causal, logits=True, mrope=span.mrope
                )
                got[span.start : span.end] = _rows(ctx, span.n_tokens, model.n_vocab)
                shift += span.n_pos - span.n_tokens
                pos = span.end
    finally:
        ll.llama_free(ctx)
    return got


def variant(src: Path, tmp: Path, edit: dict[str, Callable[[Any], Any]]) -> Path:
    """A copy of checkpoint `src` under `tmp` with each named JSON file passed through its edit (in place)."""
    dst = tmp / "variant"
    shutil.copytree(src, dst)
    for name, change in edit.items():
        path = dst / name
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return dst


def assert_refused(src: Path, tmp: Path, edit: dict[str, Callable[[Any], Any]], named: str) -> None:
    """Converting `src` with `edit` applied fails naming the setting, and leaves no output behind."""
    with pytest.raises(UnsupportedError, match=named):
        convert_checkpoint(variant(src, tmp, edit), tmp / "x.gguf", "f32", progress=False)
    assert not list(tmp.glob("x*"))

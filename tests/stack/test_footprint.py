"""What the budget charges a model against what llama.cpp itself reports when it creates the context serve creates:
the KV cache exactly, the compute buffer within a margin on the safe side."""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from pathlib import Path

import llama_cpp as ll
import pytest

import serve.engine.engine
from serve.config import ServeConfig
from serve.engine.placement import kv_bytes_per_token
from stack.gguf_info import read_info
from stack.plan import compute_bytes

_lines: list[str] = []


@ll.llama_log_callback
def _capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    _lines.append(text.decode("utf-8", "replace"))


def reported_buffers(path: Path, n_seq: int, ctx: int) -> dict[str, float]:
    """MiB of KV cache and CPU compute buffer, from llama.cpp's own log lines for serve's context."""
    model = serve.engine.engine.Model(path)
    _lines.clear()
    ll.llama_log_set(_capture, ctypes.c_void_p())
    try:
        engine = serve.engine.engine.Engine(model, n_seq, ctx, threads=1)
        engine.stop()
    finally:
        ll.llama_log_set(serve.engine.engine._llama_log, ctypes.c_void_p())
        model.close()
    text = "".join(_lines)
    kv = sum(float(m) for m in re.findall(r"KV buffer size =\s+([\d.]+) MiB", text))
    compute = sum(float(m) for m in re.findall(r"CPU compute buffer size =\s+([\d.]+) MiB", text))
    return {"kv": kv, "compute": compute}


@pytest.mark.parametrize("name", ["demo-think", "demo-harmony"])
@pytest.mark.parametrize(("n_seq", "ctx"), [(4, 1024), (1, 512)])
def test_kv_and_compute_against_llama_cpp(demo_gguf: Callable[[str], Path], name: str, n_seq: int, ctx: int) -> None:
    path = demo_gguf(name)
    info = read_info(path)
    reported = reported_buffers(path, n_seq, ctx)
    kv = kv_bytes_per_token(info.shape, "f16") * ctx * n_seq * info.shape.n_layers / 2**20
    assert kv == pytest.approx(reported["kv"], abs=0.015)  # llama.cpp prints MiB with two decimals, per cache
    n_ubatch = ServeConfig.model_fields["prompt_chunk"].default + n_seq  # serve's micro-batch
    estimate = compute_bytes(n_ubatch, info.n_vocab, info.n_head, info.n_ff, ctx) / 2**20
    assert reported["compute"] > 0
    assert 0.9 <= estimate / reported["compute"] <= 1.5, (estimate, reported)


def test_embeddings_model_against_llama_cpp(embedding_gguf: Path, tmp_path: Path) -> None:
    """An embeddings server (serve/engine/embedder.py) holds one KV stream and one micro-batch of its whole context, every
    token through the output head: the stack's needs for `embeddings = true` against llama.cpp's report."""
    from serve.engine.embedder import Embedder
    from stack.config import parse_stack
    from stack.prepare import model_needs

    info = read_info(embedding_gguf)
    stack = parse_stack(
        {"models": [{"name": "e", "source": str(embedding_gguf), "embeddings": True, "ctx_size": 200}]}, tmp_path
    )
    needs = model_needs(stack, {"e": info})[0]
    model = serve.engine.engine.Model(embedding_gguf)
    _lines.clear()
    ll.llama_log_set(_capture, ctypes.c_void_p())
    try:
        Embedder(model, min(200, info.n_ctx_train or 200), threads=1).stop()
    finally:
        ll.llama_log_set(serve.engine.engine._llama_log, ctypes.c_void_p())
        model.close()
    text = "".join(_lines)
    kv = sum(float(m) for m in re.findall(r"KV buffer size =\s+([\d.]+) MiB", text))
    compute = sum(float(m) for m in re.findall(r"CPU compute buffer size =\s+([\d.]+) MiB", text))
    kv_planned = kv_bytes_per_token(info.shape, "f16") * needs.n_ctx * info.shape.n_layers / 2**20
    assert kv_planned == pytest.approx(kv, abs=0.015)
    assert 0.9 <= needs.host_compute / 2**20 / compute <= 1.5, (needs.host_compute / 2**20, compute)


def _vision_checkpoint(folder: Path, vision: dict[str, int], tokens: int) -> Path:
    """testkit's tiny Gemma 3 text model under a SigLIP tower of `vision` (random), converted: NAME.gguf and its
    projector beside it."""
    import torch
    import transformers

    from convert import convert_checkpoint
    from testkit.fixtures.build import build_fixture
    from testkit.fixtures.vision import MEAN, STD, add_image_tokens, gemma3_config, write_preprocessor

    text, src = build_fixture("gemma3"), folder / "hf"
    src.mkdir()
    for name in ("tokenizer.model", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        (src / name).write_bytes((text / name).read_bytes())
    _, ids = add_image_tokens(text, src)
    lm = transformers.Gemma3ForCausalLM.from_pretrained(text, dtype=torch.float32)
    config = gemma3_config(lm.config, {**vision, "num_hidden_layers": 1, "vision_use_head": False}, tokens, ids)
    transformers.Gemma3ForConditionalGeneration(config).save_pretrained(src, safe_serialization=True)
    write_preprocessor(src, vision["image_size"], MEAN, STD, tokens)
    return convert_checkpoint(src, folder / "v.gguf", "f32", progress=False)


@pytest.mark.parametrize(
    ("vision", "tokens"),
    [
        (
            {
                "hidden_size": 64,
                "intermediate_size": 256,
                "num_attention_heads": 4,
                "image_size": 224,
                "patch_size": 14,
            },
            64,
        ),
        (
            {
                "hidden_size": 32,
                "intermediate_size": 128,
                "num_attention_heads": 2,
                "image_size": 112,
                "patch_size": 14,
            },
            16,
        ),
    ],
)
def test_projector_against_llama_cpp(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], vision: dict[str, int], tokens: int
) -> None:
    """The image projector beside a GGUF, as the plan reads it: its tokens an image as llama.cpp's mtmd counts them,
    its weights as the file holds them, and its compute buffer within a margin of clip's own report at the first
    encode (printed to stderr)."""
    from hearth_common.paths import mmproj_path
    from serve.engine.vision import MARKER, Projector
    from stack.plan import projector_compute_bytes
    from testkit.images import png

    gguf = _vision_checkpoint(tmp_path, vision, tokens)
    info = read_info(gguf).projector
    assert info is not None
    model = serve.engine.engine.Model(gguf)
    projector = Projector(mmproj_path(gguf), model.ptr, 1)
    try:
        capfd.readouterr()
        assert info.tokens_per_image == projector.tokens_per_image() == tokens
        projector.encode(projector.tokenize(MARKER, [png(8, 8, (1, 2, 3))], add_special=False).images[0])
        reported = [float(m) for m in re.findall(r"CPU compute buffer size =\s+([\d.]+) MiB", capfd.readouterr().err)]
    finally:
        projector.close()
        model.close()
    from gguf import GGUFReader

    assert info.total_bytes == sum(int(t.n_bytes) for t in GGUFReader(mmproj_path(gguf)).tensors)
    estimate = projector_compute_bytes(info.image_size, info.patch_size, info.n_head, info.n_ff) / 2**20
    assert len(reported) == 1 and reported[0] > 0
    assert 0.9 <= estimate / reported[0] <= 1.5, (estimate, reported)

"""Qwen2.5-VL converted to the qwen2vl text GGUF (M-RoPE) plus a `qwen2.5vl_merger` mmproj GGUF, checked against
transformers.

The checkpoint is testkit.fixtures.qwen25vl's tiny Qwen2_5_VLForConditionalGeneration (the qwen2 fixture's text
model and Qwen2 BPE vocabulary with the vision tokens, M-RoPE sections [2, 3, 3]; a 4-block tower with 112-pixel
windows and full attention in blocks 1 and 3, the 2x2 patch merger). A 168x112 picture of random pixels is what
Qwen2VLImageProcessor and llama.cpp both keep as it is: 12x8 patches in two windows across, 6x4 = 24 image tokens,
and the text after it 6 positions (max(6, 4)) past its start.

llama.cpp is driven directly here: the image's embeddings decoded with their 4 positions each
(serve/engine/vision.py's decode_embeddings), the text after at positions shifted by n_pos - n_tokens; the server
path is tests/serve/test_vision_qwen25vl.py.

Measured (f32 GGUFs, an f16 KV cache): image embeddings 3.7e-4 to 4.5e-4 relative to transformers over three random
pictures (the merger's GELU is the tanh approximation in llama.cpp, exact in transformers; the patch kernels pass
through im2col); text-only logits (42 positions) max difference 0.044 % of the logit range; logits with the image
in the prompt (65 positions, 24 of them the image's) 0.046 % to 0.055 %; top-1 equal at every position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")
PIL = pytest.importorskip("PIL.Image")

from gguf import GGUFReader  # noqa: E402

from convert import convert_checkpoint  # noqa: E402
from convert.verify import TOLERANCES, compare  # noqa: E402
from hearth_common.paths import mmproj_path  # noqa: E402
from testkit.fixtures.qwen25vl import (  # noqa: E402
    HEIGHT,
    IMAGE_TOKENS,
    WIDTH,
    build_qwen25vl,
    image_processor,
    image_prompt,
)
from testkit.images import png  # noqa: E402
from tests.convert.vision_checks import assert_refused, decode_text, loaded, logits_with_images, new_test_context, rel  # noqa: E402

pytestmark = pytest.mark.slow

COLS, ROWS = WIDTH // 28, HEIGHT // 28  # 6 x 4 merged tokens
PROMPT = "<|im_start|>user\nWhat is in this picture? {m} Answer in one word.<|im_end|>\n<|im_start|>assistant\n"
TEXT = "<|im_start|>user\nThe quick brown fox jumps over the lazy dog, twice.<|im_end|>\n<|im_start|>assistant\n"


def _pixels_raw(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def src() -> Path:
    return build_qwen25vl()


@pytest.fixture(scope="module")
def converted(src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_checkpoint(src, tmp_path_factory.mktemp("qwen25vl") / "q.gguf", "f32", progress=False)


@pytest.fixture(scope="module")
def hf(src: Path):
    return transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(src, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer(src: Path):
    return transformers.AutoTokenizer.from_pretrained(src)


@pytest.fixture(scope="module")
def llama(converted: Path):
    with loaded(converted) as pair:
        yield pair


def _hf_pixels(raw: bytes) -> dict:
    img = PIL.frombytes("RGB", (WIDTH, HEIGHT), raw)
    return image_processor()(images=[img], return_tensors="pt")


def test_files_are_what_llama_cpp_reads(converted: Path) -> None:
    text = {k: v.contents() for k, v in GGUFReader(converted).fields.items()}
    assert text["general.architecture"] == "qwen2vl"
    assert text["qwen2vl.rope.dimension_sections"] == [2, 3, 3, 0]
    r = GGUFReader(mmproj_path(converted))
    f = {k: v.contents() for k, v in r.fields.items() if k.startswith(("clip.", "general.a", "general.type"))}
    assert f["general.architecture"] == "clip" and f["general.type"] == "mmproj"
    assert f["clip.projector_type"] == "qwen2.5vl_merger" and f["clip.use_silu"] is True
    assert f["clip.vision.n_wa_pattern"] == 2 and f["clip.vision.block_count"] == 4
    names = {t.name for t in r.tensors}
    assert {"v.patch_embd.weight", "v.patch_embd.weight.1", "v.post_ln.weight", "mm.0.weight", "mm.2.weight"} <= names
    assert {f"v.blk.3.attn_{p}.{w}" for p in "qkv" for w in ("weight", "bias")} <= names


def test_text_logits_match_transformers(llama, hf, tokenizer) -> None:
    import llama_cpp as ll

    model, _ = llama
    ids = tokenizer(TEXT)["input_ids"]
    ctx = new_test_context(model, n_ctx=256, n_batch=128)
    try:
        got = decode_text(ctx, ids, 0, model.n_vocab)
    finally:
        ll.llama_free(ctx)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor([ids])).logits[0].numpy()[:, : model.n_vocab]
    c = compare([ref], [got])
    rel, top1 = TOLERANCES["f32"]
    assert c.relative <= rel and c.top1 >= top1


def test_prompt_tokens_are_the_processors(llama, tokenizer) -> None:
    from serve.engine.vision import MARKER

    _, p = llama
    tok = p.tokenize(PROMPT.format(m=MARKER), [png(WIDTH, HEIGHT, _pixels_raw(1))])
    (span,) = tok.images
    assert (span.n_tokens, span.n_pos) == (COLS * ROWS, max(COLS, ROWS))
    # mtmd's layout: (t, row, column, 0) from the image's start, raster order
    grid = np.array([(0, r, c, 0) for r in range(ROWS) for c in range(COLS)])
    assert span.mrope is not None and np.array_equal(span.mrope, grid)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in IMAGE_TOKENS}
    expanded = image_prompt(ids, COLS * ROWS)
    got = list(tok.ids)
    got[span.start : span.end] = expanded[1:-1]
    text = PROMPT.format(m="".join(tokenizer.convert_ids_to_tokens(expanded)))
    assert got == tokenizer(text)["input_ids"]


@pytest.mark.parametrize("seed", [1, 2])
def test_image_embeddings_match_transformers(llama, hf, seed: int) -> None:
    from serve.engine.vision import MARKER

    _, p = llama
    raw = _pixels_raw(seed)
    (span,) = p.tokenize(MARKER, [png(WIDTH, HEIGHT, raw)]).images
    got = p.encode(span)
    pixels = _hf_pixels(raw)
    assert pixels["image_grid_thw"].tolist() == [[1, ROWS * 2, COLS * 2]]  # no resize
    with torch.no_grad():
        ref = hf.model.get_image_features(pixels["pixel_values"], pixels["image_grid_thw"]).pooler_output[0].numpy()
    assert got.shape == ref.shape == (COLS * ROWS, 64)
    assert rel(got, ref) < 2e-3


def test_logits_with_an_image_in_the_prompt_match_transformers(llama, hf, tokenizer) -> None:
    from serve.engine.vision import MARKER

    model, p = llama
    raw = _pixels_raw(3)
    tok = p.tokenize(PROMPT.format(m=MARKER), [png(WIDTH, HEIGHT, raw)])
    (span,) = tok.images
    got = logits_with_images(model, p, tok, n_ctx=256, n_batch=128)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in IMAGE_TOKENS}
    text = PROMPT.format(m="".join(tokenizer.convert_ids_to_tokens(image_prompt(ids, span.n_tokens))))
    input_ids = tokenizer(text, return_tensors="pt")["input_ids"]
    pixels = _hf_pixels(raw)
    kinds = (input_ids == ids["<|image_pad|>"]).int()
    with torch.no_grad():
        ref = hf(input_ids=input_ids, mm_token_type_ids=kinds, use_cache=False, **pixels).logits[0].numpy()
    ref = ref[:, : model.n_vocab]
    assert ref.shape == got.shape
    c = compare([ref], [got])
    rel, top1 = TOLERANCES["f32"]
    assert c.relative <= rel and c.top1 >= top1


def test_text_only_leaves_the_projector_out(src: Path, tmp_path: Path) -> None:
    out = convert_checkpoint(src, tmp_path / "t.gguf", "f32", progress=False, text_only=True)
    assert out.exists() and not mmproj_path(out).exists()


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"config.json": lambda d: d["vision_config"].update(hidden_act="gelu")}, "hidden_act=gelu"),
        ({"config.json": lambda d: d["vision_config"].update(fullatt_block_indexes=[1])}, "fullatt_block_indexes"),
        ({"config.json": lambda d: d["vision_config"].update(window_size=56)}, "window_size=56"),
        ({"config.json": lambda d: d["vision_config"].update(spatial_merge_size=4)}, "spatial_merge_size=4"),
        (
            {"config.json": lambda d: d["text_config"]["rope_parameters"].update(mrope_section=[2, 2, 2])},
            "mrope_section",
        ),
        ({"preprocessor_config.json": lambda d: d.update(resample=2)}, "resample=2"),
        ({"preprocessor_config.json": lambda d: d.update(rescale_factor=0.5)}, "rescale_factor=0.5"),
    ],
)
def test_settings_llama_cpp_cannot_run_are_refused(src: Path, tmp_path: Path, edit, named: str) -> None:
    assert_refused(src, tmp_path, edit, named)

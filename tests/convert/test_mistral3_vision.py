"""Mistral 3 (Pixtral) converted to the mistral3 text GGUF plus a `pixtral` mmproj GGUF, checked against transformers.

The checkpoint is testkit.fixtures.pixtral's tiny Mistral3ForConditionalGeneration (the mistral3 fixture's Ministral 3
text model and vocabulary with the image tokens, a 2-layer Pixtral tower on 64x64 images in 8x8 patches, Mistral 3's
2x2 patch merger). A solid 64x64 picture is what PixtralImageProcessor and llama.cpp both keep as it is: a 4x4 grid
of tokens, an [IMG_BREAK] after each row but the last, then [IMG_END].

Measured (f32, three colours): image embeddings 2.0e-4 to 5.5e-4 relative to transformers (the 3 break rows are
the embedding row itself, exact). llama.cpp's projector GELU is the tanh approximation read from a table of f16
values where Mistral 3's is exact (erf), and its im2col rounds the patches to f16: with both applied to
transformers' side, 0.9e-4 to 1.6e-4 is left, which this test does not attribute further (the tower's 2-D rope and
attention in ggml against torch; the merger's RMS norm takes llama.cpp's vision eps 1e-5 where transformers takes
the text rms_norm_eps, 1e-6 here, which measured nothing). Logits with the image in the prompt (47 positions, 19
of them the image's): max difference 0.052 % of the logit range, top-1 equal at every position.
"""

from __future__ import annotations

import json
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
from testkit.fixtures.pixtral import (  # noqa: E402
    IMAGE_SIZE,
    IMAGE_TOKENS,
    build_mistral3_vision,
    image_processor,
    image_prompt,
)
from testkit.images import png  # noqa: E402
from tests.convert.vision_checks import F16TanhGelu, assert_refused, loaded, logits_with_images, rel  # noqa: E402

pytestmark = pytest.mark.slow

COLOURS = [(200, 30, 90), (255, 255, 255), (12, 180, 240)]
PROMPT = "[INST]What colour is this? {m} Answer in one word.[/INST]"
GRID = 4  # 64 pixels / 8-pixel patches / merge 2
BREAKS = [(r + 1) * (GRID + 1) - 1 for r in range(GRID - 1)]  # positions of [IMG_BREAK] within the image


@pytest.fixture(scope="module")
def src() -> Path:
    return build_mistral3_vision()


@pytest.fixture(scope="module")
def converted(src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_checkpoint(src, tmp_path_factory.mktemp("mistral3v") / "m3v.gguf", "f32", progress=False)


@pytest.fixture(scope="module")
def hf(src: Path):
    return transformers.Mistral3ForConditionalGeneration.from_pretrained(src, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer(src: Path):
    return transformers.AutoTokenizer.from_pretrained(src)


@pytest.fixture(scope="module")
def llama(converted: Path):
    with loaded(converted) as pair:
        yield pair


def _pixels(rgb: tuple[int, int, int]) -> dict:
    return image_processor()(images=[PIL.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), rgb)], return_tensors="pt")


def _hf_image(model, pixels: dict, brk_id: int) -> np.ndarray:
    """transformers' image features as llama.cpp lays them out: each row of the grid, then the [IMG_BREAK] row of
    the text embedding (which transformers takes from the prompt's [IMG_BREAK] token)."""
    with torch.no_grad():
        feats = model.model.get_image_features(pixels["pixel_values"], image_sizes=pixels["image_sizes"])
        brk = model.model.language_model.embed_tokens.weight[brk_id]
    grid = feats.pooler_output[0].numpy().reshape(GRID, GRID, -1)
    rows: list[np.ndarray] = []
    for r in range(GRID):
        rows.extend(grid[r])
        if r < GRID - 1:
            rows.append(brk.detach().numpy())
    return np.stack(rows)


def test_projector_file_is_what_mtmd_reads(converted: Path, src: Path, hf) -> None:
    r = GGUFReader(mmproj_path(converted))
    f = {k: v.contents() for k, v in r.fields.items() if k.startswith(("clip.", "general.a", "general.type"))}
    assert f["general.architecture"] == "clip" and f["general.type"] == "mmproj"
    assert f["clip.projector_type"] == "pixtral" and f["clip.use_silu"] is True
    assert (f["clip.vision.image_size"], f["clip.vision.patch_size"]) == (64, 8)
    assert f["clip.vision.spatial_merge_size"] == 2 and f["clip.vision.projection_dim"] == 64
    tensors = {t.name: t for t in r.tensors}
    assert {"v.pre_ln.weight", "mm.input_norm.weight", "mm.patch_merger.weight", "mm.1.weight", "mm.2.weight"} <= set(
        tensors
    )
    tok = json.loads((src / "tokenizer.json").read_text())
    brk = next(t["id"] for t in tok["added_tokens"] if t["content"] == "[IMG_BREAK]")
    row = hf.model.language_model.embed_tokens.weight[brk].detach().numpy()
    assert np.array_equal(np.asarray(tensors["v.token_embd.img_break"].data), row)


def test_prompt_tokens_are_the_processors(llama, tokenizer) -> None:
    from serve.engine.vision import MARKER

    _, p = llama
    tok = p.tokenize(PROMPT.format(m=MARKER), [png(IMAGE_SIZE, IMAGE_SIZE, COLOURS[0])])
    (span,) = tok.images
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in IMAGE_TOKENS}
    expanded = image_prompt(ids, GRID, GRID)
    assert span.n_tokens == len(expanded) - 1  # [IMG_END] follows as text
    got = list(tok.ids)
    got[span.start : span.end] = expanded[:-1]
    text = PROMPT.format(m="".join(tokenizer.convert_ids_to_tokens(expanded)))
    assert got == tokenizer(text)["input_ids"]


@pytest.mark.parametrize("rgb", COLOURS)
def test_image_embeddings_match_transformers(llama, hf, tokenizer, src: Path, rgb) -> None:
    from serve.engine.vision import MARKER

    _, p = llama
    (span,) = p.tokenize(MARKER, [png(IMAGE_SIZE, IMAGE_SIZE, rgb)]).images
    got = p.encode(span)
    pixels = _pixels(rgb)
    brk = tokenizer.convert_tokens_to_ids("[IMG_BREAK]")
    ref = _hf_image(hf, pixels, brk)
    assert got.shape == ref.shape == (GRID * GRID + GRID - 1, 64)
    assert np.array_equal(got[BREAKS], ref[BREAKS])
    assert rel(got, ref) < 1e-3
    # llama.cpp's GELU (tanh, f16 table) and im2col (f16) applied to transformers' side: closer still
    model = transformers.Mistral3ForConditionalGeneration.from_pretrained(src, dtype=torch.float32).eval()
    with torch.no_grad():
        w = model.model.vision_tower.patch_conv.weight
        w.copy_(w.half().float())
        model.model.multi_modal_projector.act = F16TanhGelu()
        pixels["pixel_values"] = pixels["pixel_values"].half().float()
    assert rel(got, _hf_image(model, pixels, brk)) < 3e-4


def test_logits_with_an_image_in_the_prompt_match_transformers(llama, hf, tokenizer) -> None:
    from serve.engine.vision import MARKER

    model, p = llama
    rgb = COLOURS[0]
    tok = p.tokenize(PROMPT.format(m=MARKER), [png(IMAGE_SIZE, IMAGE_SIZE, rgb)])
    assert len(tok.images) == 1
    got = logits_with_images(model, p, tok)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in IMAGE_TOKENS}
    text = PROMPT.format(m="".join(tokenizer.convert_ids_to_tokens(image_prompt(ids, GRID, GRID))))
    pixels = _pixels(rgb)
    with torch.no_grad():
        ref = hf(input_ids=tokenizer(text, return_tensors="pt")["input_ids"], **pixels).logits[0].numpy()
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
        ({"config.json": lambda d: d.update(projector_hidden_act="relu")}, "projector_hidden_act=relu"),
        ({"config.json": lambda d: d.update(vision_feature_layer=-2)}, "vision_feature_layer=-2"),
        ({"config.json": lambda d: d["vision_config"]["rope_parameters"].update(rope_theta=500.0)}, "rope_theta=500"),
        ({"preprocessor_config.json": lambda d: d.update(resample=2)}, "resample=2"),
        ({"preprocessor_config.json": lambda d: d.update(rescale_factor=0.5)}, "rescale_factor=0.5"),
    ],
)
def test_settings_llama_cpp_cannot_run_are_refused(src: Path, tmp_path: Path, edit, named: str) -> None:
    assert_refused(src, tmp_path, edit, named)

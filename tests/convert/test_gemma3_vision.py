"""Gemma 3's image projector converted to llama.cpp's mmproj GGUF, checked against transformers.

The checkpoint is testkit.fixtures.vision's tiny Gemma3ForConditionalGeneration (the gemma3 fixture's text model and
real SentencePiece vocabulary, a 2-layer SigLIP, Gemma 3's pooling projector). Images are solid colours of the
tower's size, so llama.cpp's preprocessing (u8 -> /255 -> mean/std) is exactly transformers' pixel_values.

Measured (f32, four colours): image embeddings 2.7e-4 to 4.4e-4 relative to transformers. llama.cpp rounds two
things to f16 in this graph: ggml_conv_2d's im2col (the patches and, through the matrix product, the patch kernel)
and its tanh-GELU (a table of f16 values); with those two roundings applied to transformers' side, what is left is
3e-7 to 7.6e-6. Logits with the image in the prompt: 4.9e-4 relative, top-1 equal at every position (text and
image). A non-square picture is letterboxed by llama.cpp (black bars, aspect kept), stretched by transformers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")

from gguf import GGUFReader  # noqa: E402

from convert import convert_checkpoint  # noqa: E402
from convert.errors import SourceError  # noqa: E402
from hearth_common.paths import mmproj_path  # noqa: E402
from testkit.fixtures.vision import build_gemma3_vision, pixel_values  # noqa: E402
from testkit.images import png  # noqa: E402
from tests.convert.vision_checks import F16TanhGelu, assert_refused, loaded, logits_with_images, rel, variant  # noqa: E402

pytestmark = pytest.mark.slow

COLOURS = [(200, 30, 90), (0, 0, 0), (255, 255, 255), (12, 180, 240)]
PROMPT = "<start_of_turn>user\nWhat colour is this? {m} Answer in one word.<end_of_turn>\n<start_of_turn>model\n"


@pytest.fixture(scope="module")
def src() -> Path:
    return build_gemma3_vision()


@pytest.fixture(scope="module")
def converted(src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_checkpoint(src, tmp_path_factory.mktemp("g3v") / "g3v.gguf", "f32", progress=False)


@pytest.fixture(scope="module")
def hf(src: Path):
    return transformers.Gemma3ForConditionalGeneration.from_pretrained(src, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def llama(converted: Path):
    with loaded(converted) as pair:
        yield pair


def test_projector_file_is_what_mtmd_reads(converted: Path) -> None:
    r = GGUFReader(mmproj_path(converted))
    f = {k: v.contents() for k, v in r.fields.items() if k.startswith(("clip.", "general.a", "general.type"))}
    assert f["general.architecture"] == "clip" and f["general.type"] == "mmproj"
    assert f["clip.projector_type"] == "gemma3" and f["clip.has_vision_encoder"] is True
    assert (f["clip.vision.image_size"], f["clip.vision.patch_size"]) == (16, 4)
    assert f["clip.vision.projector.scale_factor"] == 2  # 4 patches a side pooled to 2 tokens a side
    assert f["clip.vision.projection_dim"] == 64
    assert np.allclose(f["clip.vision.image_std"], [0.26862954, 0.26130258, 0.27577711])
    names = {t.name for t in r.tensors}
    assert {
        "v.patch_embd.weight",
        "v.position_embd.weight",
        "mm.input_projection.weight",
        "mm.soft_emb_norm.weight",
    } <= names
    assert not any(n.startswith(("token_embd", "blk.")) for n in names)


@pytest.mark.parametrize("rgb", COLOURS)
def test_image_embeddings_match_transformers(llama, hf, rgb) -> None:
    from serve.engine.vision import MARKER

    _, proj = llama
    tok = proj.tokenize(PROMPT.format(m=MARKER), [png(16, 16, rgb)])
    (span,) = tok.images
    got = proj.encode(span)
    with torch.no_grad():
        ref = hf.model.get_image_features(pixel_values(rgb)).pooler_output[0].numpy()
    assert got.shape == ref.shape == (4, 64)
    assert rel(got, ref) < 1e-3
    # the difference is llama.cpp's own f16 roundings: applied to transformers' side, what is left is float noise
    model = transformers.Gemma3ForConditionalGeneration.from_pretrained(hf.name_or_path, dtype=torch.float32).eval()
    tower = model.model.vision_tower
    with torch.no_grad():
        w = tower.embeddings.patch_embedding.weight
        w.copy_(w.half().float())
        for layer in tower.encoder.layers:
            layer.mlp.activation_fn = F16TanhGelu()
        rounded = model.model.get_image_features(pixel_values(rgb).half().float()).pooler_output[0].numpy()
    assert rel(got, rounded) < 5e-5


def test_a_larger_square_image_is_resized_as_transformers_does(llama, hf) -> None:
    """A solid 40x40 picture resized to 16x16 (bilinear) is the same solid colour on both sides."""
    from serve.engine.vision import MARKER

    _, proj = llama
    (span,) = proj.tokenize(MARKER, [png(40, 40, (10, 200, 60))]).images
    with torch.no_grad():
        ref = hf.model.get_image_features(pixel_values((10, 200, 60))).pooler_output[0].numpy()
    assert rel(proj.encode(span), ref) < 1e-3


def test_a_non_square_image_is_letterboxed_not_stretched(llama, hf) -> None:
    """llama.cpp keeps a gemma3 image's aspect ratio and pads with black (transformers stretches it): a solid 40x24
    picture becomes 16x10 of colour between 3 black rows above and below."""
    from serve.engine.vision import MARKER

    _, proj = llama
    (span,) = proj.tokenize(MARKER, [png(40, 24, (10, 200, 60))]).images
    colour, black = pixel_values((10, 200, 60)), pixel_values((0, 0, 0))
    boxed = black.clone()
    boxed[:, :, 3:13, :] = colour[:, :, 3:13, :]
    with torch.no_grad():
        ref = hf.model.get_image_features(boxed).pooler_output[0].numpy()
        stretched = hf.model.get_image_features(colour).pooler_output[0].numpy()
    got = proj.encode(span)
    assert rel(got, ref) < 1e-3
    assert rel(got, stretched) > 0.1


def test_logits_with_an_image_in_the_prompt_match_transformers(llama, hf) -> None:
    from serve.engine.vision import MARKER

    model, proj = llama
    rgb = (200, 30, 90)
    tok = proj.tokenize(PROMPT.format(m=MARKER), [png(16, 16, rgb)])
    (span,) = tok.images
    n = len(tok.ids)
    got = logits_with_images(model, proj, tok)
    ids = list(tok.ids)
    ids[span.start : span.end] = [hf.config.image_token_id] * span.n_tokens
    types = [1 if span.start <= i < span.end else 0 for i in range(n)]
    with torch.no_grad():
        ref = (
            hf(input_ids=torch.tensor([ids]), pixel_values=pixel_values(rgb), token_type_ids=torch.tensor([types]))
            .logits[0]
            .numpy()
        )
    ref = ref[:, : model.n_vocab]
    assert rel(got, ref) < 1e-3
    assert (got.argmax(-1) == ref.argmax(-1)).all()


def test_text_only_leaves_the_projector_out(src: Path, tmp_path: Path) -> None:
    out = convert_checkpoint(src, tmp_path / "t.gguf", "f32", progress=False, text_only=True)
    assert out.exists() and not mmproj_path(out).exists()


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"preprocessor_config.json": lambda d: d.update(do_pan_and_scan=True)}, "do_pan_and_scan"),
        ({"preprocessor_config.json": lambda d: d.update(resample=3)}, "resample=3"),
        ({"config.json": lambda d: d.update(mm_tokens_per_image=9)}, "mm_tokens_per_image=9"),
        ({"config.json": lambda d: d["vision_config"].update(hidden_act="relu")}, "hidden_act=relu"),
        ({"preprocessor_config.json": lambda d: d.update(rescale_factor=0.5)}, "rescale_factor=0.5"),
    ],
)
def test_settings_llama_cpp_cannot_run_are_refused(src: Path, tmp_path: Path, edit, named: str) -> None:
    assert_refused(src, tmp_path, edit, named)


def test_missing_preprocessor_config_is_one_line(src: Path, tmp_path: Path) -> None:
    folder = variant(src, tmp_path, {})
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(SourceError, match=r"preprocessor_config\.json"):
        convert_checkpoint(folder, tmp_path / "x.gguf", "f32", progress=False)

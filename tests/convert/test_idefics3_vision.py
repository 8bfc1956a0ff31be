"""Idefics3 / SmolVLM converted to a llama text GGUF plus an `idefics3` mmproj GGUF, checked against transformers.

The checkpoint is testkit.fixtures.smolvlm's tiny Idefics3ForConditionalGeneration (the llama fixture's text model
and byte-level BPE vocabulary with the image tokens, a 2-layer SigLIP on 16x16 tiles, the pixel-shuffle connector).
The oracle is transformers' own Idefics3Processor and model: pictures are 32x32, which both sides cut into four
16x16 tiles plus a 16x16 overview (llama.cpp resizes with its Lanczos, transformers with PIL's; on a solid colour
both give the colour exactly, so the pixels compared are the same).

Measured (f32, three colours, all five chunks): image embeddings 2.4e-4 to 4.4e-4 relative to transformers, which is
llama.cpp's f16 rounding of the patches in ggml_conv_2d's im2col and of its tanh-GELU table (as in the Gemma 3
test); with those roundings applied to transformers' side, 7e-7 to 1.3e-5 is left. A picture of four solid
quadrants: tiles 3.8e-4, overview (a 2x Lanczos downscale across the colour edges) 2.7e-4. Logits with an image in
the prompt (64 positions, 20 of them image): max difference 0.059 % of the logit range (positions before the image,
text alone, differ as much: the llama fixture's own f32 error), top-1 equal at every position.
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
from convert.errors import UnsupportedError  # noqa: E402
from convert.verify import TOLERANCES, compare  # noqa: E402
from hearth_common.paths import mmproj_path  # noqa: E402
from testkit.fixtures.build import build_fixture  # noqa: E402
from testkit.fixtures.smolvlm import LONGEST_EDGE, TOKENS_PER_TILE, build_idefics3_vision, processor  # noqa: E402
from testkit.images import png  # noqa: E402
from tests.convert.vision_checks import F16TanhGelu, assert_refused, loaded, logits_with_images, rel, variant  # noqa: E402

pytestmark = pytest.mark.slow

COLOURS = [(200, 30, 90), (255, 255, 255), (12, 180, 240)]
PROMPT = "<|start_header_id|>user<|end_header_id|>\n\nWhat colour is this? {m} Answer in one word.<|eot_id|>"
SIDE = LONGEST_EDGE  # 2x2 tiles and the overview
CHUNKS = 5


@pytest.fixture(scope="module")
def src() -> Path:
    return build_idefics3_vision()


@pytest.fixture(scope="module")
def converted(src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_checkpoint(src, tmp_path_factory.mktemp("smolvlm") / "smolvlm.gguf", "f32", progress=False)


@pytest.fixture(scope="module")
def hf(src: Path):
    return transformers.Idefics3ForConditionalGeneration.from_pretrained(src, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def proc(src: Path):
    return processor(src)


@pytest.fixture(scope="module")
def llama(converted: Path):
    with loaded(converted) as pair:
        yield pair


def _picture(pixels: bytes | tuple[int, int, int]) -> tuple[bytes, object]:
    """The same picture as PNG bytes (llama.cpp's input) and a PIL image (transformers')."""
    data = png(SIDE, SIDE, pixels)
    raw = bytes(pixels) * (SIDE * SIDE) if isinstance(pixels, tuple) else pixels
    return data, PIL.frombytes("RGB", (SIDE, SIDE), raw)


def _hf_inputs(proc, image) -> dict:
    return proc(text=[PROMPT.format(m="<image>")], images=[[image]], return_tensors="pt")


def _hf_embeddings(hf, inputs: dict) -> np.ndarray:
    with torch.no_grad():
        out = hf.get_image_features(inputs["pixel_values"], inputs["pixel_attention_mask"]).pooler_output[0]
    return out.numpy().reshape(CHUNKS, TOKENS_PER_TILE, -1)


def test_projector_file_is_what_mtmd_reads(converted: Path) -> None:
    r = GGUFReader(mmproj_path(converted))
    f = {k: v.contents() for k, v in r.fields.items() if k.startswith(("clip.", "general.a", "general.type"))}
    assert f["general.architecture"] == "clip" and f["general.type"] == "mmproj"
    assert f["clip.projector_type"] == "idefics3" and f["clip.has_vision_encoder"] is True
    assert (f["clip.vision.image_size"], f["clip.vision.patch_size"]) == (16, 4)
    assert f["clip.vision.projector.scale_factor"] == 2
    assert f["clip.vision.preproc_image_size"] == LONGEST_EDGE
    assert f["clip.vision.projection_dim"] == 64 and f["clip.use_gelu"] is True
    assert np.allclose(f["clip.vision.image_std"], [0.26862954, 0.26130258, 0.27577711])
    names = {t.name for t in r.tensors}
    assert {"v.patch_embd.weight", "v.position_embd.weight", "v.post_ln.weight", "mm.model.fc.weight"} <= names
    assert not any(n.startswith(("token_embd", "blk.")) for n in names)
    text = {t.name for t in GGUFReader(converted).tensors}
    assert "token_embd.weight" in text and not any(n.startswith(("v.", "mm.")) for n in text)


def test_prompt_tokens_are_the_processors(llama, proc) -> None:
    """mtmd's tiles, row markers, overview and newlines are exactly the token ids transformers' processor makes."""
    from serve.engine.vision import MARKER

    _, p = llama
    data, image = _picture(COLOURS[0])
    tok = p.tokenize(PROMPT.format(m=MARKER), [data])
    ref = _hf_inputs(proc, image)["input_ids"][0].tolist()
    assert len(tok.images) == CHUNKS and all(s.n_tokens == TOKENS_PER_TILE for s in tok.images)
    ids = list(tok.ids)
    for span in tok.images:
        ids[span.start : span.end] = [proc.image_token_id] * span.n_tokens
    assert ids == ref


@pytest.mark.parametrize("rgb", COLOURS)
def test_image_embeddings_match_transformers(llama, hf, proc, rgb) -> None:
    from serve.engine.vision import MARKER

    _, p = llama
    data, image = _picture(rgb)
    tok = p.tokenize(MARKER, [data])
    got = np.stack([p.encode(span) for span in tok.images])
    inputs = _hf_inputs(proc, image)
    ref = _hf_embeddings(hf, inputs)
    assert got.shape == ref.shape == (CHUNKS, TOKENS_PER_TILE, 64)
    assert rel(got, ref) < 1e-3
    # the difference is llama.cpp's own f16 roundings: applied to transformers' side, what is left is float noise
    model = transformers.Idefics3ForConditionalGeneration.from_pretrained(hf.name_or_path, dtype=torch.float32).eval()
    vision = model.model.vision_model
    with torch.no_grad():
        w = vision.embeddings.patch_embedding.weight
        w.copy_(w.half().float())
        for layer in vision.encoder.layers:
            layer.mlp.activation_fn = F16TanhGelu()
        inputs["pixel_values"] = inputs["pixel_values"].half().float()
    rounded = _hf_embeddings(model, inputs)
    assert rel(got, rounded) < 5e-5


def test_a_patterned_picture_matches_tiles_and_overview(llama, hf, proc) -> None:
    """Four solid quadrants: each tile is one colour on both sides (crops), and the overview (a 2x Lanczos
    downscale across the colour edges, llama.cpp's against PIL's) matches as closely (measured 2.7e-4)."""
    from serve.engine.vision import MARKER

    _, p = llama
    quads = [COLOURS[0], COLOURS[1], (0, 0, 0), COLOURS[2]]  # top-left, top-right, bottom-left, bottom-right
    half = SIDE // 2
    raw = b"".join(bytes(quads[(y >= half) * 2 + (x >= half)]) for y in range(SIDE) for x in range(SIDE))
    data, image = _picture(raw)
    tok = p.tokenize(MARKER, [data])
    got = np.stack([p.encode(span) for span in tok.images])
    ref = _hf_embeddings(hf, _hf_inputs(proc, image))
    assert rel(got[:4], ref[:4]) < 1e-3
    assert rel(got[4], ref[4]) < 1e-3


def test_logits_with_an_image_in_the_prompt_match_transformers(llama, hf, proc) -> None:
    from serve.engine.vision import MARKER

    model, p = llama
    assert not p.non_causal  # Idefics3's text model attends causally across the image
    data, image = _picture(COLOURS[0])
    tok = p.tokenize(PROMPT.format(m=MARKER), [data])
    got = logits_with_images(model, p, tok)
    inputs = _hf_inputs(proc, image)
    with torch.no_grad():
        ref = hf(**inputs).logits[0].numpy()[:, : model.n_vocab]
    assert ref.shape == got.shape
    # as the text conversions are judged (convert.verify): the largest difference relative to the logits' range
    c = compare([ref], [got])
    rel, top1 = TOLERANCES["f32"]
    assert c.relative <= rel and c.top1 >= top1


def test_text_only_leaves_the_projector_out(src: Path, tmp_path: Path) -> None:
    """The text GGUF is the llama fixture's model, found under model.text_model.*: its tensors are byte for byte
    what converting that LlamaForCausalLM gives."""
    out = convert_checkpoint(src, tmp_path / "t.gguf", "f32", progress=False, text_only=True)
    assert out.exists() and not mmproj_path(out).exists()
    mm = {t.name: t.data.tobytes() for t in GGUFReader(out).tensors}
    text = convert_checkpoint(build_fixture("llama"), tmp_path / "llama.gguf", "f32", progress=False)
    assert mm == {t.name: t.data.tobytes() for t in GGUFReader(text).tensors}


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"preprocessor_config.json": lambda d: d.update(do_image_splitting=False)}, "do_image_splitting=false"),
        ({"preprocessor_config.json": lambda d: d.update(resample=2)}, "resample=2"),
        ({"preprocessor_config.json": lambda d: d.update(max_image_size={"longest_edge": 32})}, "longest_edge=32"),
        ({"config.json": lambda d: d.update(scale_factor=3)}, "scale_factor=3"),
        ({"config.json": lambda d: d["vision_config"].update(hidden_act="relu")}, "hidden_act=relu"),
        ({"preprocessor_config.json": lambda d: d.update(rescale_factor=0.5)}, "rescale_factor=0.5"),
    ],
)
def test_settings_llama_cpp_cannot_run_are_refused(src: Path, tmp_path: Path, edit, named: str) -> None:
    assert_refused(src, tmp_path, edit, named)


def test_a_vocabulary_without_the_double_newline_is_refused(src: Path, tmp_path: Path) -> None:
    """mtmd looks "\\n\\n" up as one token before the overview; without it the prompt would hold token -1."""

    def split(d: dict) -> None:
        vocab = d["model"]["vocab"]
        vocab["ĊĊx"] = vocab.pop("ĊĊ")
        d["model"]["merges"] = [m for m in d["model"]["merges"] if m != ["Ċ", "Ċ"]]

    with pytest.raises(UnsupportedError, match=r"'\\n\\n'"):
        convert_checkpoint(
            variant(src, tmp_path, {"tokenizer.json": split}), tmp_path / "x.gguf", "f32", progress=False
        )


def test_vision_keys_left_out_of_config_json_take_transformers_defaults(src: Path, tmp_path: Path) -> None:
    """SmolVLM2's config.json leaves out vision keys equal to the config class's defaults; the projector's keys are
    then what transformers' config reads (written as they are: these tiny weights do not fit them)."""
    keys = ("hidden_size", "intermediate_size", "num_attention_heads")
    folder = variant(src, tmp_path, {"config.json": lambda d: [d["vision_config"].pop(k) for k in keys]})
    out = convert_checkpoint(folder, tmp_path / "d.gguf", "f32", progress=False)
    ref = transformers.AutoConfig.from_pretrained(folder).vision_config
    f = {k: v.contents() for k, v in GGUFReader(mmproj_path(out)).fields.items()}
    assert f["clip.vision.embedding_length"] == ref.hidden_size != 32
    assert f["clip.vision.feed_forward_length"] == ref.intermediate_size
    assert f["clip.vision.attention.head_count"] == ref.num_attention_heads

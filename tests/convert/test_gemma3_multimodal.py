"""Gemma3ForConditionalGeneration with --text-only: the text model is converted, the vision tower and projector are
dropped (test_gemma3_vision.py converts them).

The checkpoint is the gemma3 fixture's text weights inside a real (tiny) transformers Gemma3 multimodal
model, saved by save_pretrained, so its tensor names and nested text_config are what transformers writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")

from gguf import GGUFReader  # noqa: E402

from convert import convert_checkpoint  # noqa: E402
from convert.verify import TOLERANCES, compare, gguf_logits, hf_logits  # noqa: E402
from testkit.fixtures.build import build_fixture  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def multimodal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = build_fixture("gemma3")
    out = tmp_path_factory.mktemp("gemma3mm") / "model"
    text = transformers.Gemma3ForCausalLM.from_pretrained(src, dtype=torch.float32)
    vision = transformers.SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    config = transformers.Gemma3Config(
        text_config=text.config, vision_config=vision, mm_tokens_per_image=4,
        image_token_index=5, boi_token_index=6, eoi_token_index=7,
    )  # fmt: skip
    config.architectures = ["Gemma3ForConditionalGeneration"]
    torch.manual_seed(0)
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    model.model.language_model.load_state_dict(text.model.state_dict())
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "chat_template.jinja"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    return out


@pytest.fixture(scope="module")
def gguf(multimodal: Path) -> Path:
    return convert_checkpoint(multimodal, multimodal.with_name("mm.gguf"), "f32", progress=False, text_only=True)


def test_text_tensors_equal_the_text_only_conversion(gguf: Path, converted) -> None:
    mm = {t.name: t.data.tobytes() for t in GGUFReader(gguf).tensors}
    text = {t.name: t.data.tobytes() for t in GGUFReader(converted("gemma3", "f32")).tensors}
    assert mm == text


def test_logits_match_transformers_multimodal_model(multimodal: Path, gguf: Path) -> None:
    ref = hf_logits(multimodal)
    c = compare([r for _, r in ref], gguf_logits(gguf, [ids for ids, _ in ref]))
    rel, top1 = TOLERANCES["f32"]
    assert c.relative <= rel and c.top1 >= top1

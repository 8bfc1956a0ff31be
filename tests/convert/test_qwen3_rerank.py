"""Qwen3-Reranker conversion (convert/archs/qwen3_rerank.py): what llama.cpp's converter writes for one (rank pooling,
labels yes/no, cls.output = the LM head's rows for "yes" and "no" as transformers' tokenizer numbers them, the rerank
template, no LM head), and when a Qwen3 checkpoint is one (model card, name, --pooling rank). Scores are checked
against the model card's recipe in tests/serve/test_qwen3_rerank.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convert import convert_checkpoint
from convert.errors import UnsupportedError

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow  # the real Qwen vocabulary: about 30 s a conversion here


@pytest.fixture(scope="module", params=["untied", "tied"])
def folder(request: pytest.FixtureRequest, llama_src: Path) -> Path:
    from testkit.fixtures.qwen3_reranker import build_qwen3_reranker_fixture

    return build_qwen3_reranker_fixture(llama_src, tied=request.param == "tied")


def fields(gguf: Path) -> tuple[dict, dict]:
    from gguf import GGUFReader

    reader = GGUFReader(gguf)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    tensors = {t.name: np.array(t.data, dtype=np.float32).reshape(t.data.shape) for t in reader.tensors}
    return meta, tensors


def aside(folder: Path, dest: Path, readme: bool) -> Path:
    """The checkpoint's files under another folder name, with or without its model card."""
    dest.mkdir()
    for f in folder.iterdir():
        if readme or f.name != "README.md":
            (dest / f.name).symlink_to(f)
    return dest


def test_head_labels_pooling_and_template(folder: Path, tmp_path: Path) -> None:
    from gguf import PoolingType

    meta, tensors = fields(convert_checkpoint(folder, tmp_path / "r.gguf", "f32", progress=False))
    assert meta["qwen3.pooling_type"] == int(PoolingType.RANK)
    assert meta["qwen3.classifier.output_labels"] == ["yes", "no"]
    template = meta["tokenizer.chat_template.rerank"]
    assert "{query}" in template and "{document}" in template and template.endswith("<think>\n\n</think>\n\n")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    head = model.get_output_embeddings().weight.detach().numpy()
    ids = [tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")]
    np.testing.assert_array_equal(tensors["cls.output.weight"], head[ids])
    assert "output.weight" not in tensors  # the LM head is replaced, as llama.cpp's converter does
    np.testing.assert_array_equal(tensors["token_embd.weight"], model.get_input_embeddings().weight.detach().numpy())


def test_recognised_by_card_name_or_option(llama_src: Path, tmp_path: Path) -> None:
    from gguf import PoolingType

    from convert.archs.qwen3_rerank import is_reranker
    from convert.source import open_checkpoint
    from testkit.fixtures.qwen3_reranker import build_qwen3_reranker_fixture

    folder = build_qwen3_reranker_fixture(llama_src)
    card = aside(folder, tmp_path / "tiny", readme=True)  # the model card's heading alone
    named = aside(folder, tmp_path / "Qwen3-Reranker-0.6B", readme=False)  # the name alone
    plain = aside(folder, tmp_path / "plain", readme=False)  # a plain Qwen3 chat model, as far as its files say
    assert [is_reranker(open_checkpoint(f)) for f in (card, named, plain)] == [True, True, False]
    meta, _ = fields(convert_checkpoint(plain, tmp_path / "p.gguf", "f32", progress=False, pooling="rank"))
    assert meta["qwen3.pooling_type"] == int(PoolingType.RANK)  # said explicitly
    meta, tensors = fields(convert_checkpoint(card, tmp_path / "e.gguf", "f32", progress=False, pooling="last"))
    assert meta["qwen3.pooling_type"] == int(PoolingType.LAST) and "cls.output.weight" not in tensors


def test_rank_on_an_arch_without_a_reranker_form(tmp_path: Path) -> None:
    from testkit.fixtures.build import build_fixture

    with pytest.raises(UnsupportedError, match="no reranker form"):
        convert_checkpoint(build_fixture("qwen2"), tmp_path / "q.gguf", "f32", progress=False, pooling="rank")

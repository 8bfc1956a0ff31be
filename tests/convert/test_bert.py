"""BERT encoders: the WordPiece vocabulary against llama.cpp's oracle and transformers, vectors against
sentence-transformers, and the GGUF's metadata for an embedding model and a cross-encoder reranker.

The fixtures (testkit/fixtures/bert.py) carry llama.cpp's own WordPiece vocabulary (ggml-vocab-bert-bge.gguf);
its .inp/.out are the expected ids. Scores of the reranker are compared in tests/serve/test_rerank_engine.py,
where the server feeds the query/document pair with its token types.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")
transformers = pytest.importorskip("transformers")
sentence_transformers = pytest.importorskip("sentence_transformers")

from gguf import GGMLQuantizationType, GGUFReader, PoolingType  # noqa: E402

from convert import convert_checkpoint  # noqa: E402
from convert.errors import UnsupportedError  # noqa: E402
from testkit.fixtures.bert import VOCAB, build_bert_fixture  # noqa: E402
from testkit.fixtures.vocabs import vocab_cases  # noqa: E402
from tests.convert.strings import strings  # noqa: E402

pytestmark = pytest.mark.slow

TEXTS = [
    "Hello world!", "The capital of France is Paris.", "Ünïcödé façade naïve résumé", "你好，世界！ 東京",
    "def f(x):\n    return x * 2", "don't stop believing", "a " * 40, "https://example.com/a?b=c&d=e",
]  # fmt: skip
COSINE_MIN = 0.9999  # f32 GGUF; llama.cpp's GELU is the tanh approximation of transformers' erf GELU


@pytest.fixture(scope="module")
def embed(llama_src, tmp_path_factory):
    folder = build_bert_fixture("embed", llama_src)
    gguf = convert_checkpoint(folder, tmp_path_factory.mktemp("bert") / "embed.f32.gguf", "f32", progress=False)
    return folder, gguf


@pytest.fixture(scope="module")
def llm(embed):
    model = llama_cpp.Llama(str(embed[1]), embedding=True, n_ctx=128, n_batch=128, verbose=False)
    yield model
    model.close()


@pytest.fixture(scope="module")
def hf(embed):
    return transformers.AutoTokenizer.from_pretrained(embed[0])


def test_fixture_tokenizer_gives_llama_cpp_expected_ids(llama_src, hf):
    cases = vocab_cases(llama_src, VOCAB)
    wrong = [(s, want) for s, want in cases if hf(s, add_special_tokens=False).input_ids != want]
    assert len(cases) >= 40
    assert not wrong, f"the rebuilt vocab.txt differs on {len(wrong)}/{len(cases)}: {wrong[:2]}"


def test_llama_cpp_gives_its_expected_ids(llama_src, llm):
    cases = vocab_cases(llama_src, VOCAB)
    wrong = [(s, w, g) for s, w in cases if (g := llm.tokenize(s.encode(), add_bos=False, special=False)) != w]
    assert not wrong, f"{len(wrong)}/{len(cases)} differ from llama.cpp's .out, first: {wrong[:2]}"


# llama.cpp's WordPiece normalizer (the pinned build) drops Hangul vowel jamo and Devanagari vowel signs with the
# accents of an uncased vocabulary, where BertNormalizer strips only nonspacing marks: text in those scripts
# tokenizes differently on llama.cpp's side, whatever the converter writes (a llama.cpp limitation, measured here).
LLAMA_WPM_DIFFERS = re.compile("[\u1100-\u11ff\uac00-\ud7af\u0900-\u097f]")


def test_llama_cpp_tokenizes_as_transformers_with_cls_and_sep(llm, hf):
    """[CLS] text [SEP], as BertTokenizer adds them, on 200+ strings (words under 100 characters: HF's
    max_input_chars_per_word turns a longer one into [UNK], llama.cpp has no such limit)."""
    cases = [s for s in strings(["[CLS]", "[SEP]", "[MASK]"]) if all(len(w) < 100 for w in s.split())]
    wrong = [
        (s, w, g)
        for s in cases
        if (g := llm.tokenize(s.encode(), add_bos=True, special=True)) != (w := hf(s).input_ids)
    ]
    assert len(cases) >= 200
    unexplained = [x for x in wrong if not LLAMA_WPM_DIFFERS.search(x[0])]
    assert not unexplained, f"{len(unexplained)}/{len(cases)} differ from transformers, first: {unexplained[:2]}"
    assert len(wrong) <= 10  # the Hangul / Devanagari strings of tests/convert/strings.py


def test_vectors_equal_sentence_transformers(embed, llm):
    st = sentence_transformers.SentenceTransformer(str(embed[0]), device="cpu")
    want = st.encode(TEXTS, convert_to_numpy=True)
    got = np.array([llm.embed(t, normalize=True) for t in TEXTS])
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= COSINE_MIN, cosine
    assert np.allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-5)  # the Normalize module: unit vectors


def test_embedding_metadata(embed):
    reader = GGUFReader(embed[1])
    f = reader.fields
    assert f["general.architecture"].contents() == "bert"
    assert f["bert.pooling_type"].contents() == int(PoolingType.MEAN)
    assert f["bert.attention.causal"].contents() is False
    assert f["tokenizer.ggml.model"].contents() == "bert"
    assert f["tokenizer.ggml.token_type_count"].contents() == 2
    assert f["tokenizer.ggml.normalizer.lowercase"].contents() is True
    names = {t.name: t for t in reader.tensors}
    assert "cls.weight" not in names and not any(n.startswith("cls.output") for n in names)  # no pooler, no head
    assert names["token_types.weight"].tensor_type == GGMLQuantizationType.F32


def test_reranker_metadata_and_head(llama_src, tmp_path):
    folder = build_bert_fixture("rerank", llama_src)
    gguf = convert_checkpoint(folder, tmp_path / "rerank.q8_0.gguf", "q8_0", progress=False)
    reader = GGUFReader(gguf)
    f = reader.fields
    assert f["bert.pooling_type"].contents() == int(PoolingType.RANK)
    assert f["bert.classifier.output_labels"].contents() == ["LABEL_0"]
    names = {t.name: t for t in reader.tensors}
    # BertPooler's dense + tanh is llama.cpp's `cls`, the classifier its `cls.output`
    assert list(names["cls.weight"].shape) == [64, 64] and list(names["cls.output.weight"].shape) == [64, 1]
    assert names["token_types.weight"].tensor_type == GGMLQuantizationType.F32
    assert names["position_embd.weight"].tensor_type == GGMLQuantizationType.F32
    with pytest.raises(UnsupportedError, match="rank pooling"):
        convert_checkpoint(folder, tmp_path / "x.gguf", "f32", pooling="mean", progress=False)

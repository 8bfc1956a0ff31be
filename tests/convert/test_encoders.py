"""XLM-RoBERTa, NomicBERT and ModernBERT encoders: the Unigram vocabulary against llama.cpp's own GGUF and transformers, vectors
against sentence-transformers, the GGUF's metadata, and the settings llama.cpp's graphs cannot reproduce, refused.

The XLM-R fixtures (testkit/fixtures/bert.py) carry XLM-R's real vocabulary from llama.cpp's sdist
(models/ggml-vocab-nomic-bert-moe.gguf, as llama.cpp's converter wrote it), rebuilt into tokenizer.json by
transformers; our conversion of that tokenizer.json must tokenize as the source GGUF does in llama.cpp and as
transformers does. The reranker's scores are compared in tests/serve/test_rerank_families.py, through the server.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")
transformers = pytest.importorskip("transformers")
sentence_transformers = pytest.importorskip("sentence_transformers")

from gguf import GGMLQuantizationType, GGUFReader, PoolingType  # noqa: E402

from convert import convert_checkpoint  # noqa: E402
from convert.errors import UnsupportedError  # noqa: E402
from convert.vocab_kind import load_vocab  # noqa: E402
from testkit.fixtures.bert import XLMR_VOCAB, build_bert_fixture  # noqa: E402
from tests.convert.strings import strings  # noqa: E402

pytestmark = pytest.mark.slow

TEXTS = [
    "Hello world!", "The capital of France is Paris.", "Ünïcödé façade naïve résumé", "你好，世界！ 東京",
    "def f(x):\n    return x * 2", "don't stop believing", "a " * 40, "Привет, мир. Καλημέρα κόσμε.",
]  # fmt: skip
COSINE_MIN = 0.9999  # f32 GGUF
EMBEDDERS = ("xlmr-embed", "nomic-embed", "modernbert-embed")


@pytest.fixture(scope="module")
def ggufs(llama_src, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """kind -> (HF folder, f32 GGUF)."""
    root = tmp_path_factory.mktemp("encoders")
    out = {}
    for kind in (*EMBEDDERS, "xlmr-rerank"):
        folder = build_bert_fixture(kind, llama_src)
        out[kind] = (folder, convert_checkpoint(folder, root / f"{kind}.f32.gguf", "f32", progress=False))
    return out


@functools.cache
def readers(path: Path) -> GGUFReader:
    """A GGUF's reader, parsed once (an XLM-R vocabulary takes seconds)."""
    return GGUFReader(path)


def vocab_strings(src: Path) -> list[str]:
    """Every .inp test string llama.cpp ships, and tests/convert/strings.py's, with XLM-R's specials."""
    inp = [
        s for p in sorted((src / "models").glob("*.inp")) for s in p.read_text("utf-8").split("\n__ggml_vocab_test__\n")
    ]
    return sorted(set(inp + strings(["<s>", "</s>", "<mask>"])))


def test_xlmr_vocabulary_tokenizes_as_llama_cpp_and_transformers(llama_src, ggufs):
    """Our GGUF (from the rebuilt tokenizer.json) against llama.cpp's on its own XLM-R GGUF and transformers'
    XLMRobertaTokenizer, <s> ... </s> included, on 280+ strings: all three agree."""
    folder, gguf = ggufs["xlmr-embed"]
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    ours = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    source = llama_cpp.Llama(
        str(llama_src / "models" / f"ggml-vocab-{XLMR_VOCAB}.gguf"), vocab_only=True, verbose=False
    )
    cases = vocab_strings(llama_src)
    assert len(cases) >= 280
    got = {s: ours.tokenize(s.encode(), add_bos=True, special=True) for s in cases}
    vs_llama = [s for s in cases if got[s] != source.tokenize(s.encode(), add_bos=True, special=True)]
    vs_hf = [(s, got[s], hf(s).input_ids) for s in cases if got[s] != hf(s).input_ids]
    assert not vs_llama, f"{len(vs_llama)}/{len(cases)} differ from llama.cpp's own GGUF, first: {vs_llama[:2]}"
    assert not vs_hf, f"{len(vs_hf)}/{len(cases)} differ from transformers, first: {vs_hf[:2]}"


# tokenizer.json as transformers 4's XLMRobertaConverter wrote it, the shape of the released checkpoints' files
# (bge-m3, multilingual-e5): sentencepiece's whitespace handling as normalizer steps, Metaspace alone
RELEASE_NORMALIZERS = [
    {"type": "Strip", "strip_left": False, "strip_right": True},
    {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "\u2581"},
]
RELEASE_PRE = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}


def test_xlmr_release_tokenizer_json_tokenizes_as_transformers(llama_src, tmp_path):
    from tokenizers import Tokenizer

    src = build_bert_fixture("xlmr-embed", llama_src)
    folder = tmp_path / "release"
    folder.mkdir()
    for item in src.iterdir():
        if item.name != "tokenizer.json":
            (folder / item.name).symlink_to(item)
    tokenizer = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["normalizer"] = {"type": "Sequence", "normalizers": [tokenizer["normalizer"], *RELEASE_NORMALIZERS]}
    tokenizer["pre_tokenizer"] = RELEASE_PRE
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    gguf = convert_checkpoint(folder, tmp_path / "release.gguf", "f32", progress=False)
    hf = Tokenizer.from_file(str(folder / "tokenizer.json"))
    model = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    cases = vocab_strings(llama_src)
    wrong = [
        (s, g, w)
        for s in cases
        if (g := model.tokenize(s.encode(), add_bos=True, special=True)) != (w := hf.encode(s).ids)
    ]
    assert not wrong, f"{len(wrong)}/{len(cases)} differ from transformers, first: {wrong[:2]}"


def test_xlmr_vocabulary_metadata_matches_llama_cpp_converter(llama_src, ggufs):
    """Pieces, scores, types, charsmap and flags as llama.cpp's converter wrote them into its XLM-R GGUF."""
    ours = readers(ggufs["xlmr-embed"][1]).fields
    theirs = readers(llama_src / "models" / f"ggml-vocab-{XLMR_VOCAB}.gguf").fields
    n = len(ours["tokenizer.ggml.tokens"].data)
    for key in ("tokens", "scores", "token_type"):  # 250k items: compared as arrays, not Python lists
        mine, source = (f[f"tokenizer.ggml.{key}"] for f in (ours, theirs))
        assert all(
            np.array_equal(mine.parts[i], source.parts[j]) for i, j in zip(mine.data, source.data[:n], strict=True)
        ), key
    for key in ("model", "pre", "add_space_prefix", "remove_extra_whitespaces", "precompiled_charsmap",
                "bos_token_id", "eos_token_id", "unknown_token_id", "seperator_token_id", "padding_token_id",
                "mask_token_id", "add_bos_token", "add_eos_token"):  # fmt: skip
        assert ours[f"tokenizer.ggml.{key}"].contents() == theirs[f"tokenizer.ggml.{key}"].contents(), key
    assert ours["tokenizer.ggml.add_sep_token"].contents() is True  # <s> A </s></s> B </s>


@pytest.mark.parametrize("kind", EMBEDDERS)
def test_vectors_equal_sentence_transformers(ggufs, kind):
    folder, gguf = ggufs[kind]
    st = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    want = st.encode(TEXTS, convert_to_numpy=True)
    model = llama_cpp.Llama(str(gguf), embedding=True, n_ctx=128, n_batch=128, verbose=False)
    try:
        assert [model.tokenize(t.encode(), add_bos=True, special=True) for t in TEXTS] == [
            st.tokenizer(t).input_ids for t in TEXTS
        ]
        got = np.array([model.embed(t, normalize=True) for t in TEXTS])
    finally:
        model.close()
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= COSINE_MIN, cosine


def test_xlmr_metadata_positions_and_reranker_head(ggufs):
    embed, rerank = (readers(ggufs[k][1]) for k in ("xlmr-embed", "xlmr-rerank"))
    config = json.loads((ggufs["xlmr-embed"][0] / "config.json").read_text())
    f = embed.fields
    assert f["general.architecture"].contents() == "bert"
    assert f["bert.pooling_type"].contents() == int(PoolingType.CLS)  # from 1_Pooling/config.json
    assert f["tokenizer.ggml.token_type_count"].contents() == 1
    # positions from pad_token_id + 1: the first two rows dropped, the context two shorter
    ctx = config["max_position_embeddings"] - config["pad_token_id"] - 1
    assert f["bert.context_length"].contents() == ctx
    names = {t.name: t for t in embed.tensors}
    assert list(names["position_embd.weight"].shape) == [64, ctx]
    assert "cls.weight" not in names
    f = rerank.fields
    assert f["bert.pooling_type"].contents() == int(PoolingType.RANK)
    assert f["bert.classifier.output_labels"].contents() == ["LABEL_0"]
    names = {t.name: t for t in rerank.tensors}
    # RobertaClassificationHead: dense + tanh is llama.cpp's `cls`, out_proj its `cls.output`
    assert list(names["cls.weight"].shape) == [64, 64] and list(names["cls.output.weight"].shape) == [64, 1]
    assert names["position_embd.weight"].tensor_type == GGMLQuantizationType.F32


def test_nomic_metadata(ggufs):
    reader = GGUFReader(ggufs["nomic-embed"][1])
    f = reader.fields
    config = json.loads((ggufs["nomic-embed"][0] / "config.json").read_text())
    assert f["general.architecture"].contents() == "nomic-bert"
    assert f["nomic-bert.pooling_type"].contents() == int(PoolingType.MEAN)
    assert f["nomic-bert.rope.freq_base"].contents() == pytest.approx(config["rope_parameters"]["rope_theta"])
    assert f["tokenizer.ggml.model"].contents() == "bert"
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_qkv.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"} <= names
    assert not any(n.startswith("position_embd") for n in names)  # rotary: no position table


def test_modernbert_metadata_and_tokens(ggufs):
    """Which layers slide, the window and both thetas from config.json; [CLS] text [SEP] as transformers adds them
    on 200+ strings."""
    folder, gguf = ggufs["modernbert-embed"]
    config = json.loads((folder / "config.json").read_text())
    f = GGUFReader(gguf).fields
    assert f["general.architecture"].contents() == "modern-bert"
    assert f["modern-bert.attention.sliding_window_pattern"].contents() == [
        t == "sliding_attention" for t in config["layer_types"]
    ]
    assert f["modern-bert.attention.sliding_window"].contents() == config["local_attention"]
    rope = config["rope_parameters"]
    assert f["modern-bert.rope.freq_base"].contents() == rope["full_attention"]["rope_theta"]
    assert f["modern-bert.rope.freq_base_swa"].contents() == rope["sliding_attention"]["rope_theta"]
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    model = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    cases = strings(["[CLS]", "[SEP]", "[MASK]"])
    wrong = [
        (s, g, w)
        for s in cases
        if (g := model.tokenize(s.encode(), add_bos=True, special=True)) != (w := hf(s).input_ids)
    ]
    assert len(cases) >= 200 and not wrong, f"{len(wrong)}/{len(cases)} differ, first: {wrong[:2]}"


def test_nomic_remote_code_config_converts_the_same(llama_src, ggufs, tmp_path):
    """config.json in the released files' spelling (n_embd, n_layer, ..., activation_function "swiglu",
    rotary_emb_base, n_positions with max_trained_positions) gives the same GGUF metadata and tensors."""
    src, native = ggufs["nomic-embed"]
    c = json.loads((src / "config.json").read_text())
    release = {
        "n_embd": c["hidden_size"], "n_layer": c["num_hidden_layers"], "n_head": c["num_attention_heads"],
        "n_inner": c["intermediate_size"], "layer_norm_epsilon": c["layer_norm_eps"], "activation_function": "swiglu",
        "rotary_emb_base": c["rope_parameters"]["rope_theta"], "n_positions": 8192,
        "max_trained_positions": c["max_position_embeddings"], "rotary_emb_fraction": 1.0,
        "rotary_emb_interleaved": False, "rotary_emb_scale_base": None, "qkv_proj_bias": False, "mlp_fc1_bias": False,
        "mlp_fc2_bias": False, "prenorm": False, "causal": False,
    }  # fmt: skip
    folder = tmp_path / "release"
    folder.mkdir()
    for item in src.iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item)
    keep = ("architectures", "model_type", "vocab_size", "type_vocab_size", "pad_token_id")
    (folder / "config.json").write_text(json.dumps({k: c[k] for k in keep} | release))
    converted = convert_checkpoint(folder, tmp_path / "release.gguf", "f32", progress=False)
    a, b = readers(native), GGUFReader(converted)
    skip = ("general.name", "GGUF.kv_count")
    assert {k: f.contents() for k, f in a.fields.items() if k not in skip} == {
        k: f.contents() for k, f in b.fields.items() if k not in skip
    }
    assert [(t.name, list(t.shape)) for t in a.tensors] == [(t.name, list(t.shape)) for t in b.tensors]


def _edited(src: Path, tmp: Path, **changes: object) -> Path:
    """The fixture with config.json changed (its other files linked, not copied)."""
    out = tmp / src.name
    out.mkdir()
    for item in src.iterdir():
        if item.name != "config.json":
            (out / item.name).symlink_to(item)
    config = json.loads((src / "config.json").read_text()) | changes
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize(
    ("kind", "changes", "words"),
    [
        ("nomic-embed", {"mlp_fc1_bias": True}, "mlp_fc1_bias"),
        ("nomic-embed", {"rotary_emb_fraction": 0.5}, "rotary_emb_fraction"),
        ("nomic-embed", {"prenorm": True}, "prenorm"),
        ("nomic-embed", {"hidden_act": "gelu"}, "hidden_act"),
        ("nomic-embed", {"moe_every_n_layers": 2}, "moe_every_n_layers"),
        ("modernbert-embed", {"mlp_bias": True}, "mlp_bias"),
        ("modernbert-embed", {"hidden_activation": "silu"}, "hidden_activation"),
        ("xlmr-embed", {"lora_adaptations": ["retrieval.query"]}, "lora_adaptations"),
        ("xlmr-embed", {"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ],
)
def test_settings_llama_cpp_cannot_reproduce_are_refused(llama_src, tmp_path, kind, changes, words):
    folder = _edited(build_bert_fixture(kind, llama_src), tmp_path, **changes)
    with pytest.raises(UnsupportedError, match=words):
        convert_checkpoint(folder, tmp_path / "x.gguf", "f32", progress=False)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda t: t["model"].update(byte_fallback=True), "byte_fallback"),
        (lambda t: t.update(normalizer={"type": "NFKC"}), "NFKC"),
        (lambda t: t.update(pre_tokenizer={"type": "Metaspace", "prepend_scheme": "first"}), "prepend_scheme"),
        (lambda t: t.update(pre_tokenizer={"type": "ByteLevel"}), "ByteLevel"),
    ],
)
def test_unigram_tokenizers_llama_cpp_cannot_reproduce_are_refused(llama_src, tmp_path, edit, words):
    src = build_bert_fixture("xlmr-embed", llama_src)
    folder = tmp_path / "tok"
    folder.mkdir()
    tokenizer = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    edit(tokenizer)
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    shutil.copy(src / "tokenizer_config.json", folder)
    with pytest.raises(UnsupportedError, match=words):
        load_vocab(folder, 250002)

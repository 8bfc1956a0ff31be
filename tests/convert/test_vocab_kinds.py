"""Which tokenizer files become which llama.cpp vocabulary, and the ones refused with their reason.

A SentencePiece vocabulary shipped as tokenizer.json alone converts to llama.cpp's `llama` vocabulary that
tokenizes as the HF tokenizer does, and as the same vocabulary converted from its tokenizer.model; the Metaspace
spelling llama.cpp can reproduce converts too. A Unigram tokenizer without sentencepiece's charsmap (XLM-R's, which
converts, is tests/convert/test_encoders.py's), Metaspace with a conditional prefix, splitting on '▁',
odd normalizers and BPE without byte fallback are refused, each saying why.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp")
transformers = pytest.importorskip("transformers")

from gguf import GGUFReader, TokenType  # noqa: E402

from convert import convert_checkpoint  # noqa: E402
from convert.errors import UnsupportedError  # noqa: E402
from convert.vocab_kind import load_vocab  # noqa: E402
from testkit.fixtures.build import FAMILIES, build_fixture  # noqa: E402
from tests.convert.strings import strings  # noqa: E402

pytestmark = pytest.mark.slow


def copy_without_model(arch: str, tmp_path: Path, edit=None) -> Path:
    """The fixture's folder with tokenizer.model removed and tokenizer.json optionally edited."""
    out = Path(shutil.copytree(build_fixture(arch), tmp_path / arch))
    (out / "tokenizer.model").unlink(missing_ok=True)
    if edit is not None:
        data = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
        edit(data)
        (out / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    return out


def ids(gguf: Path, cases: list[str]) -> list[list[int]]:
    llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    try:
        return [llm.tokenize(c.encode(), add_bos=True, special=True) for c in cases]
    finally:
        llm.close()


def metaspace_never(data: dict) -> None:
    """gemma3's tokenizer.json (Replace, no prefix) spelled as a Metaspace pre-tokenizer that adds no prefix."""
    data["normalizer"] = None
    data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": False}


@pytest.mark.parametrize(("arch", "edit"), [("llama-spm", None), ("gemma3", None), ("gemma3", metaspace_never)])
def test_tokenizer_json_alone_tokenizes_like_hf_and_like_tokenizer_model(arch, edit, tmp_path, converted):
    src = copy_without_model(arch, tmp_path, edit)
    gguf = convert_checkpoint(src, tmp_path / "json.gguf", "f32", progress=False)
    assert GGUFReader(gguf).fields["tokenizer.ggml.model"].contents() == "llama"
    hf = transformers.AutoTokenizer.from_pretrained(src)
    cases = strings(list(FAMILIES[arch].specials))
    got = ids(gguf, cases)
    wrong = [(c, hf(c).input_ids, g) for c, g in zip(cases, got, strict=True) if hf(c).input_ids != g]
    assert not wrong, f"{len(wrong)}/{len(cases)} differ from HF, first: {wrong[:2]}"
    # the same ids as the conversion that reads tokenizer.model's own scores
    assert got == ids(converted(arch, "f32"), cases)


def test_tokenizer_json_token_types_and_scores(tmp_path):
    src = copy_without_model("llama-spm", tmp_path)
    data = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = load_vocab(src, len(data["model"]["vocab"]) + 8)
    kinds = dict(zip(vocab.tokens, vocab.types, strict=True))
    assert kinds["<0x0A>"] == TokenType.BYTE and kinds["<unk>"] == TokenType.UNKNOWN
    assert kinds["<s>"] == TokenType.CONTROL and kinds["[INST]"] in (TokenType.CONTROL, TokenType.USER_DEFINED)
    assert vocab.tokens[-1].startswith("[PAD") and vocab.types[-1] == TokenType.UNUSED
    assert vocab.add_space_prefix is True
    # the first merge's token scores highest among merged tokens, later merges lower
    merges = data["model"]["merges"]
    first, later = ("".join(m.split(" ")) if isinstance(m, str) else "".join(m) for m in (merges[0], merges[-1]))
    score = dict(zip(vocab.tokens, vocab.scores or [], strict=True))
    assert score[first] == 0.0 and score[later] < score[first]


def refusal(tmp_path: Path, edit, arch: str = "llama-spm") -> str:
    src = copy_without_model(arch, tmp_path, edit)
    with pytest.raises(UnsupportedError) as e:
        load_vocab(src, 10**5)
    assert "\n" not in str(e.value)
    return str(e.value)


def set_pre(pre: dict):
    def edit(data: dict) -> None:
        data["normalizer"] = None
        data["pre_tokenizer"] = pre

    return edit


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (
            set_pre({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}),
            "prepend_scheme='first'",
        ),
        (
            set_pre({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": False}),
            "prepend_scheme='always'",
        ),
        (
            set_pre({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": True}),
            "splits words",
        ),
        (
            lambda d: d.update(
                normalizer={"type": "Sequence", "normalizers": [{"type": "NFKC"}, *d["normalizer"]["normalizers"]]}
            ),
            "NFKC",
        ),
        (lambda d: d["model"].update(byte_fallback=False), "byte_fallback"),
    ],
)
def test_sentencepiece_style_llama_cpp_cannot_reproduce_is_refused(edit, fragment, tmp_path):
    assert fragment in refusal(tmp_path, edit)


def test_unigram_tokenizer_json_without_a_charsmap_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, normalizers

    src = Path(shutil.copytree(build_fixture("llama-spm"), tmp_path / "unigram"))
    (src / "tokenizer.model").unlink()
    tok = Tokenizer(
        models.Unigram([("<unk>", 0.0), ("\u2581a", -1.0), ("a", -2.0), ("b", -2.5)], unk_id=0, byte_fallback=False)
    )
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.save(str(src / "tokenizer.json"))
    with pytest.raises(UnsupportedError, match="Unigram"):
        load_vocab(src, 10**4)


def test_byte_level_normalizer_llama_cpp_lacks_is_refused(tmp_path):
    src = Path(shutil.copytree(build_fixture("qwen2"), tmp_path / "q"))
    data = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    data["normalizer"] = {"type": "Lowercase"}
    (src / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UnsupportedError, match="Lowercase"):
        load_vocab(src, 10**4)

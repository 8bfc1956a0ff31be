"""Every real vocabulary llama.cpp ships (its sdist's models/ggml-vocab-*.gguf) converts so llama.cpp tokenizes right.

For each vocabulary transformers can rebuild into a tokenizer.json (testkit/fixtures/vocabs.py), a tiny checkpoint
carrying it is converted, and:
  - llama.cpp's tokens for the vocabulary's .inp strings equal the .out ids (llama.cpp's own expected ids, made
    by the real HF tokenizer; tokenized as llama.cpp's test-tokenizer-0 does: no BOS, specials as text);
  - llama.cpp's tokens equal the rebuilt HF tokenizer's on 200+ strings (BOS/EOS as each adds them, specials);
  - the pre-tokenizer written behaves as the one in llama.cpp's own file (same regexes and flags);
  - the rebuilt HF tokenizer itself gives the .out ids (so the fixture is the real tokenizer).
SentencePiece vocabularies (llama-spm, phi-3, gemma-4) have a tokenizer.json and no tokenizer.model.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

llama_cpp = pytest.importorskip("llama_cpp")
transformers = pytest.importorskip("transformers")

from convert import convert_checkpoint  # noqa: E402
from convert.pretok import load_known  # noqa: E402
from testkit.fixtures.vocabs import RELEASES, build_vocab_fixture, vocab_cases  # noqa: E402
from tests.convert.strings import strings  # noqa: E402

pytestmark = pytest.mark.slow

SPM = ("llama-spm", "phi-3", "gemma-4")


@dataclass
class Converted:
    name: str
    folder: Path
    gguf: Path
    hf: Any  # the rebuilt HF tokenizer
    llm: Any  # llama_cpp.Llama, vocab only
    cases: list[tuple[str, list[int]]]


@pytest.fixture(scope="module", params=list(RELEASES))
def vocab(request, llama_src, tmp_path_factory) -> Iterator[Converted]:
    """One vocabulary, built, converted and loaded on both sides once for all its tests."""
    name = request.param
    folder = build_vocab_fixture(name, llama_src)
    gguf = convert_checkpoint(folder, tmp_path_factory.mktemp("vocab") / f"{name}.gguf", progress=False)
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    try:
        yield Converted(name, folder, gguf, hf, llm, vocab_cases(llama_src, name))
    finally:
        llm.close()


def test_rebuilt_hf_tokenizer_gives_llama_cpp_expected_ids(vocab):
    wrong = [(s, want) for s, want in vocab.cases if vocab.hf(s, add_special_tokens=False).input_ids != want]
    assert not wrong, f"{vocab.name}: the fixture's tokenizer differs on {len(wrong)}/{len(vocab.cases)}: {wrong[:2]}"


def test_llama_cpp_gives_its_expected_ids(vocab):
    wrong = []
    for text, want in vocab.cases:
        got = vocab.llm.tokenize(text.encode(), add_bos=False, special=False)
        if got != want:
            wrong.append((text, want, got))
    assert len(vocab.cases) >= 46
    assert not wrong, f"{vocab.name}: {len(wrong)}/{len(vocab.cases)} differ from .out, first: {wrong[:2]}"


def test_pre_tokenizer_behaves_as_llama_cpp_own_file(vocab, llama_src):
    from transformers.integrations.gguf.reader import read_gguf_metadata

    own, _ = read_gguf_metadata(str(llama_src / "models" / f"ggml-vocab-{vocab.name}.gguf"), ())
    meta = vocab.llm.metadata
    if vocab.name in SPM:
        assert not (vocab.folder / "tokenizer.model").exists()
        assert meta["tokenizer.ggml.model"] == "llama"
        return
    assert meta["tokenizer.ggml.model"] == "gpt2"
    known = load_known()
    assert behaviour(known, meta["tokenizer.ggml.pre"]) == behaviour(known, own["tokenizer.ggml.pre"])


def behaviour(known, name: str) -> tuple:
    """What a pre-tokenizer name makes llama.cpp do: its type's regexes and every flag but add_bos (written apart)."""
    kind = next(t for t in known.types if t.type == known.name_type[name])
    flags = {k: v for k, v in known.flags[name].items() if k != "add_bos"}
    return kind.regexes, kind.byte_encode, sorted(flags.items(), key=str)


def test_llama_cpp_tokenizes_like_hf(vocab):
    specials = [t for t in vocab.hf.all_special_tokens if t][:3]
    cases = strings(specials)
    assert len(cases) >= 200
    # llama.cpp never normalizes; with an NFC normalizer in tokenizer.json its caller NFC-normalizes the text
    nfc = "NFC" in repr(vocab.hf.backend_tokenizer.normalizer)
    wrong = []
    for text in cases:
        want = vocab.hf(text).input_ids
        fed = unicodedata.normalize("NFC", text) if nfc else text
        got = vocab.llm.tokenize(fed.encode(), add_bos=True, special=True)
        if got != want:
            wrong.append((text, want, got))
    assert not wrong, f"{vocab.name}: {len(wrong)}/{len(cases)} differ, first: {wrong[:3]}"

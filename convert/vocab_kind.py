"""Which kind of tokenizer a folder holds, decided from its files (not from the model family), and its `Vocab`.

- byte-level BPE tokenizer.json                      -> llama.cpp `gpt2` vocab (convert.vocab_bpe)
- tokenizer.model (a sentencepiece BPE model)        -> llama.cpp `llama` vocab (convert.vocab_spm)
- SentencePiece-style BPE tokenizer.json, no .model  -> llama.cpp `llama` vocab (convert.vocab_spm)
- WordPiece tokenizer.json (BERT)                    -> llama.cpp `bert` vocab (convert.vocab_wpm)
- Unigram tokenizer.json (XLM-RoBERTa)               -> llama.cpp `t5` (UGM) vocab (convert.vocab_ugm)
- anything else                                      -> refused with the reason
"""

from __future__ import annotations

from pathlib import Path

from convert import vocab_bpe, vocab_spm, vocab_ugm, vocab_wpm
from convert.errors import SourceError, UnsupportedError
from convert.vocab import Vocab, read_json


def load_vocab(folder: Path, n_vocab: int) -> Vocab:
    tokenizer = read_json(folder / "tokenizer.json") or None
    if tokenizer is not None and vocab_bpe.is_byte_level(tokenizer):
        return vocab_bpe.bpe_vocab(folder, tokenizer, n_vocab)
    if (folder / "tokenizer.model").is_file():
        return vocab_spm.spm_vocab(folder, tokenizer, n_vocab)
    if tokenizer is not None:
        kind = (tokenizer.get("model") or {}).get("type")
        if vocab_wpm.is_wordpiece(tokenizer):
            return vocab_wpm.wpm_vocab(folder, tokenizer, n_vocab)
        if kind == "BPE" and vocab_spm.is_spm_style(tokenizer):
            return vocab_spm.spm_vocab_from_json(folder, tokenizer, n_vocab)
        if vocab_ugm.is_unigram(tokenizer):
            return vocab_ugm.ugm_vocab(folder, tokenizer, n_vocab)
        raise UnsupportedError(
            f"tokenizer.json holds a {kind} tokenizer that is neither byte-level BPE nor SentencePiece-style BPE "
            "(byte fallback, '▁' for spaces), and there is no tokenizer.model beside it"
        )
    raise SourceError(f"{folder}: missing tokenizer (tokenizer.json or tokenizer.model)")

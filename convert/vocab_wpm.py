"""WordPiece (BERT's tokenizer.json) -> llama.cpp's `bert` vocabulary.

llama.cpp's WPM tokenizer (src/llama-vocab.cpp, llm_tokenizer_wpm_session) splits text as BertPreTokenizer does
(whitespace, then every punctuation mark, ASCII symbol and CJK character alone), lowercases and strips accents
as the `tokenizer.ggml.normalizer.*` keys say, and matches the longest piece of each word with a "phantom
space": a word-initial piece is stored as `▁piece`, a continuation (`##piece` in vocab.txt) as plain `piece`.
It puts the BOS id in front and the SEP id at the end of an input (`add_special`), so BERT's [CLS] is written
as BOS. Control tokens ([PAD], [UNK], [CLS], [SEP], [MASK]) keep their text, as llama.cpp's own converter
writes them. A normalizer other than BertNormalizer, or a continuation prefix other than `##`, is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gguf import GGUFValueType, Keys, TokenType

from convert.errors import SourceError, UnsupportedError
from convert.vocab import Vocab, added_tokens, padded, read_json

PHANTOM = "\u2581"
# tokenizer_config.json's name of a special token -> the GGUF key of its id ([CLS] is llama.cpp's BOS)
SPECIAL_KEYS = {
    "cls_token": Keys.Tokenizer.BOS_ID,
    "sep_token": Keys.Tokenizer.SEP_ID,
    "unk_token": Keys.Tokenizer.UNK_ID,
    "pad_token": Keys.Tokenizer.PAD_ID,
    "mask_token": Keys.Tokenizer.MASK_ID,
}
DEFAULT_SPECIALS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]", "pad_token": "[PAD]",
                    "mask_token": "[MASK]"}  # fmt: skip
LOWERCASE_KEY = "tokenizer.ggml.normalizer.lowercase"
STRIP_ACCENTS_KEY = "tokenizer.ggml.normalizer.strip_accents"


def is_wordpiece(tokenizer: dict[str, Any]) -> bool:
    return (tokenizer.get("model") or {}).get("type") == "WordPiece"


def normalizer_flags(tokenizer: dict[str, Any]) -> tuple[bool, bool]:
    """(lowercase, strip_accents) from tokenizer.json's BertNormalizer; anything else is refused."""
    norm = tokenizer.get("normalizer") or {}
    if norm.get("type") != "BertNormalizer":
        raise UnsupportedError(
            f"WordPiece tokenizer with normalizer {norm.get('type')}: llama.cpp's WordPiece tokenizer normalizes as "
            "BertNormalizer does, nothing else"
        )
    lowercase = bool(norm.get("lowercase", True))
    strip = norm.get("strip_accents")
    return lowercase, lowercase if strip is None else bool(strip)


def wpm_vocab(folder: Path, tokenizer: dict[str, Any], n_vocab: int) -> Vocab:
    model = tokenizer["model"]
    prefix = model.get("continuing_subword_prefix", "##")
    if prefix != "##":
        raise UnsupportedError(f"WordPiece continuation prefix {prefix!r}: llama.cpp's reads only '##'")
    pre = (tokenizer.get("pre_tokenizer") or {}).get("type")
    if pre not in (None, "BertPreTokenizer"):
        raise UnsupportedError(f"WordPiece tokenizer with pre-tokenizer {pre}: llama.cpp splits as BertPreTokenizer")
    lowercase, strip_accents = normalizer_flags(tokenizer)
    vocab: dict[str, int] = model["vocab"]
    added = {int(a["id"]): a for a in added_tokens(folder, tokenizer)}
    size = max([n_vocab, *(i + 1 for i in vocab.values()), *(i + 1 for i in added)])
    if size > n_vocab:
        raise SourceError(f"the tokenizer has ids up to {size - 1}, beyond config.json's vocab_size {n_vocab}")
    tokens: list[str | None] = [None] * n_vocab
    types = [int(TokenType.NORMAL)] * n_vocab
    for text, i in vocab.items():
        tokens[i] = text[2:] if text.startswith("##") else PHANTOM + text
    for i, a in added.items():
        tokens[i] = a["content"]
        types[i] = int(TokenType.CONTROL if a.get("special") else TokenType.USER_DEFINED)

    cfg = read_json(folder / "tokenizer_config.json")
    ids = dict(vocab) | {a["content"]: i for i, a in added.items()}
    extra: list[tuple[str, Any, GGUFValueType]] = []
    found: dict[str, int] = {}
    for name, key in SPECIAL_KEYS.items():
        text = _token_text(cfg.get(name)) or DEFAULT_SPECIALS[name]
        if text in ids:
            found[name] = ids[text]
            extra.append((key, ids[text], GGUFValueType.UINT32))
    if "cls_token" not in found or "sep_token" not in found:
        raise SourceError(f"{folder}: the WordPiece vocabulary has no [CLS] / [SEP] token (llama.cpp needs both)")
    add_bos, add_sep = _adds(tokenizer, found)
    extra += [
        (Keys.Tokenizer.ADD_BOS, add_bos, GGUFValueType.BOOL),
        (Keys.Tokenizer.ADD_EOS, False, GGUFValueType.BOOL),
        (Keys.Tokenizer.ADD_SEP, add_sep, GGUFValueType.BOOL),
        (LOWERCASE_KEY, lowercase, GGUFValueType.BOOL),
        (STRIP_ACCENTS_KEY, strip_accents, GGUFValueType.BOOL),
    ]
    return Vocab(model="bert", tokens=padded(tokens, types, n_vocab), types=types, pre="default", extra=extra)


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # an AddedToken written out: {"content": "[CLS]", ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


def _adds(tokenizer: dict[str, Any], found: dict[str, int]) -> tuple[bool, bool]:
    """Whether the post-processor puts [CLS] first / [SEP] last in a single input (BERT's own: both)."""
    post = tokenizer.get("post_processor") or {}
    if post.get("type") == "BertProcessing":
        return True, True
    if post.get("type") != "TemplateProcessing":
        return False, False
    single = post.get("single") or []
    specials = post.get("special_tokens") or {}

    def special_id(item: dict[str, Any]) -> int | None:
        name = item.get("SpecialToken", {}).get("id")
        return (specials.get(name, {}).get("ids") or [None])[0] if name else None

    first = special_id(single[0]) if single else None
    last = special_id(single[-1]) if len(single) > 1 else None
    return first == found["cls_token"], last == found["sep_token"]

"""SentencePiece Unigram (XLM-RoBERTa's tokenizer.json) -> llama.cpp's `t5` (UGM) vocabulary.

llama.cpp's UGM tokenizer (src/llama-vocab.cpp, llm_tokenizer_ugm) is sentencepiece's Unigram: it normalizes with
the model's precompiled character map, collapses runs of spaces (`remove_extra_whitespaces`), puts '▁' for every
space and one in front (`add_space_prefix`), then takes the segmentation whose pieces' scores sum highest. So what
it needs is the pieces with their scores and the normalizer's three settings, all of which tokenizer.json holds:

  - normalizer: `Precompiled` (the charsmap, base64), alone or followed by Strip(right) and Replace(" {2,}" ->
    "▁" or " "), which is sentencepiece's own whitespace collapsing as transformers 4's converter wrote it out
    (the tokenizer.json of the released XLM-R checkpoints);
  - pre-tokenizer: `Metaspace` ('▁', prepended), alone or after `WhitespaceSplit` (transformers 5 writes that
    pair: splitting at whitespace drops runs of it, as remove_extra_whitespaces does);
  - model: `Unigram` without byte fallback, `[piece, score]` in id order.

Token types and special ids are llama.cpp's converter's: the unk piece UNKNOWN, special added tokens CONTROL,
other added tokens USER_DEFINED, rows beyond the tokenizer `[PADn]` UNUSED. add_bos/add_eos/add_sep come from the
post-processor (`<s> A </s>`, and `</s></s>` between a pair's parts as add_sep: the rerank server joins a pair
that way). Anything else is refused with the setting named.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from gguf import GGUFValueType, Keys, TokenType

from convert.errors import SourceError, UnsupportedError
from convert.vocab import Vocab, added_tokens, padded, rstrip_ids, special_vocab
from convert.vocab_spm import steps

SPACE = "\u2581"
UNUSED_SCORE = -10000.0  # llama.cpp's converter's score for padding rows
COLLAPSE_SPACES = " {2,}"


def is_unigram(tokenizer: dict[str, Any]) -> bool:
    return (tokenizer.get("model") or {}).get("type") == "Unigram"


def _collapses(n: dict[str, Any]) -> bool:
    """A normalizer step of sentencepiece's remove_extra_whitespaces: runs of spaces to one, trailing ones dropped."""
    if n.get("type") == "Replace":
        return (n.get("pattern") or {}).get("Regex") == COLLAPSE_SPACES and n.get("content") in (" ", SPACE)
    return n.get("type") == "Strip" and not n.get("strip_left") and bool(n.get("strip_right"))


def normalizer_settings(tokenizer: dict[str, Any]) -> tuple[bytes, bool, bool]:
    """(precompiled charsmap, add_space_prefix, remove_extra_whitespaces), or UnsupportedError naming the step."""
    charsmap: bytes | None = None
    collapse = False
    for n in steps(tokenizer.get("normalizer"), "normalizers"):
        kind = n.get("type")
        if kind == "Precompiled" and charsmap is None:
            try:
                charsmap = base64.b64decode(n.get("precompiled_charsmap") or "")
            except (binascii.Error, TypeError) as e:
                raise SourceError(f"tokenizer.json: the Precompiled normalizer's charsmap is not base64 ({e})") from e
        elif _collapses(n):
            collapse = True
        else:
            raise UnsupportedError(
                f"Unigram tokenizer with normalizer {kind}: llama.cpp's UGM tokenizer normalizes with sentencepiece's "
                "precompiled charsmap and whitespace collapsing only"
            )
    if not charsmap:
        raise UnsupportedError(
            "Unigram tokenizer without a Precompiled normalizer: llama.cpp's UGM tokenizer needs sentencepiece's "
            "precompiled charsmap"
        )
    prefix = None
    for p in steps(tokenizer.get("pre_tokenizer"), "pretokenizers"):
        kind = p.get("type")
        if kind == "WhitespaceSplit" and prefix is None:
            collapse = True
        elif kind == "Metaspace" and prefix is None:
            if p.get("replacement", SPACE) != SPACE:
                raise UnsupportedError(f"Unigram tokenizer with Metaspace replacement {p.get('replacement')!r}")
            scheme = p.get("prepend_scheme", "always" if p.get("add_prefix_space", True) else "never")
            if scheme not in ("always", "never"):
                raise UnsupportedError(
                    f"Unigram tokenizer with Metaspace prepend_scheme={scheme!r}: llama.cpp's space prefix is "
                    "unconditional (always) or off (never)"
                )
            prefix = scheme == "always"
        else:
            raise UnsupportedError(
                f"Unigram tokenizer with pre-tokenizer {kind}: llama.cpp's UGM tokenizer has no counterpart"
            )
    if prefix is None:
        raise UnsupportedError("Unigram tokenizer without a Metaspace pre-tokenizer: llama.cpp's UGM spells spaces '▁'")
    return charsmap, prefix, collapse


def ugm_vocab(folder: Path, tokenizer: dict[str, Any], n_vocab: int) -> Vocab:
    model = tokenizer["model"]
    if model.get("byte_fallback"):
        raise UnsupportedError("Unigram tokenizer with byte_fallback: llama.cpp's UGM tokenizer has no byte pieces")
    charsmap, prefix, collapse = normalizer_settings(tokenizer)
    pieces: list[list[Any]] = model.get("vocab") or []
    added = added_tokens(folder, tokenizer)
    size = max([len(pieces), *(int(a["id"]) + 1 for a in added)])
    if size > n_vocab:
        raise SourceError(f"the tokenizer has {size} tokens but config.json's vocab_size is {n_vocab}")
    tokens: list[str | None] = [None] * n_vocab
    types = [int(TokenType.NORMAL)] * n_vocab
    scores = [UNUSED_SCORE] * n_vocab
    for i, (piece, score) in enumerate(pieces):
        tokens[i], scores[i] = str(piece), float(score)
    unk = model.get("unk_id")
    for a in added:
        i = int(a["id"])
        tokens[i] = a["content"]
        types[i] = int(TokenType.CONTROL if a.get("special") else TokenType.USER_DEFINED)
        scores[i] = 0.0 if i >= len(pieces) else scores[i]
    if unk is not None:
        types[int(unk)] = int(TokenType.UNKNOWN)
    final = padded(tokens, types, n_vocab)
    special = special_vocab(folder, tokenizer, n_vocab, merges=False)
    return Vocab(
        model="t5",
        tokens=final,
        types=types,
        scores=scores,
        pre="default",
        add_space_prefix=prefix,
        special=special,
        rstrip=rstrip_ids(added),
        extra=[
            (Keys.Tokenizer.REMOVE_EXTRA_WS, collapse, GGUFValueType.BOOL),
            (Keys.Tokenizer.PRECOMPILED_CHARSMAP, charsmap, GGUFValueType.ARRAY),  # bytes: uint8
        ],
    )

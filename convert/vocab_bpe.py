"""Byte-level BPE (tokenizer.json) -> llama.cpp's `gpt2` vocabulary: tokens, types, merges, pre-tokenizer name.

The pre-tokenizer name comes from convert.pretok (what tokenizer.json's pre-tokenizer says, checked against the
pinned llama.cpp's table). llama.cpp applies no normalizer to BPE text: a tokenizer.json normalizer other than
NFC is refused (NFC text, the common case, tokenizes the same; callers of llama.cpp normalize it themselves).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gguf import TokenType

from convert.errors import SourceError, UnsupportedError
from convert.pretok import Identified, identify, load_known
from convert.vocab import Vocab, padded, read_json, rstrip_ids, special_vocab, token_type

log = logging.getLogger(__name__)

# Normalizers llama.cpp's BPE tokenizer can stand for: none at all, or NFC (which llama.cpp leaves to the caller).
ACCEPTED_NORMALIZERS = (None, "NFC")


def _uses_byte_level(part: dict[str, Any] | None) -> bool:
    if not part:
        return False
    if part.get("type") == "ByteLevel":
        return True
    children = part.get("pretokenizers") or part.get("decoders") or []
    return any(_uses_byte_level(c) for c in children)


def is_byte_level(tokenizer: dict[str, Any]) -> bool:
    model = tokenizer.get("model") or {}
    return (
        model.get("type") == "BPE"
        and not model.get("byte_fallback", False)
        and (_uses_byte_level(tokenizer.get("decoder")) or _uses_byte_level(tokenizer.get("pre_tokenizer")))
    )


def _normalizer_kinds(norm: dict[str, Any] | None) -> list[str | None]:
    if not norm:
        return []
    if norm.get("type") == "Sequence":
        return [k for n in norm.get("normalizers") or [] for k in _normalizer_kinds(n)]
    return [norm.get("type")]


def check_normalizer(tokenizer: dict[str, Any]) -> None:
    kinds = _normalizer_kinds(tokenizer.get("normalizer"))
    if odd := [k for k in kinds if k not in ACCEPTED_NORMALIZERS]:
        raise UnsupportedError(
            f"tokenizer.json normalizer {', '.join(map(str, odd))}: llama.cpp's BPE tokenizer does not normalize text"
        )


def _check_text_ids(folder: Path, text: str) -> list[int] | None:
    """The token ids HF gives llama.cpp's check text (its converter's fingerprint); None without `tokenizers`."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    try:
        return list(Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text).ids)
    except Exception:  # noqa: BLE001 - a file `tokenizers` cannot load: the structural decision stands on its own
        return None


def pre_tokenizer(folder: Path, tokenizer: dict[str, Any]) -> Identified:
    known = load_known()
    cfg = read_json(folder / "tokenizer_config.json")
    clean = cfg.get("clean_up_tokenization_spaces")
    found = identify(
        tokenizer,
        clean_spaces=clean if isinstance(clean, bool) else None,
        hash_ids=_check_text_ids(folder, known.check_text),
        known=known,
    )
    if found.note:
        log.warning("%s", found.note)
    return found


def bpe_vocab(folder: Path, tokenizer: dict[str, Any], n_vocab: int) -> Vocab:
    check_normalizer(tokenizer)
    pre = pre_tokenizer(folder, tokenizer)
    base: dict[str, int] = tokenizer["model"]["vocab"]
    added = tokenizer.get("added_tokens") or []
    size = max([n_vocab, *(i + 1 for i in base.values()), *(a["id"] + 1 for a in added)])
    if size > n_vocab:
        raise SourceError(f"tokenizer has {size} tokens but config.json vocab_size is {n_vocab}")
    tokens: list[str | None] = [None] * n_vocab
    types = [int(TokenType.NORMAL)] * n_vocab
    for text, i in base.items():
        tokens[i] = text
    for a in added:
        tokens[a["id"]], types[a["id"]] = a["content"], token_type(a["content"], bool(a.get("special")))
    return Vocab(
        model="gpt2",
        tokens=padded(tokens, types, n_vocab),
        types=types,
        pre=pre.name,
        special=special_vocab(folder, tokenizer, n_vocab, merges=True),
        rstrip=rstrip_ids(added),
    )

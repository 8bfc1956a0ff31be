"""SentencePiece BPE -> llama.cpp's `llama` vocabulary, from tokenizer.model or from a tokenizer.json alone.

llama.cpp's SentencePiece tokenizer starts from characters and repeatedly merges the adjacent pair whose joined
text is the vocabulary token with the highest score; characters no token covers become byte tokens (<0x..>).

From tokenizer.model: sentencepiece's own pieces, scores and types (read without the sentencepiece package).

From tokenizer.json (a BPE model in SentencePiece style: byte fallback, '▁' for spaces, no byte-level step):
  - scores from merge ranks: a token made by the merge of rank r scores -r, so "highest score first" is
    "lowest rank first", the order HF's BPE applies merges in; tokens no merge makes score far below any;
  - token types: control for special added tokens, user-defined for the other added tokens, byte for
    <0x..>, unknown for the model's unk token, normal otherwise;
  - add_space_prefix from the normalizer: Prepend('▁') then Replace(' ', '▁') is exactly llama.cpp's
    space prefix (at the start and after every special token). Metaspace prepends only when the text does not
    already start with a space, which llama.cpp cannot do, so only Metaspace without a prefix is taken;
  - add_bos/add_eos as the HF tokenizer applies them (post-processor, tokenizer_config.json).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import TokenType

from convert.errors import SourceError, UnsupportedError
from convert.vocab import Vocab, added_tokens, padded, read_json, rstrip_ids, special_vocab, token_type

SPACE = "\u2581"  # '▁', sentencepiece's visible space
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
# A token no merge produces (in SentencePiece style only single characters and specials should be such).
UNMERGED_SCORE = -1e9


# --- tokenizer.model ---------------------------------------------------------------------------------------


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """Decode one protobuf message into (field number, wire type, value); enough for sentencepiece's model."""
    out: list[tuple[int, int, Any]] = []
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while pos < len(buf):
        key = varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            out.append((num, wire, varint()))
        elif wire == 1:
            out.append((num, wire, buf[pos : pos + 8]))
            pos += 8
        elif wire == 2:
            n = varint()
            out.append((num, wire, buf[pos : pos + n]))
            pos += n
        elif wire == 5:
            out.append((num, wire, buf[pos : pos + 4]))
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    if pos != len(buf):
        raise ValueError("protobuf message overruns its buffer")
    return out


@dataclass(frozen=True)
class SpmModel:
    pieces: list[tuple[str, float, int]]  # (piece, score, sentencepiece type == GGUF TokenType)
    add_dummy_prefix: bool
    model_type: int  # 1 unigram, 2 bpe, ...


def read_spm(path: Path) -> SpmModel:
    """tokenizer.model (a sentencepiece ModelProto) without the sentencepiece package."""
    try:
        top = _fields(path.read_bytes())
        pieces: list[tuple[str, float, int]] = []
        add_dummy_prefix, model_type = True, 1
        for num, _, value in top:
            if num == 1:  # SentencePiece
                piece, score, kind = "", 0.0, 1
                for n, _, v in _fields(value):
                    if n == 1:
                        piece = v.decode("utf-8")
                    elif n == 2:
                        score = struct.unpack("<f", v)[0]
                    elif n == 3:
                        kind = v
                pieces.append((piece, score, kind))
            elif num == 2:  # TrainerSpec
                model_type = next((v for n, w, v in _fields(value) if n == 3 and w == 0), 1)
            elif num == 3:  # NormalizerSpec
                add_dummy_prefix = bool(next((v for n, w, v in _fields(value) if n == 3 and w == 0), 1))
    except (OSError, ValueError, IndexError, UnicodeDecodeError, struct.error) as e:
        raise SourceError(f"{path}: not a readable sentencepiece model ({e})") from e
    if not pieces:
        raise SourceError(f"{path}: sentencepiece model has no pieces")
    return SpmModel(pieces, add_dummy_prefix, model_type)


def spm_vocab(folder: Path, tokenizer: dict[str, Any] | None, n_vocab: int) -> Vocab:
    spm = read_spm(folder / "tokenizer.model")
    if spm.model_type != 2:
        raise UnsupportedError("tokenizer.model is not a BPE sentencepiece model; llama.cpp's 'llama' vocab needs BPE")
    tokens = [p for p, _, _ in spm.pieces]
    scores = [s for _, s, _ in spm.pieces]
    types = [t for _, _, t in spm.pieces]
    for a in added_tokens(folder, tokenizer):
        i, content = a["id"], a["content"]
        if i >= len(tokens):
            if i != len(tokens):
                raise SourceError(f"added token {content!r} has id {i}, leaving a gap after {len(tokens)} tokens")
            tokens.append(content)
            scores.append(-1000.0)
            types.append(token_type(content, bool(a.get("special"))))
        elif tokens[i] == content and types[i] in (TokenType.NORMAL, TokenType.USER_DEFINED, TokenType.CONTROL):
            types[i] = token_type(content, bool(a.get("special")) or types[i] == TokenType.CONTROL)
    if len(tokens) > n_vocab:
        raise SourceError(f"tokenizer has {len(tokens)} tokens but config.json vocab_size is {n_vocab}")
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]")
        scores.append(-1000.0)
        types.append(int(TokenType.UNUSED))
    return Vocab(
        model="llama",
        tokens=tokens,
        types=types,
        scores=scores,
        add_space_prefix=spm.add_dummy_prefix,
        special=special_vocab(folder, tokenizer, n_vocab, merges=False),
        rstrip=rstrip_ids(added_tokens(folder, tokenizer)),
    )


# --- SentencePiece-style tokenizer.json ----------------------------------------------------------------------


def steps(part: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """A tokenizer.json normalizer or pre-tokenizer as its list of steps, Sequences (under `key`) flattened."""
    if not part:
        return []
    if part.get("type") == "Sequence":
        return [p for child in part.get(key) or [] for p in steps(child, key)]
    return [part]


def _is_space_replace(n: dict[str, Any]) -> bool:
    return n.get("type") == "Replace" and (n.get("pattern") or {}).get("String") == " " and n.get("content") == SPACE


def is_spm_style(tokenizer: dict[str, Any]) -> bool:
    """A BPE tokenizer.json that spells spaces as '▁' (normalizer or Metaspace) and has no byte-level step."""
    norms = steps(tokenizer.get("normalizer"), "normalizers")
    pres = steps(tokenizer.get("pre_tokenizer"), "pretokenizers")
    return any(_is_space_replace(n) for n in norms) or any(p.get("type") == "Metaspace" for p in pres)


def space_prefix(tokenizer: dict[str, Any]) -> bool:
    """Whether llama.cpp must add a space prefix; UnsupportedError where llama.cpp cannot do what the file says."""
    norms = steps(tokenizer.get("normalizer"), "normalizers")
    pres = steps(tokenizer.get("pre_tokenizer"), "pretokenizers")
    replaced = any(_is_space_replace(n) for n in norms)
    prefix = False
    for n in norms:
        if n.get("type") == "Prepend" and n.get("prepend") == SPACE:
            prefix = True
        elif not _is_space_replace(n):
            raise UnsupportedError(
                f"tokenizer.json normalizer {n.get('type')}: llama.cpp's SentencePiece tokenizer only prepends and "
                "replaces spaces with '▁'"
            )
    for p in pres:
        kind = p.get("type")
        if kind == "Metaspace":
            if p.get("split", True):
                raise UnsupportedError(
                    "tokenizer.json Metaspace splits words at '▁'; llama.cpp's SentencePiece tokenizer merges across them"
                )
            if p.get("replacement") != SPACE:
                raise UnsupportedError(f"tokenizer.json Metaspace replacement {p.get('replacement')!r} is not '▁'")
            scheme = p.get("prepend_scheme", "always")
            if scheme != "never":
                raise UnsupportedError(
                    f"tokenizer.json Metaspace prepend_scheme={scheme!r} adds '▁' only where the text does not already "
                    "start with one; llama.cpp's space prefix is unconditional (Prepend + Replace normalizers would be exact)"
                )
            replaced = True
        elif kind == "Split" and replaced and (p.get("pattern") or {}).get("String") == " ":
            continue  # splitting on spaces after they became '▁': nothing left to split
        else:
            raise UnsupportedError(
                f"tokenizer.json pre-tokenizer {kind} has no counterpart in llama.cpp's SentencePiece tokenizer"
            )
    return prefix


def _merge_parts(m: str | list[str]) -> tuple[str, str]:
    if isinstance(m, str):
        a, _, b = m.partition(" ")
        return a, b
    return m[0], m[1]


def spm_vocab_from_json(folder: Path, tokenizer: dict[str, Any], n_vocab: int) -> Vocab:
    model = tokenizer["model"]
    if not model.get("byte_fallback"):
        raise UnsupportedError(
            "tokenizer.json BPE without byte_fallback: llama.cpp's SentencePiece tokenizer falls back to byte tokens"
        )
    for opt in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(opt):
            raise UnsupportedError(f"tokenizer.json BPE with {opt}={model[opt]!r} has no counterpart in llama.cpp")
    if model.get("ignore_merges"):
        raise UnsupportedError(
            "tokenizer.json BPE with ignore_merges has no counterpart in llama.cpp's SentencePiece tokenizer"
        )
    prefix = space_prefix(tokenizer)
    base: dict[str, int] = model["vocab"]
    added = added_tokens(folder, tokenizer)
    size = max([n_vocab, *(i + 1 for i in base.values()), *(a["id"] + 1 for a in added)])
    if size > n_vocab:
        raise SourceError(f"tokenizer has {size} tokens but config.json vocab_size is {n_vocab}")

    rank: dict[str, int] = {}
    for r, m in enumerate(model.get("merges") or []):
        left, right = _merge_parts(m)
        rank.setdefault(left + right, r)
    tokens: list[str | None] = [None] * n_vocab
    types = [int(TokenType.NORMAL)] * n_vocab
    scores = [0.0] * n_vocab
    unk = model.get("unk_token") or _config_token(folder, "unk_token")
    for text, i in base.items():
        tokens[i] = text
        if text in rank:
            scores[i] = -float(rank[text])
        elif len(text) > 1:
            scores[i] = UNMERGED_SCORE
        if BYTE_TOKEN.fullmatch(text):
            types[i] = int(TokenType.BYTE)
        elif text == unk:
            types[i] = int(TokenType.UNKNOWN)
    for a in added:
        i, content = a["id"], a["content"]
        tokens[i] = content
        if content == unk:
            types[i] = int(TokenType.UNKNOWN)
        elif types[i] != TokenType.BYTE:
            types[i] = token_type(content, bool(a.get("special")))
    missing = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in base]
    if missing:
        raise UnsupportedError(f"tokenizer.json has byte_fallback but lacks byte tokens {', '.join(missing[:4])}...")
    final = padded(tokens, types, n_vocab)
    for i, t in enumerate(tokens):
        if t is None:
            scores[i] = -1000.0
    return Vocab(
        model="llama",
        tokens=final,
        types=types,
        scores=scores,
        add_space_prefix=prefix,
        special=special_vocab(folder, tokenizer, n_vocab, merges=False),
        rstrip=rstrip_ids(added),
    )


def _config_token(folder: Path, key: str) -> str | None:
    """A special token's text from tokenizer_config.json (a string, or an AddedToken written as a dict)."""
    value = read_json(folder / "tokenizer_config.json").get(key)
    return value.get("content") if isinstance(value, dict) else value

"""The tokenizer as GGUF metadata: byte-level BPE (tokenizer.json) or SentencePiece (tokenizer.model).

llama.cpp tokenizes with its own code, so everything it needs is written explicitly: the token strings,
scores and types, merges, the pre-tokenizer *name* (llama.cpp keeps its own copy of each family's regex and
refuses names it does not know), special ids, whether BOS/EOS are added, and the chat template.
The pre-tokenizer is chosen from the regexes in tokenizer.json, not guessed from the model family.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGUFWriter, SpecialVocab, TokenType

from convert.errors import SourceError, UnsupportedError

# Pre-tokenization regexes as tokenizer.json spells them -> the name llama.cpp (llama-vocab.cpp) knows.
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GPT4O_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS: dict[tuple[str, ...], str] = {
    (LLAMA3_REGEX,): "llama-bpe",
    (QWEN2_REGEX,): "qwen2",
    (GPT4O_REGEX,): "gpt-4o",
    (GPT2_REGEX,): "gpt-2",
}

# Added tokens that are control markers in every family we convert, whatever tokenizer.json says about
# "special": chat turn markers, thinking tags, harmony's channel markup. Control tokens are matched only with
# parse_special and are not printed by default, which is what the server's parsers expect.
CONTROL_MARKERS = frozenset(
    {
        "<think>", "</think>",
        "<|im_start|>", "<|im_end|>", "<|endoftext|>",
        "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
        "<|eom_id|>", "<|python_tag|>",
        "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>",
        "[INST]", "[/INST]", "<s>", "</s>",
        "<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>", "<|constrain|>",
        "<|startoftext|>",
    }
)  # fmt: skip


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    pre: str | None = None
    add_space_prefix: bool | None = None
    special: SpecialVocab | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def add_to(self, w: GGUFWriter) -> None:
        w.add_tokenizer_model(self.model)
        if self.pre is not None:
            w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        w.add_token_types(self.types)
        if self.add_space_prefix is not None:
            w.add_add_space_prefix(self.add_space_prefix)
        if self.special is not None:
            self.special.add_to_gguf(w, quiet=True)


# --- byte-level BPE ------------------------------------------------------------------------------------------


def _pre_regexes(pre: dict[str, Any] | None) -> tuple[str, ...]:
    """The regexes a tokenizer.json pre_tokenizer splits with, in order (ByteLevel's own regex included)."""
    if not pre:
        return ()
    kind = pre.get("type")
    if kind == "Sequence":
        return tuple(r for p in pre.get("pretokenizers", []) for r in _pre_regexes(p))
    if kind == "Split":
        pattern = pre.get("pattern", {})
        return (pattern["Regex"],) if "Regex" in pattern else ()
    if kind == "ByteLevel":
        return (GPT2_REGEX,) if pre.get("use_regex", True) else ()
    return (f"<{kind}>",)


def pre_tokenizer_name(tokenizer: dict[str, Any]) -> str:
    regexes = _pre_regexes(tokenizer.get("pre_tokenizer"))
    name = PRE_TOKENIZERS.get(regexes)
    if name is None:
        shown = " + ".join(regexes) or "none"
        raise UnsupportedError(
            f"tokenizer.json pre-tokenizer is not one llama.cpp knows (regex {shown[:120]}); "
            f"supported: {', '.join(PRE_TOKENIZERS.values())}"
        )
    return name


def _is_byte_level(tokenizer: dict[str, Any]) -> bool:
    model = tokenizer.get("model", {})
    decoder = tokenizer.get("decoder") or {}
    return model.get("type") == "BPE" and not model.get("byte_fallback", False) and decoder.get("type") == "ByteLevel"


def _token_type(content: str, special: bool) -> int:
    return int(TokenType.CONTROL if special or content in CONTROL_MARKERS else TokenType.USER_DEFINED)


def bpe_vocab(folder: Path, tokenizer: dict[str, Any], n_vocab: int) -> Vocab:
    base: dict[str, int] = tokenizer["model"]["vocab"]
    added = tokenizer.get("added_tokens") or []
    size = max([n_vocab, *(i + 1 for i in base.values()), *(a["id"] + 1 for a in added)])
    if size > n_vocab:
        raise SourceError(f"tokenizer has {size} tokens but config.json vocab_size is {n_vocab}")
    tokens: list[str | None] = [None] * n_vocab
    types = [int(TokenType.UNUSED)] * n_vocab
    for text, i in base.items():
        tokens[i], types[i] = text, int(TokenType.NORMAL)
    for a in added:
        tokens[a["id"]], types[a["id"]] = a["content"], _token_type(a["content"], bool(a.get("special")))
    # Embedding rows beyond the tokenizer: placeholder tokens, as llama.cpp's converter writes them.
    final = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    return Vocab(
        model="gpt2",
        tokens=final,
        types=types,
        pre=pre_tokenizer_name(tokenizer),
        special=special_vocab(folder, tokenizer, n_vocab, merges=True),
    )


# --- SentencePiece -------------------------------------------------------------------------------------------


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
            types.append(_token_type(content, bool(a.get("special"))))
        elif tokens[i] == content and types[i] in (TokenType.NORMAL, TokenType.USER_DEFINED, TokenType.CONTROL):
            types[i] = _token_type(content, bool(a.get("special")) or types[i] == TokenType.CONTROL)
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
    )


def added_tokens(folder: Path, tokenizer: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Added tokens from tokenizer.json, else from tokenizer_config.json's added_tokens_decoder."""
    if tokenizer is not None and tokenizer.get("added_tokens"):
        return list(tokenizer["added_tokens"])
    cfg = _json(folder / "tokenizer_config.json")
    decoder = cfg.get("added_tokens_decoder") or {}
    return [{"id": int(i), **v} for i, v in decoder.items()]


# --- special tokens, add_bos/add_eos, chat template ----------------------------------------------------------


def special_vocab(folder: Path, tokenizer: dict[str, Any] | None, n_vocab: int, *, merges: bool) -> SpecialVocab:
    special = SpecialVocab(folder, load_merges=merges, n_vocab=n_vocab)
    cfg = _json(folder / "tokenizer_config.json")
    add_bos, add_eos = _adds_from_post_processor(tokenizer, special.special_token_ids)
    # An explicit flag in tokenizer_config.json is what the HF tokenizer class applies on load.
    for typ, found in (("bos", add_bos), ("eos", add_eos)):
        flag = cfg.get(f"add_{typ}_token")
        special.add_special_token[typ] = flag if isinstance(flag, bool) else found
    if special.chat_template is None and (folder / "chat_template.jinja").is_file():
        special.chat_template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    return special


def _adds_from_post_processor(tokenizer: dict[str, Any] | None, ids: dict[str, int]) -> tuple[bool, bool]:
    """Whether the tokenizer.json post-processor puts BOS in front / EOS at the end of a single sequence."""
    post = (tokenizer or {}).get("post_processor") or {}
    procs = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for p in procs:
        if p.get("type") == "TemplateProcessing":
            single = p.get("single", [])
            specials = p.get("special_tokens", {})
            first = _special_id(single[0], specials) if single else None
            last = _special_id(single[-1], specials) if len(single) > 1 else None
            return (first is not None and first == ids.get("bos"), last is not None and last == ids.get("eos"))
    return False, False


def _special_id(item: dict[str, Any], specials: dict[str, Any]) -> int | None:
    """The id of a TemplateProcessing item when it is a special token ({"SpecialToken": {"id": name}})."""
    name = item.get("SpecialToken", {}).get("id")
    return (specials.get(name, {}).get("ids") or [None])[0] if name else None


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from e
    return data if isinstance(data, dict) else {}


# --- entry point ---------------------------------------------------------------------------------------------


def load_vocab(folder: Path, n_vocab: int) -> Vocab:
    tokenizer = _json(folder / "tokenizer.json") or None
    if tokenizer is not None and _is_byte_level(tokenizer):
        return bpe_vocab(folder, tokenizer, n_vocab)
    if (folder / "tokenizer.model").is_file():
        return spm_vocab(folder, tokenizer, n_vocab)
    if tokenizer is not None:
        kind = tokenizer.get("model", {}).get("type")
        raise UnsupportedError(
            f"tokenizer.json holds a {kind} tokenizer that is not byte-level BPE; "
            "a SentencePiece-style tokenizer needs its tokenizer.model beside it"
        )
    raise SourceError(f"{folder}: missing tokenizer (tokenizer.json or tokenizer.model)")

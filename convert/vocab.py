"""The tokenizer as GGUF metadata: the `Vocab` every kind of tokenizer becomes, and what the kinds share.

llama.cpp tokenizes with its own code, so everything it needs is written explicitly: the token strings,
scores and types, merges, the pre-tokenizer *name* (llama.cpp keeps its own copy of each family's regex and
refuses names it does not know), special ids, whether BOS/EOS are added, and the chat template. Which kind a
folder holds is decided in convert.vocab_kind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGUFValueType, GGUFWriter, SpecialVocab, TokenType

from convert.errors import SourceError

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
    rstrip: frozenset[int] = frozenset()  # added tokens that drop the whitespace after them (tokenizer.json's rstrip)
    # further tokenizer keys written as they are (WordPiece's normalizer flags and special ids)
    extra: list[tuple[str, Any, GGUFValueType]] = field(default_factory=list)

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
        for key, value, vtype in self.extra:
            w.add_key_value(key, value, vtype)


def token_type(content: str, special: bool) -> int:
    """An added token's GGUF type: control when the tokenizer calls it special (or it is a known marker)."""
    return int(TokenType.CONTROL if special or content in CONTROL_MARKERS else TokenType.USER_DEFINED)


def padded(tokens: list[str | None], types: list[int], n_vocab: int) -> list[str]:
    """Embedding rows beyond the tokenizer: placeholder tokens, as llama.cpp's converter writes them."""
    for i, t in enumerate(tokens):
        if t is None:
            types[i] = int(TokenType.UNUSED)
    return [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]


def rstrip_ids(added: list[dict[str, Any]]) -> frozenset[int]:
    return frozenset(int(a["id"]) for a in added if a.get("rstrip"))


def added_tokens(folder: Path, tokenizer: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Added tokens from tokenizer.json, else from tokenizer_config.json's added_tokens_decoder."""
    if tokenizer is not None and tokenizer.get("added_tokens"):
        return list(tokenizer["added_tokens"])
    cfg = read_json(folder / "tokenizer_config.json")
    decoder = cfg.get("added_tokens_decoder") or {}
    return [{"id": int(i), **v} for i, v in decoder.items()]


# --- special tokens, add_bos/add_eos, chat template ----------------------------------------------------------


def special_vocab(folder: Path, tokenizer: dict[str, Any] | None, n_vocab: int, *, merges: bool) -> SpecialVocab:
    special = SpecialVocab(folder, load_merges=merges, n_vocab=n_vocab)
    cfg = read_json(folder / "tokenizer_config.json")
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


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from e
    return data if isinstance(data, dict) else {}

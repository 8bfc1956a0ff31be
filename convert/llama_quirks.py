"""Behaviour llama.cpp keys on a GGUF's general.name, and how the converter keeps it from changing tokenization.

llama.cpp's vocabulary loader (src/llama-vocab.cpp, "set attributes by model/tokenizer/architecture name") gives
every special token of a model whose lowercased general.name contains "phi-3" or "phi3" the RSTRIP attribute
(whitespace after it is dropped), sets it on </s> and clears it on <unk>, <s> and <|endoftext|>; it fails to
load such a model when one of those four tokens is missing. That is what Phi-3's own tokenizer.json says about
its added tokens, so for a real Phi-3 the name stays. For any other tokenizer (a fine-tune named "phi3-...",
another vocabulary), the name is written with a space ("Phi 3-...") so llama.cpp tokenizes as the tokenizer says.
"""

from __future__ import annotations

import logging
import re

from gguf import TokenType

from convert.vocab import Vocab

log = logging.getLogger(__name__)

PHI3_NAME = re.compile(r"phi-?3", re.IGNORECASE)
PHI3_RSTRIP_ON = ("</s>",)
PHI3_RSTRIP_OFF = ("<unk>", "<s>", "<|endoftext|>")
SPECIAL_TYPES = (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)


def phi3_rstrip(vocab: Vocab) -> set[int] | None:
    """The tokens llama.cpp's phi-3 rule right-strips, or None where the rule would make loading fail."""
    ids = {t: i for i, t in enumerate(vocab.tokens)}
    if any(t not in ids for t in (*PHI3_RSTRIP_ON, *PHI3_RSTRIP_OFF)):
        return None
    out = {i for i, kind in enumerate(vocab.types) if kind in SPECIAL_TYPES}
    out |= {ids[t] for t in PHI3_RSTRIP_ON}
    return out - {ids[t] for t in PHI3_RSTRIP_OFF}


def general_name(name: str, vocab: Vocab) -> str:
    """`name`, unless llama.cpp would treat the model as Phi-3 while its tokenizer is not Phi-3's."""
    if not PHI3_NAME.search(name) or phi3_rstrip(vocab) == set(vocab.rstrip):
        return name
    renamed = PHI3_NAME.sub(lambda m: m.group(0)[:3] + " 3", name)
    log.warning(
        "general.name %r written as %r: llama.cpp would apply Phi-3's special-token stripping to it", name, renamed
    )
    return renamed

"""Byte-level BPE tokenizers for the demo models, trained with `tokenizers` on the demo corpus.

Each flavour copies the pre-tokenizer of the family it imitates, so llama.cpp's matching pre-tokenizer
(`qwen2` for demo-think, `gpt-4o` for demo-harmony) splits text exactly as the HF tokenizer does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

TEMPLATES = Path(__file__).parent / "templates"

# Qwen2/Qwen3's split (llama.cpp pre "qwen2"): single digits, letters with one leading non-letter.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# o200k's split, as gpt-oss ships it (llama.cpp pre "gpt-4o"): case-aware words, digits in threes.
O200K_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class Flavour:
    split: str
    nfc: bool  # Qwen normalizes to NFC; gpt-oss does not normalize
    special: tuple[str, ...]  # control tokens, in id order after the merges
    plain_added: tuple[str, ...]  # added tokens that decode as text (Qwen's <think> tags)
    bos: str | None
    eos: str
    pad: str
    template: str


THINK = Flavour(
    split=QWEN2_SPLIT,
    nfc=True,
    special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    # Qwen's own added tokens: thinking tags, call and tool-result tags
    plain_added=("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"),
    bos=None,
    eos="<|im_end|>",
    pad="<|endoftext|>",
    template="think.jinja",
)
HARMONY_SPECIAL = (
    "<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>", "<|channel|>",
    "<|start|>", "<|end|>", "<|message|>", "<|call|>",
)  # fmt: skip
HARMONY = Flavour(
    split=O200K_SPLIT,
    nfc=False,
    special=HARMONY_SPECIAL,
    plain_added=(),
    bos="<|startoftext|>",
    eos="<|return|>",
    pad="<|endoftext|>",
    template="harmony.jinja",
)


def train_tokenizer(flavour: Flavour, corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `corpus` (texts with the markers already removed) and wrap it for HF."""
    tok = Tokenizer(models.BPE(byte_fallback=False, fuse_unk=False))
    if flavour.nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(flavour.split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()  # the decoder takes no options (tokenizers ignores any given)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in flavour.special])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in flavour.plain_added])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=flavour.bos,
        eos_token=flavour.eos,
        pad_token=flavour.pad,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = (TEMPLATES / flavour.template).read_text()
    return hf


def token_id(tok: PreTrainedTokenizerFast, token: str) -> int:
    """One token's id (transformers types convert_tokens_to_ids for one token and for a list as one union)."""
    found = tok.convert_tokens_to_ids(token)
    assert isinstance(found, int)
    return found


def render_chat(flavour: Flavour, messages: list[dict[str, object]], **variables: object) -> str:
    """Render the flavour's chat template with plain jinja2 (no tokenizer needed)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["tojson"] = lambda value, indent=None: json.dumps(
        value, ensure_ascii=False, indent=indent
    )  # as transformers
    return env.from_string((TEMPLATES / flavour.template).read_text()).render(messages=messages, **variables)

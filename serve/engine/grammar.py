"""The grammar a sequence samples with: GBNF text and the lazy triggers that start it.

The engine's own type: the chat wing builds one (the answer's JSON schema, a tool call's format) and the engine
hands it to llama.cpp's grammar sampler without knowing where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Grammar:
    text: str  # GBNF with a `root` rule
    # Regexes over the output (llama.cpp searches each anywhere in it): the grammar starts at the first
    # capture group of the first one that matches. Empty: enforced from the first token.
    triggers: tuple[str, ...] = ()

"""JSON strings in the grammars llama.cpp's JSON-schema converter writes: no raw control characters.

The converter's string character (`char ::= [^"\\] | escape`) and a pattern's `.` (`dot ::= [^\x0a\x0d]`)
admit U+0000-U+001F as they are, so a model could write a raw newline or tab inside a string and end the
answer (or a tool call's arguments) with text that is not JSON: JSON strings hold control characters only
escaped (`\n`, `\u001f`), which stay allowed as two or six characters. `strict_strings` rewrites those two
rules, whatever name the converter gave them, and leaves every other rule as it is.
"""

from __future__ import annotations

import re

from llama_cpp.llama_grammar import PRIMITIVE_RULES

CONTROLS = r"\x00-\x1F"  # inside a GBNF character class
ESCAPE = r'"\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
CHAR = f'[^"\\\\{CONTROLS}] | {ESCAPE}'
DOT = f"[^{CONTROLS}]"

# The converter's own rule bodies (llama_cpp.llama_grammar: PRIMITIVE_RULES["char"], and DOT when not dotall).
_LOOSE = {PRIMITIVE_RULES["char"].content: CHAR, r"[^\x0A\x0D]": DOT}
_RULE = re.compile(r"^([A-Za-z0-9-]+) ::= (.*)$", re.M)


def strict_strings(grammar: str) -> str:
    """`grammar` with every JSON string character rule excluding raw control characters."""
    return _RULE.sub(lambda m: f"{m.group(1)} ::= {_LOOSE.get(m.group(2), m.group(2))}", grammar)

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


# llama.cpp matches a special token against a grammar by its text, so `<|end|>` fits a JSON string as well as any
# seven characters do, and for a harmony model such a marker inside an answer or a call's arguments ends the message
# mid-JSON (serve/chat/channels.py reads harmony's structure from them). A harmony grammar's strings therefore never
# hold `<|`: a `<` is followed by another character than `|` (the two count as one toward a maxLength). Other formats
# need no such rule: their markers inside a JSON answer or call are text to the parsers.
CHAR_RULE = re.compile(r"^char ::= .*$", re.M)
NO_MARKER_CHAR = f'char ::= [^"\\\\<{CONTROLS}] | {ESCAPE} | "<"+ ([^"\\\\<|{CONTROLS}] | {ESCAPE})'


def no_markers(grammar: str) -> str:
    """`grammar` (after strict_strings) with its JSON strings unable to hold a harmony marker."""
    return CHAR_RULE.sub(lambda _: NO_MARKER_CHAR, grammar)

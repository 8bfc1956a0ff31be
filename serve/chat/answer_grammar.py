"""response_format -> a llama.cpp grammar that constrains the answer only, never the thinking.

The grammar comes from llama.cpp's own JSON-schema converter. For a thinking model it is lazy: it waits until
the end-of-thinking marker appears in the output (llama.cpp's trigger patterns) and starts with that marker, so
the thinking stays free and the answer after it must match. Tool grammars (serve/chat/tools/grammar.py) use the
same `Grammar` (serve/engine/grammar.py) and the same trigger mechanism.
"""

from __future__ import annotations

import json
import re

from llama_cpp.llama_grammar import json_schema_to_gbnf

from serve.chat.channels import THINK_TAGS, Format, message_end
from serve.chat.json_strings import no_markers, strict_strings
from serve.chat.schema_limits import SchemaTooComplex, check_grammar, check_schema
from serve.chat.schemas import ResponseFormat
from serve.engine.grammar import Grammar
from serve.errors import InvalidRequest, SchemaTooLarge

# A rule name no schema property can produce (the converter names rules after properties).
ANSWER_RULE = "hearth-answer-0"

# The capture group marks where the grammar starts; it must be non-empty, so it is the marker itself: each
# thinking block's close marker (`</think>`), harmony's final message.
TRIGGERS = {
    **{fmt: (tags.close, rf"[\s\S]*?({re.escape(tags.close)})[\s\S]*") for fmt, tags in THINK_TAGS.items()},
    Format.HARMONY: ("<|message|>", r"[\s\S]*<\|channel\|>final[^<]*(?:<\|constrain\|>[^<]*)?(<\|message\|>)[\s\S]*"),
}


def bounded_schema(schema: object, where: str, param: str) -> None:
    """The schema within what llama.cpp's grammar code takes safely (serve/chat/schema_limits), else a 400."""
    try:
        check_schema(schema, where)
    except SchemaTooComplex as err:
        raise SchemaTooLarge(str(err), param=param) from None


def bounded_grammar(gbnf: str, where: str, param: str) -> None:
    """The converter's GBNF within the grammar bounds, else a 400."""
    try:
        check_grammar(gbnf, where)
    except SchemaTooComplex as err:
        raise SchemaTooLarge(str(err), param=param) from None


def schema_grammar(fmt: ResponseFormat) -> str | None:
    """GBNF for the answer, or None for plain text. Raises InvalidRequest naming what cannot be expressed."""
    if fmt.type == "text":
        return None
    if fmt.type == "json_object":
        schema: dict[str, object] = {"type": "object"}
    else:
        assert fmt.json_schema is not None  # ResponseFormat requires it with type json_schema
        schema = fmt.json_schema.schema_
        bounded_schema(schema, "response_format.json_schema", "response_format")
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InvalidRequest(f"unsupported JSON schema: {message}", param="response_format") from err
    bounded_grammar(gbnf, "response_format", "response_format")
    return gbnf


def build(fmt: ResponseFormat | None, chat_format: Format, thinks: bool) -> Grammar | None:
    """The grammar to sample with; lazy after the thinking when the model thinks before answering."""
    answer = schema_grammar(fmt) if fmt else None
    if answer is None:
        return None
    answer = strict_strings(answer)  # no raw control character inside a JSON string
    if message_end(chat_format):
        answer = no_markers(answer)  # a marker inside a string would end the message mid-JSON (harmony, Solar, Muse)
    if not thinks:
        return Grammar(answer)
    literal, pattern = TRIGGERS[chat_format]
    renamed = re.sub(r"^root ::=", f"{ANSWER_RULE} ::=", answer, flags=re.M)
    # At most two newlines before the answer: an unbounded run would let an untrained model emit whitespace forever.
    return Grammar(
        f'root ::= {json.dumps(literal)} {answer_markup(chat_format)}"\\n"? "\\n"? {ANSWER_RULE}\n{renamed}', (pattern,)
    )


def answer_markup(chat_format: Format) -> str:
    """GBNF (with a trailing space) for the family's markup that opens the answer after the thinking, which the
    model may write (Kimi K3's response tag); empty where there is none."""
    tags = THINK_TAGS.get(chat_format)
    if tags is None or not tags.lead:
        return ""
    return f"( {' | '.join(json.dumps(m) for m in tags.lead)} )? "

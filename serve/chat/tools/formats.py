"""The call formats hearth reads, one table row each: its parser (a spec for the table-driven parser, or a
parser of its own), whether it carries several calls in one answer, and the key its call objects hold the
arguments under (what the tool grammar writes)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from serve.chat.tools import (
    apertus,
    apriel,
    cohere,
    functionary,
    gemma,
    gigachat,
    granite,
    hermes,
    kimi,
    llama3,
    minimax,
    minimax_tree,
    mistral,
    nemotron,
    pythonic,
    solar,
    tagged,
    xml,
)
from serve.chat.tools.events import CallParser, IdMaker, Tools, mistral_id, openai_id
from serve.chat.tools.history import CallWriter
from serve.chat.tools.markup import MarkupParser, Spec


class ToolFormat(enum.Enum):
    HERMES = "hermes"  # Qwen 2.5/3, Hermes: <tool_call>{...}</tool_call>
    LLAMA3 = "llama3"  # {"name": ..., "parameters": ...} as the answer, or after <|python_tag|>
    MISTRAL = "mistral"  # [TOOL_CALLS][{...}, ...]
    MISTRAL_ARGS = "mistral-args"  # [TOOL_CALLS]NAME[ARGS]{...}
    GRANITE = "granite"  # <|tool_call|>[{...}, ...]
    NEMOTRON = "nemotron"  # Nemotron Nano v2: <TOOLCALL>[{...}, ...]</TOOLCALL>
    XML = "xml"  # Qwen3-Coder, Qwen3.5, Nemotron 3: <tool_call><function=NAME><parameter=KEY>VALUE</parameter>...
    SEED_XML = "seed-xml"  # Seed-OSS: the same inside <seed:tool_call>, values without layout newlines
    PYTHONIC = "pythonic"  # LFM2.5: <|tool_call_start|>[NAME(key=value, ...), ...]<|tool_call_end|>
    HARMONY = "harmony"  # gpt-oss: to=functions.NAME in a message header
    GENERIC = "generic"  # a template that knows no tools: Hermes markup, taught in the system message
    COHERE = "cohere"  # Command R7B, Cohere2: <|START_ACTION|>[{"tool_call_id", "tool_name", "parameters"}, ...]<|END_ACTION|>
    APRIEL = "apriel"  # Apriel 1.5/1.6: <tool_calls>[{...}, ...]</tool_calls>
    FUNCTIONARY = "functionary"  # functionary v3.1: <function=NAME>{...}</function>
    GLM = "glm"  # Spark 2.5, Laguna: <tool_call>NAME<arg_key>KEY</arg_key><arg_value>VALUE</arg_value></tool_call>
    MINICPM = "minicpm"  # MiniCPM 5: <function name="NAME"><param name="KEY">VALUE</param></function>
    SOLAR = "solar"  # Solar Open: <|tool_call:begin|>ID<|tool_call:name|>NAME<|tool_call:args|>{...}<|tool_call:end|>
    APERTUS = "apertus"  # Apertus: <|tools_prefix|>[{"NAME": {...}}, ...]<|tools_suffix|>
    GIGACHAT = (
        "gigachat"  # GigaChat 3 / 3.1: function call<|role_sep|> or <|function_call|>, then {"name", "arguments"}
    )
    ATEM = "atem"  # Muse Glimmer: <atem:function_calls><atem:invoke name="NAME"><atem:parameter name="KEY">...
    HY3 = "hy3"  # Tencent Hy3: glm's pairs in <tool_calls:opensource><tool_call:opensource>NAME<tool_sep:opensource>...
    GEMMA = "gemma"  # Gemma 4: <|tool_call>call:NAME{key:<|"|>text<|"|>,...}<tool_call|>
    DEEPSEEK_V32 = "deepseek-v3.2"  # DSML function_calls of invoke name="NAME" tags, parameters string="true|false"
    DEEPSEEK_V4 = "deepseek-v4"  # the same in a DSML tool_calls block
    MINIMAX_XML = "minimax-xml"  # MiniMax-M2: <minimax:tool_call><invoke name="NAME"><parameter name="KEY">...
    MINIMAX_JSON = "minimax-json"  # MiniMax-M1: <tool_calls> of {"name": ..., "arguments": ...} lines
    MINIMAX_TREE = "minimax-tree"  # MiniMax-M3: ]<]minimax[>[<invoke name="NAME"> with arguments as nested elements
    KIMI = "kimi"  # Kimi K2: <|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{...}<|tool_call_end|>
    KIMI_K3 = "kimi-k3"  # Kimi K3: <|open|>call tool="NAME" index="N"<|sep|> of typed arguments


# A parser of its own: made with the request's tools (for their parameter schemas) and an id maker.
ParserMaker = Callable[[IdMaker, Tools | None], CallParser]
# A call's id as the format's templates derive it: from its name and its number among the conversation's calls.
NamedId = Callable[[str, int], str]


@dataclass(frozen=True)
class FormatInfo:
    spec: Spec | None  # the table-driven parser's spec (None: a parser of its own, or harmony)
    parallel: bool  # can one answer carry several calls
    args_key: str = "arguments"
    new_id: IdMaker = openai_id
    make: ParserMaker | None = None
    # a history's calls as the format's text, for a template that lists tools but writes no calls (history.py)
    write: CallWriter | None = None
    # ids the templates derive from the call (Kimi K2): such a call's id is this, never new_id's
    named_id: NamedId | None = None

    def parser(self, new_id: IdMaker | None, tools: Tools | None) -> CallParser:
        """The call parser for one answer (harmony's calls are read from its messages, serve/chat/tools/harmony.py)."""
        if self.make is not None:
            return self.make(new_id or self.new_id, tools)
        assert self.spec is not None, "harmony has no markup parser"
        return MarkupParser(self.spec, new_id or self.new_id)


def _xml(style: xml.XmlStyle) -> ParserMaker:
    return lambda new_id, tools: xml.XmlParser(style, tools, new_id)


def _tagged(style: tagged.TagStyle) -> ParserMaker:
    return lambda new_id, tools: tagged.TaggedParser(style, tools, new_id)


FORMATS = MappingProxyType({
    ToolFormat.HERMES: FormatInfo(hermes.SPEC, parallel=True),
    ToolFormat.GENERIC: FormatInfo(hermes.SPEC, parallel=True),
    # Llama 3.1's own template refuses a history turn with more than one call.
    ToolFormat.LLAMA3: FormatInfo(llama3.SPEC, parallel=False, args_key="parameters"),
    ToolFormat.MISTRAL: FormatInfo(mistral.SPEC, parallel=True, new_id=mistral_id),
    ToolFormat.MISTRAL_ARGS: FormatInfo(mistral.SPEC, parallel=True, new_id=mistral_id),
    ToolFormat.GRANITE: FormatInfo(granite.SPEC, parallel=True),
    ToolFormat.NEMOTRON: FormatInfo(nemotron.SPEC, parallel=True),
    ToolFormat.XML: FormatInfo(None, parallel=True, make=_xml(xml.QWEN)),
    ToolFormat.SEED_XML: FormatInfo(None, parallel=True, make=_xml(xml.SEED)),
    ToolFormat.PYTHONIC: FormatInfo(
        None, parallel=True, make=lambda new_id, tools: pythonic.PythonicParser(tools, new_id), write=pythonic.calls_text
    ),
    # <|call|> ends generation: one call per turn.
    ToolFormat.HARMONY: FormatInfo(None, parallel=False),
    ToolFormat.COHERE: FormatInfo(cohere.SPEC, parallel=True, args_key="parameters"),
    ToolFormat.APRIEL: FormatInfo(apriel.SPEC, parallel=True),
    ToolFormat.FUNCTIONARY: FormatInfo(functionary.SPEC, parallel=True),
    ToolFormat.GLM: FormatInfo(None, parallel=True, make=_tagged(tagged.GLM)),
    ToolFormat.MINICPM: FormatInfo(None, parallel=True, make=_tagged(tagged.MINICPM)),
    ToolFormat.HY3: FormatInfo(None, parallel=True, make=_tagged(tagged.HY3)),
    ToolFormat.ATEM: FormatInfo(None, parallel=True, make=_tagged(tagged.ATEM)),
    ToolFormat.SOLAR: FormatInfo(solar.SPEC, parallel=True),
    ToolFormat.APERTUS: FormatInfo(apertus.SPEC, parallel=True),
    ToolFormat.GIGACHAT: FormatInfo(gigachat.SPEC, parallel=False),
    ToolFormat.GEMMA: FormatInfo(None, parallel=True, make=lambda new_id, tools: gemma.GemmaParser(tools, new_id)),
    ToolFormat.DEEPSEEK_V32: FormatInfo(None, parallel=True, make=_xml(xml.DEEPSEEK_V32)),
    ToolFormat.DEEPSEEK_V4: FormatInfo(None, parallel=True, make=_xml(xml.DEEPSEEK_V4)),
    ToolFormat.MINIMAX_XML: FormatInfo(None, parallel=True, make=_xml(xml.MINIMAX)),
    ToolFormat.MINIMAX_JSON: FormatInfo(minimax.SPEC, parallel=True),
    ToolFormat.MINIMAX_TREE: FormatInfo(
        None, parallel=True, make=lambda new_id, tools: minimax_tree.MinimaxTreeParser(tools, new_id)
    ),
    ToolFormat.KIMI: FormatInfo(kimi.SPEC, parallel=True, named_id=kimi.call_id),
    ToolFormat.KIMI_K3: FormatInfo(None, parallel=True, make=_xml(xml.KIMI_K3)),
})  # fmt: skip

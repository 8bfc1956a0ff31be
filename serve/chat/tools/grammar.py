"""Tool grammars: calls held to the declared tools and their parameters' schemas.

`auto`: lazy. The grammar waits for the call's opening marker (llama.cpp's trigger patterns: `<tool_call>`,
`[TOOL_CALLS]`, `<|tool_call|>`, `<TOOLCALL>`, `<seed:tool_call>`, `<|python_tag|>` or a bare `{` opening a Llama 3.x answer,
`to=functions.` in a harmony header, each other format's opening marker in OPENERS) and from there holds the call to one of the tools, with arguments
matching that tool's schema; answer text without a call stays free. A marker inside the thinking does not
count: patterns for thinking models only match after the thinking's close marker (`</think>`, or the family's own:
channels.THINK_TAGS; harmony, the final channel).
`required` / a named tool: the answer must be calls, from its first token; for a thinking model the
grammar starts where the thinking ends (its close marker), and for harmony it lets one analysis message through
and then requires the call message.

XML-style calls: the offered tools' function names, each tool's declared parameters in their declared order (the
required ones present, the others optional), a string parameter's value any text without `</parameter>` (where
the parser ends it), any other value JSON held to the parameter's schema; a tool that declares no parameters may
name any (DeepSeek's DSML and Kimi K3 write each parameter's kind in an attribute: held to the schema's too).
Gemma 4 and MiniMax-M3 calls: value_grammar.py. Pythonic calls: the offered tools' names, each with arguments that are any text in which quotes and
parentheses balance (the parser reads the literals; their schemas are not held).

Argument schemas go through llama.cpp's own JSON-schema converter, all in one converter so rule names stay
unique; our own rules are named `hearth-*`, which no schema produces.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from llama_cpp.llama_grammar import SchemaConverter

from serve.chat.answer_grammar import bounded_grammar, bounded_schema
from serve.chat.channels import THINK_TAGS, Format, Thinking, ThinkTags
from serve.chat.json_strings import no_markers, strict_strings
from serve.chat.tools import (
    apertus,
    apriel,
    cohere,
    functionary,
    gemma,
    gigachat,
    kimi,
    minimax,
    minimax_tree,
    pythonic,
    solar,
    tagged,
    value_grammar,
)
from serve.chat.tools.formats import FORMATS, ToolFormat
from serve.chat.tools.gbnf import declared, lit, offered, without
from serve.chat.tools.request import ToolRequest
from serve.chat.tools.typed import is_text, schema_types
from serve.chat.tools.xml import DEEPSEEK_V4, DEEPSEEK_V32, KIMI_K3, MINIMAX, QWEN, SEED, XmlStyle
from serve.engine.grammar import Grammar
from serve.errors import InvalidRequest

XML_STYLES = {
    ToolFormat.XML: QWEN,
    ToolFormat.SEED_XML: SEED,
    ToolFormat.DEEPSEEK_V32: DEEPSEEK_V32,
    ToolFormat.DEEPSEEK_V4: DEEPSEEK_V4,
    ToolFormat.MINIMAX_XML: MINIMAX,
    ToolFormat.KIMI_K3: KIMI_K3,
}
# The text that opens a call in each format, and whether an answer may open one with a bare JSON object.
OPENERS = {
    ToolFormat.HERMES: ("<tool_call>",),
    ToolFormat.GENERIC: ("<tool_call>",),
    ToolFormat.MISTRAL: ("[TOOL_CALLS]",),
    ToolFormat.MISTRAL_ARGS: ("[TOOL_CALLS]",),
    ToolFormat.GRANITE: ("<|tool_call|>",),
    ToolFormat.NEMOTRON: ("<TOOLCALL>",),
    ToolFormat.PYTHONIC: (pythonic.OPEN,),
    ToolFormat.LLAMA3: ("<|python_tag|>",),
    ToolFormat.HARMONY: ("to=functions.",),
    ToolFormat.COHERE: (cohere.OPEN,),
    ToolFormat.APRIEL: (apriel.OPEN,),
    ToolFormat.FUNCTIONARY: (functionary.OPEN,),
    ToolFormat.GLM: (tagged.GLM.opener,),
    ToolFormat.MINICPM: (tagged.MINICPM.opener,),
    ToolFormat.HY3: (tagged.HY3.opener,),
    ToolFormat.ATEM: (tagged.ATEM.opener,),
    ToolFormat.SOLAR: (solar.BLOCK,),
    ToolFormat.APERTUS: (apertus.OPEN,),
    ToolFormat.GIGACHAT: (gigachat.CALL, gigachat.CALL_31),
    ToolFormat.GEMMA: (gemma.OPEN,),
    ToolFormat.KIMI: (kimi.SECTION_BEGIN,),
    ToolFormat.MINIMAX_JSON: (minimax.OPEN,),
    ToolFormat.MINIMAX_TREE: (minimax_tree.OPEN,),
    **{fmt: (style.open,) for fmt, style in XML_STYLES.items()},
}
TAG_STYLES = {
    ToolFormat.GLM: tagged.GLM,
    ToolFormat.MINICPM: tagged.MINICPM,
    ToolFormat.HY3: tagged.HY3,
    ToolFormat.ATEM: tagged.ATEM,
}
BARE_OBJECT = {ToolFormat.LLAMA3}
# What may open the calls' message, as GBNF (a grammar that forces calls) and as a pattern (auto's trigger at the
# output's start): Muse Glimmer's header rest, the prompt having written `<|start|>assistant`
CALL_HEAD = {ToolFormat.ATEM: '( " to=" [a-zA-Z0-9_.-]+ "<|message|>" )? '}
START_HEAD = {ToolFormat.ATEM: r"(?:to=[\w.-]+<\|message\|>)?"}
HARMONY_FINAL = r"<\|channel\|>final[^<]*(?:<\|constrain\|>[^<]*)?<\|message\|>"


def build(req: ToolRequest, fmt: ToolFormat, thinking: Thinking, tags: ThinkTags = THINK_TAGS[Format.THINK]) -> Grammar:
    conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    args = {t["function"]["name"]: _args_rule(conv, i, t) for i, t in enumerate(req.tools)}
    offered = [t["function"]["name"] for t in req.offered]
    parallel = req.parallel and FORMATS[fmt].parallel
    calls = _calls(fmt, offered, args, parallel)
    style, tag = XML_STYLES.get(fmt), TAG_STYLES.get(fmt)
    if style:
        call_rules = _xml_rules(conv, req.tools, offered, style)
    elif tag:
        call_rules = _tag_rules(conv, req.tools, offered, tag)
    elif fmt is ToolFormat.GEMMA:
        call_rules = value_grammar.gemma_rules(req.tools, offered)
    elif fmt is ToolFormat.MINIMAX_TREE:
        call_rules = value_grammar.tree_rules(req.tools, offered)
    else:
        call_rules = _call_rules(fmt, offered, args)
    schemas = strict_strings(conv.format_grammar())  # no raw control character inside a JSON string
    bounded_grammar(schemas, "tools", "tools")  # per-tool bounds do not bound many tools together
    rules = [
        f"hearth-calls ::= {calls}",
        *call_rules,
        no_markers(schemas) if thinking is Thinking.HARMONY or tags.message_end else schemas,
    ]
    if req.choice == "auto":
        return Grammar("\n".join(["root ::= hearth-calls", *rules]), _auto_triggers(fmt, thinking, tags))
    root, triggers = _forced_root(fmt, thinking, tags)
    return Grammar("\n".join([f"root ::= {root}", *rules]), triggers)


def _args_rule(conv: SchemaConverter, i: int, tool: dict[str, Any]) -> str:
    schema = tool["function"].get("parameters") or {"type": "object"}
    if not schema.get("properties") and schema.get("additionalProperties") is None:
        schema = {"type": "object"}  # no declared parameters: any object
    where = f"tools.{i}.function.parameters"
    bounded_schema(schema, where, where)
    try:
        resolved = conv.resolve_refs(copy.deepcopy(schema), f"tool{i}")
        return conv.visit(resolved, f"tool{i}-args")
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError, AttributeError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InvalidRequest(
            f"unsupported parameters schema: {message}", param=f"tools.{i}.function.parameters"
        ) from err


def _json_call(
    name: str, args_rule: str, args_key: str, name_key: str = "name", first: str = "", last: str = ""
) -> str:
    return (
        f'"{{" space {first}{lit(json.dumps(name_key))} space ":" space {lit(json.dumps(name))} space "," space '
        f'{lit(json.dumps(args_key))} space ":" space {args_rule} {last}"}}" space'
    )


# Cohere's call objects open with the call's number (`"tool_call_id": "0", `), one per line; Apriel's templates
# write the call's id after its arguments (`, "id": "..."`).
COHERE_ID = '"\\"tool_call_id\\"" space ":" space "\\"" [0-9]+ "\\"" space "," space '
APRIEL_ID = '( "," space "\\"id\\"" space ":" space "\\"" [a-zA-Z0-9_-]* "\\"" space )? '
LINES = "hearth-lines ::= [ \\t\\n]{0,24}"


def _call_rules(fmt: ToolFormat, names: list[str], args: dict[str, str]) -> list[str]:
    key = FORMATS[fmt].args_key
    if fmt is ToolFormat.HARMONY:
        # after the name: nothing, a space and the content type, or the channel (role position); never a bare
        # letter, which would read as part of the name
        header = (
            '( " " hearth-ctype | "<|channel|>commentary" ( " " hearth-ctype )? | "<|constrain|>json" )? "<|message|>"'
        )
        alts = " | ".join(f"{lit(n)} hearth-header {args[n]}" for n in names)
        return [f"hearth-call ::= {alts}", f"hearth-header ::= {header}", 'hearth-ctype ::= "<|constrain|>"? "json"']
    if fmt is ToolFormat.MISTRAL_ARGS:
        alts = " | ".join(f'{lit(n)} "[ARGS]" {args[n]}' for n in names)
        return [f"hearth-call ::= {alts}"]
    if fmt is ToolFormat.KIMI:  # the call's id, functions.NAME:INDEX, names the tool
        # The number is replaced by ours (kimi.call_id), so the model's own is only bounded: a model may not write
        # digits until max_tokens
        alts = " | ".join(f'{lit(n)} ":" [0-9]{{1,6}} {lit(kimi.ARGS_BEGIN)} {args[n]}' for n in names)
        return [f"hearth-call ::= {alts}"]
    if fmt is ToolFormat.PYTHONIC:
        alts = " | ".join(lit(n) for n in names)
        return [
            f'hearth-call ::= ( {alts} ) "(" hearth-py-args ")"',
            'hearth-py-args ::= ( [^()\'"\\\\] | hearth-py-str | "(" hearth-py-args ")" )*',
            f"hearth-py-str ::= {_quoted(chr(39))} | {_quoted(chr(34))}",
        ]
    if fmt is ToolFormat.FUNCTIONARY:
        alts = " | ".join(f'{lit(n)} ">" {args[n]}' for n in names)
        return [f"hearth-call ::= {alts}"]
    if fmt is ToolFormat.APERTUS:
        alts = " | ".join(f'"{{" space {lit(json.dumps(n))} space ":" space {args[n]} "}}" space' for n in names)
        return [f"hearth-call ::= {alts}"]
    if fmt is ToolFormat.SOLAR:  # the model's own id: letters and digits
        alts = " | ".join(f"{lit(n)} {lit(solar.ARGS)} {args[n]}" for n in names)
        return [
            f"hearth-call ::= {lit(solar.BEGIN)} [a-zA-Z0-9_-]{{1,40}} {lit(solar.NAME)} ( {alts} ) {lit(solar.END)}"
        ]
    if fmt is ToolFormat.COHERE:
        alts = " | ".join(_json_call(n, args[n], key, "tool_name", COHERE_ID) for n in names)
        return [f"hearth-call ::= {alts}", LINES]
    if fmt is ToolFormat.APRIEL:
        alts = " | ".join(_json_call(n, args[n], key, last=APRIEL_ID) for n in names)
        return [f"hearth-call ::= {alts}"]
    alts = " | ".join(_json_call(n, args[n], key) for n in names)
    return [f"hearth-call ::= {alts}"]


XML_TEXT = "hearth-xml-text"


def _xml_rules(conv: SchemaConverter, tools: list[dict[str, Any]], names: list[str], style: XmlStyle) -> list[str]:
    nl, after = ("\n" if style.newlines else ""), style.layout
    alts, rules = [], []
    for i, name, declared_schema in offered(tools, names):
        schema = conv.resolve_refs(copy.deepcopy(declared_schema), f"xml{i}")
        props, required = declared(schema)
        parts = []
        for j, (key, prop) in enumerate(props.items()):
            value = XML_TEXT if is_text(prop) else conv.visit(prop, f"xml{i}-p{j}")
            tag = " | ".join(dict.fromkeys(lit(style.parameter_tag(key, kind) + nl) for kind in _kinds(prop)))
            param = f"( {tag} ) {value} {lit(nl + style.end_parameter + after)}"
            parts.append(param if key in required else f"( {param} )?")
        if not props:  # any parameters, as text
            tag_end = " | ".join(dict.fromkeys(lit(style.parameter_end(kind)) for kind in ANY_KIND))
            named = f"{lit(style.parameter)} [a-zA-Z0-9_.-]+ ( {tag_end} ) {lit(nl)} {XML_TEXT} {lit(nl + style.end_parameter + after)}"
            parts.append(f"( {named} )*")
        rules.append(f"hearth-xml-{i} ::= " + " ".join(parts))
        if style.index_attr:  # index="N": any N
            head = style.function + name + '" index="'
            opener = f"{lit(head)} [0-9]+ {lit(chr(34) + style.tag_end + after)}"
        else:
            opener = lit(style.function_tag(name) + after)
        alts.append(f"{opener} hearth-xml-{i} {lit(style.end_function + after)}")
    return [f"hearth-call ::= {' | '.join(alts)}", *rules, without(XML_TEXT, style.end_parameter)]


# the kinds a value may have, as the templates name them (Kimi K3's type attribute; DSML tells only string or not)
ANY_KIND = ("string", "number", "boolean", "object", "array", "null")


def _kinds(schema: Any) -> tuple[str, ...]:
    """The kinds a parameter's value may be written as: the schema's types (an integer is a number)."""
    kinds = {"integer": "number"}
    types = {kinds.get(t, t) for t in schema_types(schema)} & set(ANY_KIND)
    return tuple(sorted(types)) if types else ANY_KIND


def _layout(text: str) -> str:
    """A literal whose newlines are layout the model may leave out."""
    return ' "\\n"? '.join(lit(part) for part in text.split("\n") if part) + (' "\\n"?' * text.endswith("\n"))


TAG_TEXT = "hearth-tag-text"


def _tag_rules(
    conv: SchemaConverter, tools: list[dict[str, Any]], names: list[str], style: tagged.TagStyle
) -> list[str]:
    """Tagged calls (tagged.py), held like XML-style ones: the declared parameters in their declared order, the
    required ones present, a string's value any text without the value's closing tag, any other JSON held to
    its schema; a tool that declares no parameters may name any."""
    end = style.value_end.strip("\n")
    alts, rules = [], []
    for i, name, declared_schema in offered(tools, names):
        schema = conv.resolve_refs(copy.deepcopy(declared_schema), f"tag{i}")
        props, required = declared(schema)
        parts = []
        for j, (key, prop) in enumerate(props.items()):
            value = TAG_TEXT if is_text(prop) else conv.visit(prop, f"tag{i}-p{j}")
            param = f"{_layout(style.param.format(key=key))} {value} {_layout(style.value_end)}"
            parts.append(param if key in required else f"( {param} )?")
        if not props:  # any parameters, as text
            head, tail = style.param.split("{key}")
            parts.append(f"( {_layout(head)} [a-zA-Z0-9_.-]+ {_layout(tail)} {TAG_TEXT} {_layout(style.value_end)} )*")
        rules.append(f"hearth-tag-{i} ::= " + " ".join(parts or ['""']))
        alts.append(f"{_layout(style.head.format(name=name))} hearth-tag-{i} {lit(style.call_end)}")
    return [f"hearth-call ::= {' | '.join(alts)}", *rules, without(TAG_TEXT, end)]


def _quoted(q: str) -> str:
    """A Python string literal in quote `q`, escapes included."""
    return f'{lit(q)} ( [^{q}\\\\] | "\\\\" [^\\x00] )* {lit(q)}'


def _calls(fmt: ToolFormat, names: list[str], args: dict[str, str], parallel: bool) -> str:
    """One or (parallel) several calls, markup included, from the format's opening marker on."""
    if fmt in (ToolFormat.HERMES, ToolFormat.GENERIC):
        block = '"<tool_call>" "\\n"? hearth-call "\\n"? "</tool_call>"'
        return f'{block} ( "\\n"? {block} )*' if parallel else block
    if fmt in XML_STYLES:
        style = XML_STYLES[fmt]
        if style.shared_block:  # the turn's calls in one block
            return (
                f"{lit(style.open + style.layout)} {'hearth-call+' if parallel else 'hearth-call'} {lit(style.close)}"
            )
        block = f"{lit(style.open + chr(10))} hearth-call {lit(style.close)}"
        return f'{block} ( "\\n"? {block} )*' if parallel else block
    if fmt is ToolFormat.MINIMAX_TREE:
        block = f"{lit(minimax_tree.OPEN + chr(10))} {'hearth-call+' if parallel else 'hearth-call'} {lit(minimax_tree.CLOSE)}"
        return block
    if fmt is ToolFormat.MINIMAX_JSON:  # one call object a line
        more = ' ( "\\n" hearth-call )*' if parallel else ""
        return f'{lit(minimax.OPEN)} "\\n" hearth-call{more} "\\n" {lit(minimax.CLOSE)}'
    if fmt is ToolFormat.KIMI:
        block = f"{lit(kimi.CALL_BEGIN + kimi.PREFIX)} hearth-call {lit(kimi.CALL_END)}"
        return f"{lit(kimi.SECTION_BEGIN)} {f'( {block} )+' if parallel else block} {lit(kimi.SECTION_END)}"
    if fmt is ToolFormat.GEMMA:
        block = f"{lit(gemma.OPEN + gemma.CALL)} hearth-call {lit(gemma.CLOSE)}"
        return f"( {block} )+" if parallel else block
    if fmt is ToolFormat.PYTHONIC:
        more = ' ( "," " "? hearth-call )*' if parallel else ""
        return f"{lit(pythonic.OPEN + '[')} hearth-call{more} {lit(']' + pythonic.CLOSE)}"
    if fmt is ToolFormat.NEMOTRON:
        more = ' ( "," space hearth-call )*' if parallel else ""
        return f'"<TOOLCALL>[" space hearth-call{more} "]</TOOLCALL>"'
    if fmt in (ToolFormat.MISTRAL, ToolFormat.GRANITE):
        opener = lit(OPENERS[fmt][0])
        more = ' ( "," space hearth-call )*' if parallel else ""
        return f'{opener} "[" space hearth-call{more} "]"'
    if fmt is ToolFormat.MISTRAL_ARGS:
        one = '"[TOOL_CALLS]" hearth-call'
        return f"( {one} )+" if parallel else one
    if fmt is ToolFormat.COHERE:
        more = ' ( "," hearth-lines hearth-call )*' if parallel else ""
        return f'{lit(cohere.OPEN)} "[" hearth-lines hearth-call{more} hearth-lines "]" {lit(cohere.CLOSE)}'
    if fmt is ToolFormat.APRIEL:
        more = ' ( "," space hearth-call )*' if parallel else ""
        return f'{lit(apriel.OPEN)} "[" space hearth-call{more} "]" {lit(apriel.CLOSE)}'
    if fmt in TAG_STYLES:
        calls = 'hearth-call ( "\\n"? hearth-call )*' if parallel else "hearth-call"
        tag = TAG_STYLES[fmt]
        if tag.block is None:
            return calls
        block = f'{_layout(tag.block[0])} {calls} "\\n"? {lit(tag.block[1])}'
        return f"{block} ( {tag.block_sep} {block} )*" if parallel and tag.block_sep else block
    if fmt is ToolFormat.GIGACHAT:  # one call; the assistant's message may end first
        return f'( ( {lit(gigachat.SEP)} "\\n"* )? {lit(gigachat.CALL)} "\\n"? | {lit(gigachat.CALL_31)} ) hearth-call'
    if fmt is ToolFormat.APERTUS:
        more = ' ( "," space hearth-call )*' if parallel else ""
        return f'{lit(apertus.OPEN)} "[" space hearth-call{more} "]" {lit(apertus.CLOSE)}'
    if fmt is ToolFormat.SOLAR:
        return f"{lit(solar.BLOCK)} hearth-call{' hearth-call*' if parallel else ''} {lit(solar.END_BLOCK)}?"
    if fmt is ToolFormat.FUNCTIONARY:
        one = f"{lit(functionary.OPEN)} hearth-call {lit(functionary.CLOSE)}"
        return f"{one} ( {one} )*" if parallel else one
    if fmt is ToolFormat.LLAMA3:
        return '"<|python_tag|>"? hearth-call' + (' ( ";" space hearth-call )*' if parallel else "")
    return '"to=functions." hearth-call'  # harmony


def _auto_triggers(fmt: ToolFormat, thinking: Thinking, tags: ThinkTags) -> tuple[str, ...]:
    if fmt is ToolFormat.HARMONY:
        return (r"(to=functions\.)",)
    opener = "|".join(re.escape(o) for o in OPENERS[fmt])
    anywhere = f"({opener})"
    close = re.escape(tags.close)
    bare = r"\s*(\{)" if fmt in BARE_OBJECT else None  # a Llama 3.x answer that is itself the call
    if thinking is Thinking.HARMONY:  # in the final channel
        starts = [HARMONY_FINAL]
        patterns = [HARMONY_FINAL + r"[\s\S]*?" + anywhere]
    elif thinking is Thinking.OPEN:  # after the thinking the prompt opened
        starts = [close]
        patterns = [close + r"[\s\S]*?" + anywhere]
    elif thinking is Thinking.MAY:  # at once, or after a thinking block
        starts = ["^", close]
        patterns = [r"^\s*" + START_HEAD.get(fmt, "") + anywhere, close + r"[\s\S]*?" + anywhere]
    else:
        starts = ["^"]
        patterns = [anywhere]
    if bare:
        patterns += [start + bare for start in starts]
    return tuple(patterns)


def _forced_root(fmt: ToolFormat, thinking: Thinking, tags: ThinkTags) -> tuple[str, tuple[str, ...]]:
    """The root of a grammar that requires calls, from the first token, thinking first where the model thinks."""
    if thinking is Thinking.HARMONY:
        analysis = '"<|channel|>analysis<|message|>" hearth-free "<|end|>" "<|start|>assistant"'
        free = '\nhearth-free ::= ( [^<] | "<"+ [^<|] )*'  # anything but a harmony marker
        if fmt is ToolFormat.HARMONY:
            return f'( {analysis} )? ( "<|channel|>commentary " | " " ) hearth-calls' + free, ()
        final = '"<|channel|>final" "<|constrain|>json"? "<|message|>"'
        return f"( {analysis} )? {final} hearth-calls" + free, ()
    rules = without("hearth-think", _stop(tags.close))
    calls = CALL_HEAD.get(fmt, "") + "hearth-calls"
    # the answer's own markup may come between the thinking and the calls (Kimi K3's response tags)
    markup = f"( {' | '.join(lit(m) for m in tags.lead)} )? " if tags.lead else ""
    layout = f'{markup}"\n"? "\n"?'
    close = lit(tags.close)
    if thinking is Thinking.OPEN:  # the prompt opened the block: the output starts inside it
        return f"hearth-think {close} {layout} {calls}\n{rules}", ()
    if thinking is Thinking.MAY:  # a block of thinking, or none
        return f"( {lit(tags.open)} hearth-think {close} {layout} )? {calls}\n{rules}", ()
    return calls, ()


def _stop(close: str) -> str:
    """What thinking text may not contain: the close marker, or its first part where its first character comes
    again (`without` needs it once: Kimi K3's `<|close|>think<|sep|>` stops at `<|close|>`)."""
    again = close.find(close[0], 1)
    return close if again < 0 else close[:again]

"""The tool-call parsers alone, through the chat core's pure part (serve.chat.Generation): for every format,
the same calls and the same answer text for every way the output is split, the arguments exactly the JSON
that was generated, and no markup in the answer text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from serve.chat.channels import HARMONY_MARKERS, ChannelParser, Format
from serve.chat.core import ChatResult, Generation, Text
from serve.chat.tools import xml
from serve.chat.tools.formats import FORMATS, ToolFormat
from tests.serve.test_tool_grammar import TEMPLATE_CALLS, template_calls

MARKERS = (
    "<tool_call>",
    "</tool_call>",
    "<|python_tag|>",
    "[TOOL_CALLS]",
    "[ARGS]",
    "[CALL_ID]",
    "<|tool_call|>",
    "<TOOLCALL>",
    "</TOOLCALL>",
    "<function=",
    "</function>",
    "<parameter=",
    "</parameter>",
    "<seed:tool_call>",
    "<|tool_call_start|>",
    "<|tool_call_end|>",
    "</seed:tool_call>",
    "<|START_ACTION|>",
    "<|END_ACTION|>",
    "<|START_RESPONSE|>",
    "<|END_RESPONSE|>",
    "<|START_THINKING|>",
    "<|END_THINKING|>",
    "<tool_calls>",
    "</tool_calls>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    '<function name="',
    '<param name="',
    "</param>",
    "<atem:function_calls>",
    "<atem:invoke name=",
    "<atem:parameter name=",
    "<|start|>",
    "<|message|>",
    "<|eom|>",
    "<|eot|>",
    "function call<|role_sep|>",
    "<|function_call|>",
    "<|message_sep|>",
    "<|tools_prefix|>",
    "<|tools_suffix|>",
    "<|tool_calls|>",
    "<|tool_call:begin|>",
    "<|tool_call:name|>",
    "<|tool_call:args|>",
    "<|tool_call:end|>",
    "<|calls|>",
    "<tool_calls:opensource>",
    "<tool_call:opensource>",
    "<tool_sep:opensource>",
    "<arg_key:opensource>",
    "<arg_value:opensource>",
    "<|tool_call>",
    "<tool_call|>",
    '<|"|>',
    "<|tool_calls_section_begin|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_calls_section_end|>",
    "]<]minimax[>[",
    "<think>",
    "</think>",
    *HARMONY_MARKERS,
)
NAMES = st.sampled_from(["get_weather", "get_time", "search_web", "f"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from(list('ab "\\{}[],:<|>/\né')), max_size=12)
    | st.just("</tool_call>]")
    | st.just("<|call|> [ARGS]")
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet=st.sampled_from(list('ab"{}: ')), max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
ARGS = st.dictionaries(st.text(alphabet=st.sampled_from(list("abc_")), min_size=1, max_size=6), JSON, max_size=4)
CALLS = st.lists(st.tuples(NAMES, ARGS), min_size=1, max_size=3)
CUTS = st.lists(st.integers(0, 10_000), max_size=16)


def plain(first_brace_ok: bool = True) -> st.SearchStrategy[str]:
    text = st.text(alphabet=st.sampled_from(list('ab <|>[]{}"/\n é')), max_size=30)
    return text.filter(
        lambda s: not any(m in s for m in MARKERS) and (first_brace_ok or not s.lstrip().startswith("{"))
    )


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


def run(
    pieces: list[str],
    tools: ToolFormat,
    chat: Format = Format.THINK,
    opened: bool = False,
    schemas: list[dict[str, Any]] | None = None,
) -> ChatResult:
    gen = Generation(ChannelParser(chat, opened), tools, new_id=lambda i: f"id{i}", tools=schemas)
    result = ChatResult()
    for p in pieces:
        for e in gen.piece(p):
            result.add(e)
    for e in gen.end("stop", 1, 1):
        result.add(e)
    return result


def summary(result: ChatResult) -> tuple[dict[str, str], list[tuple[str, str, Any]]]:
    calls = [(c.id, c.name, json.loads(c.arguments)) for c in result.calls]
    return result.channels, calls


def check(
    text: str,
    cuts: list[int],
    tools: ToolFormat,
    content: str,
    calls: list[tuple[str, dict]],
    chat: Format = Format.THINK,
    schemas: list[dict[str, Any]] | None = None,
) -> None:
    whole = run([text], tools, chat, schemas=schemas)
    assert summary(run(split(text, cuts), tools, chat, schemas=schemas)) == summary(whole)
    channels, got = summary(whole)
    # Kimi K2's ids are its templates' own (functions.NAME:N), whatever id maker the test gives
    ids = [f"functions.{n}:{i}" if tools is ToolFormat.KIMI else f"id{i}" for i, (n, _) in enumerate(calls)]
    assert got == [(id_, name, args) for id_, (name, args) in zip(ids, calls, strict=True)]
    assert channels.get("final", "") == content.strip()
    assert not any(m in t for t in channels.values() for m in MARKERS)
    assert whole.finish is not None and whole.finish.reason == "tool_calls"


def args_text(args: dict[str, Any], compact: bool) -> str:
    return json.dumps(args, separators=(",", ":")) if compact else json.dumps(args)


@given(pre=plain(), calls=CALLS, compact=st.booleans(), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_hermes_any_split(pre: str, calls: list, compact: bool, cuts: list[int]) -> None:
    body = "\n".join(
        f'<tool_call>\n{{"name": "{n}", "arguments": {args_text(a, compact)}}}\n</tool_call>' for n, a in calls
    )
    text = f"<think>the user wants {len(calls)} calls</think>\n\n{pre}\n{body}"
    check(text, cuts, ToolFormat.HERMES, pre, calls)


@given(calls=CALLS, tag=st.booleans(), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_llama3_any_split(calls: list, tag: bool, cuts: list[int]) -> None:
    body = "; ".join(json.dumps({"name": n, "parameters": a}) for n, a in calls)
    check(("<|python_tag|>" if tag else "  ") + body, cuts, ToolFormat.LLAMA3, "", calls)


@given(content=plain(first_brace_ok=False), cuts=CUTS)
@settings(max_examples=150, deadline=None)
def test_llama3_answer_text_is_not_a_call(content: str, cuts: list[int]) -> None:
    result = run(split(content, cuts), ToolFormat.LLAMA3)
    assert result.calls == [] and result.text("final") == content.strip()


@given(calls=CALLS, pre=plain(), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_mistral_list_any_split(calls: list, pre: str, cuts: list[int]) -> None:
    body = json.dumps([{"name": n, "arguments": a} for n, a in calls])
    check(f"{pre}[TOOL_CALLS]{body}", cuts, ToolFormat.MISTRAL, pre, calls)


@given(calls=CALLS, with_ids=st.booleans(), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_mistral_name_args_any_split(calls: list, with_ids: bool, cuts: list[int]) -> None:
    body = "".join(
        f"[TOOL_CALLS]{n}" + ("[CALL_ID]ab12cd34e" if with_ids else "") + f"[ARGS]{json.dumps(a)}" for n, a in calls
    )
    check(body, cuts, ToolFormat.MISTRAL_ARGS, "", calls)


@given(calls=CALLS, cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_granite_any_split(calls: list, cuts: list[int]) -> None:
    body = json.dumps([{"name": n, "arguments": a} for n, a in calls])
    check(f"<|tool_call|>{body}", cuts, ToolFormat.GRANITE, "", calls)


# harmony markers are special tokens: a model cannot write one inside its arguments' text
HARMONY_ARGS = ARGS.filter(lambda a: not any(m in json.dumps(a) for m in HARMONY_MARKERS))


@given(analysis=plain(), name=NAMES, args=HARMONY_ARGS, role_position=st.booleans(), compact=st.booleans(), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_harmony_any_split(
    analysis: str, name: str, args: dict, role_position: bool, compact: bool, cuts: list[int]
) -> None:
    header = (
        f"<|start|>assistant to=functions.{name}<|channel|>commentary json<|message|>"
        if role_position
        else f"<|start|>assistant<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>"
    )
    text = f"<|channel|>analysis<|message|>{analysis}<|end|>{header}{args_text(args, compact)}"
    check(text, cuts, ToolFormat.HARMONY, "", [(name, args)], chat=Format.HARMONY)
    assert run([text], ToolFormat.HARMONY, Format.HARMONY).text("analysis") == analysis.strip()


def test_generic_is_hermes_markup_in_a_harmony_final_channel() -> None:
    text = '<|channel|>final<|message|>Let me look.\n<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    result = run([text], ToolFormat.GENERIC, Format.HARMONY)
    assert summary(result) == ({"final": "Let me look."}, [("id0", "f", {})])


def test_text_around_calls_and_broken_calls() -> None:
    # text after a call is answer text; a call object that never names a tool is answer text too
    result = run(['Sure.<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call> Done.'], ToolFormat.HERMES)
    assert result.text("final") == "Sure. Done." and [c.name for c in result.calls] == ["f"]
    result = run(['{"answer": 42}'], ToolFormat.LLAMA3)
    assert result.calls == [] and result.text("final") == '{"answer": 42}'
    # arguments sent as a JSON string are decoded; a call cut off by the length limit keeps what came
    result = run(['<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>'], ToolFormat.HERMES)
    assert json.loads(result.calls[0].arguments) == {"a": 1}
    gen = Generation(ChannelParser(Format.THINK), ToolFormat.HERMES)
    events = gen.piece('<tool_call>{"name": "f", "arguments": {"a": "unfini') + gen.end("length", 1, 9)
    assert events[-1].reason == "length" and not any(isinstance(e, Text) for e in events)
    # a call with no arguments key gets an empty object
    assert run(['<tool_call>{"name": "f"}</tool_call>'], ToolFormat.HERMES).calls[0].arguments == "{}"
    # ids: unique, non-empty, Mistral's 9 letters and digits
    gen = Generation(ChannelParser(Format.THINK), ToolFormat.MISTRAL)
    ids = [
        e.id
        for e in gen.piece('[TOOL_CALLS][{"name": "f", "arguments": {}}, {"name": "g", "arguments": {}}]')
        if hasattr(e, "id")
    ]
    assert len(set(ids)) == 2 and all(len(i) == 9 and i.isalnum() for i in ids)


def test_a_next_call_cut_off_by_the_length_limit_leaves_no_partial_marker() -> None:
    gen = Generation(ChannelParser(Format.THINK), ToolFormat.HERMES, new_id=lambda i: f"id{i}")
    events = gen.piece('<tool_call>{"name": "f", "arguments": {}}</tool_call>\n<tool_') + gen.end("length", 1, 2)
    assert not any(isinstance(e, Text) for e in events)
    assert events[-1].reason == "length"


def test_thinking_tags_inside_arguments_are_text_of_the_arguments() -> None:
    text = '<think>hmm</think><tool_call>{"name": "f", "arguments": {"q": "<think>x</think>"}}</tool_call>'
    for cuts in ([], [25, 40, 47, 60, 61]):
        result = run(split(text, cuts), ToolFormat.HERMES)
        assert summary(result) == ({"analysis": "hmm"}, [("id0", "f", {"q": "<think>x</think>"})])


def kimi_calls(calls: list, compact: bool = False) -> str:
    body = "".join(
        f"<|tool_call_begin|>functions.{n}:{i}<|tool_call_argument_begin|>{args_text(a, compact)}<|tool_call_end|>"
        for i, (n, a) in enumerate(calls)
    )
    return f"<|tool_calls_section_begin|>{body}<|tool_calls_section_end|>"


@given(pre=plain(), calls=CALLS, compact=st.booleans(), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_kimi_any_split(pre: str, calls: list, compact: bool, cuts: list[int]) -> None:
    check(f"{pre}{kimi_calls(calls, compact)}", cuts, ToolFormat.KIMI, pre, calls)


def test_kimi_text_after_the_section_and_ids_as_names() -> None:
    result = run([f"Let me look.\n{kimi_calls([('f', {'a': 1})])}\nDone."], ToolFormat.KIMI)
    assert summary(result) == ({"final": "Let me look.\nDone."}, [("functions.f:0", "f", {"a": 1})])
    # a name with dots and no index: the id is the template's for the conversation's first call
    text = "<|tool_calls_section_begin|><|tool_call_begin|>functions.a.b<|tool_call_argument_begin|>{}<|tool_call_end|>"
    assert summary(run([text], ToolFormat.KIMI))[1] == [("functions.a.b:0", "a.b", {})]


@given(pre=plain(), calls=CALLS, compact=st.booleans(), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_minimax_json_lines_any_split(pre: str, calls: list, compact: bool, cuts: list[int]) -> None:
    body = "".join(f'{{"name": "{n}", "arguments": {args_text(a, compact)}}}\n' for n, a in calls)
    check(f"{pre}\n<tool_calls>\n{body}</tool_calls>", cuts, ToolFormat.MINIMAX_JSON, pre, calls)


def test_minimax_json_lines_broken_off() -> None:
    # the section closed before a call, or text where a call object should be: answer text
    result = run(['Hm. <tool_calls>\n{"name": "f", "arguments": {}}\nno more</tool_calls>'], ToolFormat.MINIMAX_JSON)
    assert summary(result) == ({"final": "Hm.no more"}, [("id0", "f", {})])
    # cut off by the length limit inside the second object: the first call and what came of the second
    result = run(
        ['<tool_calls>\n{"name": "f", "arguments": {}}\n{"name": "g", "arguments": {"a": 1'], ToolFormat.MINIMAX_JSON
    )
    assert [c.name for c in result.calls] == ["f", "g"]


@given(pre=plain(), calls=CALLS, cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_nemotron_any_split(pre: str, calls: list, cuts: list[int]) -> None:
    body = json.dumps([{"name": n, "arguments": a} for n, a in calls])
    check(f"{pre}<TOOLCALL>{body}</TOOLCALL>", cuts, ToolFormat.NEMOTRON, pre, calls)


@given(pre=plain(), calls=CALLS, wrapped=st.booleans(), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_cohere_any_split(pre: str, calls: list, wrapped: bool, cuts: list[int]) -> None:
    items = ",\n    ".join(
        json.dumps({"tool_call_id": str(i), "tool_name": n, "parameters": a}) for i, (n, a) in enumerate(calls)
    )
    answer = f"<|START_RESPONSE|>{pre}<|END_RESPONSE|>" if wrapped else pre
    check(f"{answer}<|START_ACTION|>[\n    {items}\n]<|END_ACTION|>", cuts, ToolFormat.COHERE, pre, calls)


def test_cohere_answer_markers_never_reach_the_answer() -> None:
    text = "<|START_THINKING|><|END_THINKING|><|START_RESPONSE|>It is sunny.<|END_RESPONSE|>"
    for cuts in ([], [3, 18, 19, 25, 30, 40, 50, 57, 70]):
        result = run(split(text, cuts), ToolFormat.COHERE)
        assert result.calls == [] and result.text("final") == "It is sunny."


@given(pre=plain(), calls=CALLS, cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_apriel_any_split(pre: str, calls: list, cuts: list[int]) -> None:
    body = json.dumps([{"name": n, "arguments": a, "id": f"c{i}"} for i, (n, a) in enumerate(calls)])
    check(f"{pre}\n<tool_calls>{body}</tool_calls>", cuts, ToolFormat.APRIEL, pre, calls)


@given(pre=plain(), calls=CALLS, compact=st.booleans(), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_functionary_any_split(pre: str, calls: list, compact: bool, cuts: list[int]) -> None:
    body = "".join(f"<function={n}>{args_text(a, compact)}</function>" for n, a in calls)
    check(f"{pre}{body}", cuts, ToolFormat.FUNCTIONARY, pre, calls)


@given(pre=plain(), calls=CALLS, compact=st.booleans(), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_apertus_any_split(pre: str, calls: list, compact: bool, cuts: list[int]) -> None:
    body = ", ".join(f"{{{json.dumps(n)}: {args_text(a, compact)}}}" for n, a in calls)
    check(f"{pre}<|tools_prefix|>[{body}]<|tools_suffix|>", cuts, ToolFormat.APERTUS, pre, calls)


@given(pre=plain(), name=NAMES, args=ARGS, v31=st.booleans(), compact=st.booleans(), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_gigachat_any_split(pre: str, name: str, args: dict, v31: bool, compact: bool, cuts: list[int]) -> None:
    """GigaChat 3's call is a role message after the assistant's; 3.1's a marker in the assistant's."""
    call = f'{{"name": "{name}", "arguments": {args_text(args, compact)}}}'
    text = f"{pre}<|function_call|>{call}" if v31 else f"{pre}<|message_sep|>\n\nfunction call<|role_sep|>\n{call}"
    check(text, cuts, ToolFormat.GIGACHAT, pre, [(name, args)])


@given(pre=plain(), calls=CALLS, compact=st.booleans(), ended=st.booleans(), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_solar_any_split(pre: str, calls: list, compact: bool, ended: bool, cuts: list[int]) -> None:
    body = "".join(
        f"<|tool_call:begin|>a1b2c3d4e{i}<|tool_call:name|>{n}<|tool_call:args|>{args_text(a, compact)}<|tool_call:end|>"
        for i, (n, a) in enumerate(calls)
    )
    check(f"{pre}<|tool_calls|>{body}" + "<|calls|>" * ended, cuts, ToolFormat.SOLAR, pre, calls)


# -- XML-style calls: values are text, typed by the tool's schema -----------------------------------------------

XML_TEXT = st.text(alphabet=st.sampled_from(list('ab 3{}[]"<>=/\n\té')), max_size=16).filter(
    lambda s: "</parameter>" not in s
)
XML_VALUES = (
    XML_TEXT
    | st.just("42")  # a string that reads like a number stays a string
    | st.just("\n<parameter=x>\n1\n</function>")  # markup inside a value is the value's text
    | st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.integers(0, 9), max_size=3)
    | st.dictionaries(st.sampled_from(["k", "v"]), st.text(alphabet="ab<", max_size=3), max_size=2)
)
XML_ARGS = st.dictionaries(
    st.text(alphabet=st.sampled_from(list("abc_")), min_size=1, max_size=6), XML_VALUES, max_size=4
)
XML_CALLS = st.lists(st.tuples(NAMES, XML_ARGS), min_size=1, max_size=3)


def xml_value(v: Any) -> str:
    """As Qwen3-Coder's template writes a value: strings as they are, objects and lists as JSON, the rest as
    Python's str."""
    return json.dumps(v) if isinstance(v, dict | list) else v if isinstance(v, str) else str(v)


def xml_schemas(calls: list) -> list[dict[str, Any]]:
    """One tool per name, each parameter typed as its value (a name called twice: the first call's types)."""
    kinds = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}
    props: dict[str, dict[str, Any]] = {}
    for name, args in calls:
        for k, v in args.items():
            props.setdefault(name, {}).setdefault(k, {"type": kinds.get(type(v), "null")})
    return [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": p}}}
        for n, p in props.items()
    ]


def consistent(calls: list) -> bool:
    """A name called twice uses one type per parameter (one schema serves both calls)."""
    seen: dict[tuple[str, str], type] = {}
    return all(seen.setdefault((n, k), type(v)) is type(v) for n, a in calls for k, v in a.items())


@given(pre=plain(), calls=XML_CALLS.filter(consistent), cuts=CUTS)
@settings(max_examples=300, deadline=None)
def test_xml_any_split(pre: str, calls: list, cuts: list[int]) -> None:
    body = "".join(
        "\n<tool_call>\n<function=" + n + ">\n"
        + "".join(f"<parameter={k}>\n{xml_value(v)}\n</parameter>\n" for k, v in a.items())
        + "</function>\n</tool_call>"
        for n, a in calls
    )  # fmt: skip
    text = f"<think>the user wants {len(calls)} calls</think>\n\n{pre}{body}"
    check(text, cuts, ToolFormat.XML, pre, calls, schemas=xml_schemas(calls))


@given(calls=XML_CALLS.filter(consistent), cuts=CUTS)
@settings(max_examples=200, deadline=None)
def test_seed_xml_any_split(calls: list, cuts: list[int]) -> None:
    body = "".join(
        "<seed:tool_call>\n<function=" + n + ">\n"
        + "".join(f"<parameter={k}>{xml_value(v)}</parameter>\n" for k, v in a.items())
        + "</function>\n</seed:tool_call>"
        for n, a in calls
    )  # fmt: skip
    check(body, cuts, ToolFormat.SEED_XML, "", calls, schemas=xml_schemas(calls))


# XML-style calls with names in attributes, as each template writes them (strings as they are, others as JSON)
NAMED_XML = {
    ToolFormat.DEEPSEEK_V32: xml.DEEPSEEK_V32,
    ToolFormat.DEEPSEEK_V4: xml.DEEPSEEK_V4,
    ToolFormat.MINIMAX_XML: xml.MINIMAX,
    ToolFormat.KIMI_K3: xml.KIMI_K3,
}


def kind_of(v: Any) -> str:
    """A value's kind as the templates name it (Kimi K3's `xtml_type`)."""
    if isinstance(v, bool):
        return "boolean"
    if v is None:
        return "null"
    kinds = {str: "string", int: "number", float: "number", dict: "object", list: "array"}
    return kinds[type(v)]


def named_xml_call(style: xml.XmlStyle, index: int, name: str, args: dict[str, Any]) -> str:
    """As each template writes a call: strings as they are, other values as JSON."""
    params = "".join(
        style.parameter_tag(k, kind_of(v))
        + (v if isinstance(v, str) else json.dumps(v))
        + style.end_parameter
        + style.layout
        for k, v in args.items()
    )
    return f"{style.function_tag(name, index + 1)}{style.layout}{params}{style.end_function}{style.layout}"


@given(fmt=st.sampled_from(sorted(NAMED_XML, key=str)), pre=plain(), calls=XML_CALLS.filter(consistent), cuts=CUTS)
@settings(max_examples=300, deadline=None)
def test_named_xml_any_split(fmt: ToolFormat, pre: str, calls: list, cuts: list[int]) -> None:
    style = NAMED_XML[fmt]
    body = "".join(named_xml_call(style, i, n, a) for i, (n, a) in enumerate(calls))
    frame = "\n\n" if not style.skip else style.skip[1]  # Kimi K3: the response closes before the calls
    text = f"{pre}{frame}{style.open}{style.layout}{body}{style.close}"
    check(text, cuts, fmt, pre, calls, schemas=xml_schemas(calls))


def test_kimi_k3_drops_its_response_tags_and_reads_the_type_attribute() -> None:
    style = xml.KIMI_K3
    call = named_xml_call(style, 0, "f", {"n": 3, "s": "3", "o": {"a": [1]}})
    text = f"Let me look.<|close|>response<|sep|>{style.open}{call}{style.close}<|close|>message<|sep|>"
    assert summary(run([text], ToolFormat.KIMI_K3)) == (
        {"final": "Let me look."},
        [("id0", "f", {"n": 3, "s": "3", "o": {"a": [1]}})],
    )


def test_deepseek_string_attribute_says_text_or_json() -> None:
    style = xml.DEEPSEEK_V4
    call = (
        f"{style.open}\n{style.function_tag('f')}\n"
        f"{style.parameter_tag('n', 'number')}3{style.end_parameter}\n{style.parameter_tag('s', 'string')}3{style.end_parameter}\n"
        f'{style.parameter_tag("o", "object")}{{"a": [1]}}{style.end_parameter}\n{style.end_function}\n{style.close}'
    )
    # no schema at hand: the attribute alone types the value; with one that says string, the attribute still wins
    assert summary(run([call], ToolFormat.DEEPSEEK_V4))[1] == [("id0", "f", {"n": 3, "s": "3", "o": {"a": [1]}})]
    schemas = xml_schemas([("f", {"n": "x", "s": 1, "o": "x"})])
    got = summary(run([call], ToolFormat.DEEPSEEK_V4, schemas=schemas))[1]
    assert got == [("id0", "f", {"n": 3, "s": "3", "o": {"a": [1]}})]


def test_xml_values_without_a_schema_and_the_model_s_slips() -> None:
    # no tools at hand: a value that reads as a JSON literal other than a string is that value, else text
    text = (
        "<tool_call>\n<function=f>\n<parameter=n>\n3\n</parameter>\n<parameter=s>\nhi there\n</parameter>\n"
        '<parameter=o>\n{"a": [1]}\n</parameter>\n<parameter=q>\n"quoted"\n</parameter>\n</function>\n</tool_call>'
    )
    assert summary(run([text], ToolFormat.XML))[1] == [
        ("id0", "f", {"n": 3, "s": "hi there", "o": {"a": [1]}, "q": '"quoted"'})
    ]
    # a value the schema types as integer that is no integer stays text; a string that reads as a number stays text
    schemas = xml_schemas([("f", {"n": 1, "s": "x"})])
    text = "<tool_call>\n<function=f>\n<parameter=n>\nmany\n</parameter>\n<parameter=s>\n7\n</parameter>\n</function>"
    assert summary(run([text], ToolFormat.XML, schemas=schemas))[1] == [("id0", "f", {"n": "many", "s": "7"})]
    # cut off by the length limit: what came is closed into an object
    result = run(["Let me see.\n<tool_call>\n<function=f>\n<parameter=s>\nab"], ToolFormat.XML, schemas=schemas)
    assert summary(result) == ({"final": "Let me see."}, [("id0", "f", {"s": "ab"})])


@given(pre=plain(), calls=XML_CALLS.filter(consistent), newlines=st.booleans(), cuts=CUTS)
@settings(max_examples=300, deadline=None)
def test_glm_any_split(pre: str, calls: list, newlines: bool, cuts: list[int]) -> None:
    """As Laguna's templates write calls (newlines between the tags), and as Spark 2.5's (none)."""
    nl = "\n" if newlines else ""
    body = nl.join(
        f"<tool_call>{n}{nl}"
        + "".join(f"<arg_key>{k}</arg_key>{nl}<arg_value>{xml_value(v)}</arg_value>{nl}" for k, v in a.items())
        + "</tool_call>"
        for n, a in calls
    )
    check(f"<think>calls</think>{pre}{nl}{body}", cuts, ToolFormat.GLM, pre, calls, schemas=xml_schemas(calls))


@given(pre=plain(), calls=XML_CALLS.filter(consistent), cuts=CUTS)
@settings(max_examples=300, deadline=None)
def test_hy3_any_split(pre: str, calls: list, cuts: list[int]) -> None:
    """As Tencent Hy3's template writes calls: one block, a newline after each tag pair."""
    tag = lambda t: t.replace(">", ":opensource>")  # noqa: E731
    body = "".join(
        tag("<tool_call>") + n + tag("<tool_sep>") + "\n"
        + "".join(
            tag("<arg_key>") + k + tag("</arg_key>") + "\n" + tag("<arg_value>") + xml_value(v) + tag("</arg_value>") + "\n"
            for k, v in a.items()
        )
        + tag("</tool_call>") + "\n"
        for n, a in calls
    )  # fmt: skip
    text = f"{pre}{tag('<tool_calls>')}\n{body}{tag('</tool_calls>')}"
    check(text, cuts, ToolFormat.HY3, pre, calls, schemas=xml_schemas(calls))


def atem_value(v: Any) -> str:
    """As Muse Glimmer's template writes a value: strings and numbers as they are, the rest as JSON."""
    return (
        v if isinstance(v, str) else str(v) if isinstance(v, int | float) and not isinstance(v, bool) else json.dumps(v)
    )


@given(pre=plain(), calls=XML_CALLS.filter(consistent), cuts=CUTS)
@settings(max_examples=300, deadline=None)
def test_atem_any_split(pre: str, calls: list, cuts: list[int]) -> None:
    """As Muse Glimmer's template writes a turn: a reasoning message to=self, then each call a message of its own;
    the headers and end markers never reach the answer text."""
    body = "<|eom|>".join(
        f'<|start|>assistant to={n}<|message|><atem:function_calls>\n<atem:invoke name="{n}">\n'
        + "".join(f'<atem:parameter name="{k}">{atem_value(v)}</atem:parameter>\n' for k, v in a.items())
        + "</atem:invoke>\n</atem:function_calls>"
        for n, a in calls
    )
    text = f" to=self<|message|>{pre}<|eom|>{body}<|eot|>"
    check(text, cuts, ToolFormat.ATEM, pre, calls, schemas=xml_schemas(calls))


def test_atem_answer_is_the_user_message() -> None:
    text = " to=user<|message|>It is sunny.<|eot|>"
    for cuts in ([], [1, 4, 10, 19, 22, 30]):
        result = run(split(text, cuts), ToolFormat.ATEM)
        assert result.calls == [] and result.text("final") == "It is sunny."


def minicpm_value(v: Any) -> str:
    """As MiniCPM 5's template writes a value: a string with <, & or a newline in CDATA, other strings as they
    are, anything else as Python's str."""
    if isinstance(v, str):
        return f"<![CDATA[{v}]]>" if any(c in v for c in "<&\n") else v
    return str(v)


@given(pre=plain(), calls=XML_CALLS.filter(consistent).filter(lambda cs: "]]>" not in repr(cs)), cuts=CUTS)
@settings(max_examples=300, deadline=None)
def test_minicpm_any_split(pre: str, calls: list, cuts: list[int]) -> None:
    body = "\n".join(
        f'<function name="{n}">'
        + "".join(f'<param name="{k}">{minicpm_value(v)}</param>' for k, v in a.items())
        + "</function>"
        for n, a in calls
    )
    check(f"{pre}\n{body}", cuts, ToolFormat.MINICPM, pre, calls, schemas=xml_schemas(calls))


# -- pythonic calls: Python literals as keyword arguments -------------------------------------------------------

PY_VALUES = (
    st.text(alphabet=st.sampled_from(list("ab '\"()[],=\\\né")), max_size=12)
    | st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.integers(0, 9) | st.text(alphabet="a),'", max_size=3), max_size=3)
    | st.dictionaries(st.sampled_from(["k", "v"]), st.booleans() | st.text(alphabet="a)", max_size=2), max_size=2)
)
PY_ARGS = st.dictionaries(
    st.text(alphabet=st.sampled_from(list("abc_")), min_size=1, max_size=6), PY_VALUES, max_size=4
)


def py_value(v: Any) -> str:
    """A value as a Python literal (objects as JSON, as LFM2.5's template writes them)."""
    return json.dumps(v) if isinstance(v, dict) else repr(v)


@given(pre=plain(), calls=st.lists(st.tuples(NAMES, PY_ARGS), min_size=1, max_size=3), cuts=CUTS)
@settings(max_examples=300, deadline=None)
def test_pythonic_any_split(pre: str, calls: list, cuts: list[int]) -> None:
    body = ", ".join(f"{n}(" + ", ".join(f"{k}={py_value(v)}" for k, v in a.items()) + ")" for n, a in calls)
    check(f"{pre}<|tool_call_start|>[{body}]<|tool_call_end|>", cuts, ToolFormat.PYTHONIC, pre, calls)


# -- the calls real templates write (rendered by transformers) read back as the calls they were -------------------


@pytest.mark.parametrize(("name", "fmt", "opener", "closer"), TEMPLATE_CALLS)
def test_parsers_read_the_calls_their_templates_write(name: str, fmt: ToolFormat, opener: str, closer: str) -> None:
    from tests.serve.test_tool_prompts import PARALLEL, TOOLS, hf_tools

    text = template_calls(name, opener, closer)
    if fmt is ToolFormat.ATEM:  # after the prompt's `<|start|>assistant` the output opens with the header's rest
        text = " to=get_weather<|message|>" + text
    want = [(c["name"], c["arguments"]) for *_, extra in PARALLEL for c in extra.get("calls", ())]
    if not FORMATS[fmt].parallel:  # the template wrote the first call only
        want = want[:1]
    for cuts in ([], list(range(0, len(text), 7)), list(range(0, len(text), 3))):
        result = run(split(text, cuts), fmt, schemas=hf_tools(TOOLS))
        assert summary(result) == ({}, [(f"id{i}", n, a) for i, (n, a) in enumerate(want)])


# -- Gemma 4 calls: its own object syntax, strings between <|"|> marks ---------------------------------------------

GEMMA_KEYS = st.text(alphabet=st.sampled_from(list("abc_")), min_size=1, max_size=6)
GEMMA_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from(list('ab <|>"{}[],:\n\\é')), max_size=12).filter(lambda s: '<|"|>' not in s)
    | st.just("42")  # a string that reads like a number stays a string: it is between marks
)
GEMMA_VALUES = st.recursive(
    GEMMA_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(GEMMA_KEYS, inner, max_size=3),
    max_leaves=8,
)


def gemma_value(v: Any) -> str:
    """As Gemma 4's template writes an argument (`format_argument(value, escape_keys=False)`)."""
    if isinstance(v, str):
        return f'<|"|>{v}<|"|>'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{gemma_value(x)}" for k, x in sorted(v.items())) + "}"
    if isinstance(v, list):
        return "[" + ",".join(gemma_value(x) for x in v) + "]"
    return str(v)  # None, numbers: as Jinja prints them


@given(
    pre=plain(),
    calls=st.lists(st.tuples(NAMES, st.dictionaries(GEMMA_KEYS, GEMMA_VALUES, max_size=4)), min_size=1, max_size=3),
    cuts=CUTS,
)
@settings(max_examples=300, deadline=None)
def test_gemma_any_split(pre: str, calls: list, cuts: list[int]) -> None:
    body = "".join(f"<|tool_call>call:{n}{gemma_value(a)}<tool_call|>" for n, a in calls)
    check(f"{pre}{body}", cuts, ToolFormat.GEMMA, pre, calls)


def test_gemma_values_typed_by_the_schema_and_the_model_s_slips() -> None:
    schemas = xml_schemas([("f", {"n": 1, "s": "x"})])
    # a bare value where the schema wants a string is that text; a bare word where it wants a number stays text
    text = "<|tool_call>call:f{n:many,s:7}<tool_call|>"
    assert summary(run([text], ToolFormat.GEMMA, schemas=schemas))[1] == [("id0", "f", {"n": "many", "s": "7"})]
    # a key without its value is null; keys between marks are keys
    text = '<|tool_call>call:f{<|"|>a:b<|"|>:1,k:}<tool_call|>'
    assert summary(run([text], ToolFormat.GEMMA))[1] == [("id0", "f", {"a:b": 1, "k": None})]
    # cut off by the length limit: what came is closed into an object
    result = run(['Let me see.<|tool_call>call:f{s:<|"|>ab'], ToolFormat.GEMMA, schemas=schemas)
    assert summary(result) == ({"final": "Let me see."}, [("id0", "f", {"s": "ab"})])
    result = run(["<|tool_call>call:f{o:{a:[1,"], ToolFormat.GEMMA)
    assert summary(result)[1] == [("id0", "f", {"o": {"a": [1]}})]


# -- MiniMax-M3 calls: arguments as nested elements, every tag behind a mark --------------------------------------

M3 = "]<]minimax[>["
M3_TEXT = st.text(alphabet=st.sampled_from(list('ab 3<>[]/"\n\\é')), max_size=12).filter(lambda s: M3 not in s)
M3_SCALARS = (
    M3_TEXT
    | st.just("42")
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
)
M3_VALUES = (
    M3_SCALARS
    | st.lists(st.integers(0, 9), min_size=1, max_size=3)
    | st.lists(M3_TEXT, min_size=1, max_size=3)
    | st.dictionaries(GEMMA_KEYS, M3_SCALARS, min_size=1, max_size=2)
    | st.lists(st.dictionaries(GEMMA_KEYS, st.integers(0, 9), min_size=1, max_size=2), min_size=1, max_size=2)
)


def m3_value(v: Any) -> str:
    """As MiniMax-M3's template writes a value (`to_xml`)."""
    if isinstance(v, dict):
        return "".join(f"{M3}<{k}>{m3_value(x)}{M3}</{k}>" for k, x in v.items())
    if isinstance(v, list):
        return "".join(f"{M3}<item>{m3_value(x)}{M3}</item>" for x in v)
    return json.dumps(v) if isinstance(v, bool) else str(v)


def schema_of(v: Any) -> dict[str, Any]:
    """The schema a tool would declare for a value (a list's entries all of its first one's kind)."""
    kinds = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if isinstance(v, dict):
        return {"type": "object", "properties": {k: schema_of(x) for k, x in v.items()}}
    if isinstance(v, list):
        return {"type": "array", "items": schema_of(v[0])}
    return {"type": kinds[type(v)]}


def m3_schemas(calls: list) -> list[dict[str, Any]]:
    props: dict[str, dict[str, Any]] = {}
    for name, args in calls:
        for k, v in args.items():
            props.setdefault(name, {}).setdefault(k, schema_of(v))
    return [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": p}}}
        for n, p in props.items()
    ]


def m3_consistent(calls: list) -> bool:
    seen: dict[tuple[str, str], Any] = {}
    return all(seen.setdefault((n, k), schema_of(v)) == schema_of(v) for n, a in calls for k, v in a.items())


@given(
    pre=plain(),
    calls=st.lists(st.tuples(NAMES, st.dictionaries(GEMMA_KEYS, M3_VALUES, max_size=3)), min_size=1, max_size=3).filter(
        m3_consistent
    ),
    cuts=CUTS,
)
@settings(max_examples=300, deadline=None)
def test_minimax_tree_any_split(pre: str, calls: list, cuts: list[int]) -> None:
    body = "".join(
        f'{M3}<invoke name="{n}">'
        + "".join(f"{M3}<{k}>{m3_value(v)}{M3}</{k}>" for k, v in a.items())
        + f"{M3}</invoke>\n"
        for n, a in calls
    )
    text = f"{pre}{M3}<tool_call>\n{body}{M3}</tool_call>"
    check(text, cuts, ToolFormat.MINIMAX_TREE, pre, calls, schemas=m3_schemas(calls))


def test_minimax_tree_without_a_schema_and_cut_off() -> None:
    # no tools at hand: elements holding <item>s are lists, others objects, a plain value a JSON literal or text
    text = f'{M3}<tool_call>\n{M3}<invoke name="f">{M3}<a>{M3}<item>1{M3}</item>{M3}<item>x{M3}</item>{M3}</a>'
    text += f"{M3}<o>{M3}<k>true{M3}</k>{M3}</o>{M3}<s>hi there{M3}</s>{M3}</invoke>\n{M3}</tool_call>"
    assert summary(run([text], ToolFormat.MINIMAX_TREE))[1] == [
        ("id0", "f", {"a": [1, "x"], "o": {"k": True}, "s": "hi there"})
    ]
    result = run([f'Ok.{M3}<tool_call>\n{M3}<invoke name="f">{M3}<o>{M3}<k>ab'], ToolFormat.MINIMAX_TREE)
    assert summary(result) == ({"final": "Ok."}, [("id0", "f", {"o": {"k": "ab"}})])


MUSE_CALL = (
    " to=self<|message|>Paris weather, so call the tool.<|eom|><|start|>assistant to=get_weather<|message|>"
    '<atem:function_calls>\n<atem:invoke name="get_weather">\n<atem:parameter name="city">Paris</atem:parameter>\n'
    "</atem:invoke>\n</atem:function_calls><|eot|>"
)


def test_atem_after_muse_reasoning_at_every_split() -> None:
    """Through Muse Glimmer's channel parser: the to=self message is the reasoning, the call a call."""
    for cut in range(len(MUSE_CALL) + 1):
        result = run([MUSE_CALL[:cut], MUSE_CALL[cut:]], ToolFormat.ATEM, Format.MUSE)
        assert summary(result) == (
            {"analysis": "Paris weather, so call the tool."},
            [("id0", "get_weather", {"city": "Paris"})],
        ), cut


def test_atem_answer_after_muse_reasoning_streams() -> None:
    """The channel parser takes the answer's header away; the call parser, which holds an output's opening while it
    may be a header's rest (` to=NAME`), lets the answer through as it comes."""
    text = " to=self<|message|>Sunny, say so.<|eom|><|start|>assistant to=user<|message|>It is sunny today.<|eot|>"
    gen = Generation(ChannelParser(Format.MUSE), ToolFormat.ATEM, new_id=lambda i: f"id{i}")
    shown = ""
    for c in text[: text.index("today")]:
        shown += "".join(e.text for e in gen.piece(c) if isinstance(e, Text) and e.channel == "final")
    assert shown.strip() == "It is sunny"
    result = run(split(text, [7, 40, 60]), ToolFormat.ATEM, Format.MUSE)
    assert summary(result) == ({"analysis": "Sunny, say so.", "final": "It is sunny today."}, [])

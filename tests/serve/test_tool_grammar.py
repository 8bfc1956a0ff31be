"""Tool grammars alone: llama.cpp accepts every one (each format, choice and way of thinking), the lazy triggers
fire at the call's opening marker and never inside the thinking, and a schema the converter cannot express is a
400 naming the tool."""

from __future__ import annotations

import ctypes
import re

import llama_cpp as ll
import pytest

from serve.chat.channels import Thinking
from serve.chat.tools.formats import FORMATS, ToolFormat
from serve.chat.tools.grammar import build
from serve.chat.tools.request import ToolRequest
from serve.engine.engine import Model
from serve.errors import InvalidRequest
from testkit.tiny_gguf import build_tiny_gguf

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
PING = {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}
CHOICES = [
    ToolRequest([WEATHER, PING], "auto"),
    ToolRequest([WEATHER, PING], "required"),
    ToolRequest([WEATHER, PING], "named", "ping", parallel=False),
    ToolRequest([WEATHER], "auto", parallel=False),
]


def test_llama_cpp_accepts_every_tool_grammar() -> None:
    model = Model(build_tiny_gguf())
    try:
        for fmt in ToolFormat:
            for req in CHOICES:
                for thinking in Thinking:
                    g = build(req, fmt, thinking)
                    if g.triggers:
                        patterns = (ctypes.c_char_p * len(g.triggers))(*(t.encode() for t in g.triggers))
                        smpl = ll.llama_sampler_init_grammar_lazy_patterns(
                            model.vocab, g.text.encode(), b"root", patterns, len(g.triggers), (ll.llama_token * 0)(), 0
                        )
                    else:
                        smpl = ll.llama_sampler_init_grammar(model.vocab, g.text.encode(), b"root")
                    assert smpl, (fmt, req.choice, thinking, g.text)
                    ll.llama_sampler_free(smpl)
                    assert (req.choice == "auto") == bool(g.triggers)  # forced: from the first token
    finally:
        model.close()


def first_trigger(patterns: tuple[str, ...], output: str) -> int | None:
    """Where llama.cpp would start the grammar: the first capture group of the first pattern found."""
    for p in patterns:
        m = re.search(p, output)
        if m:
            return next(m.start(i) for i in range(1, (m.lastindex or 0) + 1) if m.group(i))
    return None


@pytest.mark.parametrize(
    ("fmt", "thinking", "output", "start"),
    [
        (ToolFormat.HERMES, Thinking.MAY, "<think>maybe <tool_call> later</think>\n\n<tool_call>{", "<tool_call>{"),
        (ToolFormat.HERMES, Thinking.MAY, "<tool_call>{", "<tool_call>{"),
        (ToolFormat.HERMES, Thinking.OPEN, "hmm <tool_call></think>Sure.<tool_call>{", "<tool_call>{"),
        (ToolFormat.HERMES, Thinking.NONE, "Sure. <tool_call>{", "<tool_call>{"),
        (
            ToolFormat.GENERIC,
            Thinking.HARMONY,
            "<|channel|>analysis<|message|>use <tool_call><|end|><|start|>assistant<|channel|>final<|message|>Ok <tool_call>{",
            "<tool_call>{",
        ),
        (ToolFormat.LLAMA3, Thinking.NONE, '  {"name"', '{"name"'),
        (ToolFormat.LLAMA3, Thinking.NONE, "<|python_tag|>{", "<|python_tag|>{"),
        (ToolFormat.LLAMA3, Thinking.NONE, 'The answer is {"a": 1}', None),
        (ToolFormat.MISTRAL, Thinking.NONE, "[TOOL_CALLS][{", "[TOOL_CALLS][{"),
        (ToolFormat.GRANITE, Thinking.NONE, "<|tool_call|>[{", "<|tool_call|>[{"),
        (ToolFormat.NEMOTRON, Thinking.NONE, "Sure. <TOOLCALL>[{", "<TOOLCALL>[{"),
        (ToolFormat.PYTHONIC, Thinking.MAY, "<think>x</think>Ok <|tool_call_start|>[", "<|tool_call_start|>["),
        (
            ToolFormat.XML,
            Thinking.MAY,
            "<think>a <tool_call></think>\n<tool_call>\n<function=",
            "<tool_call>\n<function=",
        ),
        (ToolFormat.SEED_XML, Thinking.NONE, "Ok <seed:tool_call>\n", "<seed:tool_call>\n"),
        (ToolFormat.COHERE, Thinking.NONE, "<|START_ACTION|>[\n", "<|START_ACTION|>[\n"),
        (ToolFormat.APRIEL, Thinking.NONE, "Ok <tool_calls>[", "<tool_calls>["),
        (ToolFormat.FUNCTIONARY, Thinking.NONE, "Ok <function=get_weather>{", "<function=get_weather>{"),
        (
            ToolFormat.GLM,
            Thinking.MAY,
            "<think>a <tool_call></think>\n<tool_call>get_weather",
            "<tool_call>get_weather",
        ),
        (
            ToolFormat.GIGACHAT,
            Thinking.NONE,
            "<|message_sep|>\n\nfunction call<|role_sep|>\n{",
            "function call<|role_sep|>\n{",
        ),
        (ToolFormat.GIGACHAT, Thinking.NONE, '<|function_call|>{"', '<|function_call|>{"'),
        (ToolFormat.APERTUS, Thinking.NONE, 'Ok <|tools_prefix|>[{"', '<|tools_prefix|>[{"'),
        (ToolFormat.SOLAR, Thinking.NONE, "<|tool_calls|><|tool_call:begin|>", "<|tool_calls|><|tool_call:begin|>"),
        (ToolFormat.HY3, Thinking.NONE, "Ok <tool_calls:opensource>\n", "<tool_calls:opensource>\n"),
        (ToolFormat.MINICPM, Thinking.NONE, 'Ok <function name="get_weather">', '<function name="get_weather">'),
        (ToolFormat.GEMMA, Thinking.NONE, "Sure. <|tool_call>call:f{", "<|tool_call>call:f{"),
        (ToolFormat.MINIMAX_JSON, Thinking.NONE, "Ok.\n<tool_calls>\n{", "<tool_calls>\n{"),
        (ToolFormat.KIMI_K3, Thinking.NONE, "Ok.<|close|>response<|sep|><|open|>tools<|sep|>", "<|open|>tools<|sep|>"),
        (ToolFormat.MINIMAX_TREE, Thinking.NONE, "Ok.]<]minimax[>[<tool_call>\n", "]<]minimax[>[<tool_call>\n"),
        (
            ToolFormat.KIMI,
            Thinking.NONE,
            "Ok.<|tool_calls_section_begin|><|tool_call_begin|>",
            "<|tool_calls_section_begin|><|tool_call_begin|>",
        ),
        (ToolFormat.MINIMAX_XML, Thinking.MAY, "<think>a</think>\n<minimax:tool_call>\n", "<minimax:tool_call>\n"),
        (
            ToolFormat.DEEPSEEK_V4,
            Thinking.OPEN,
            "x</think>\n\n<\uff5cDSML\uff5ctool_calls>",
            "<\uff5cDSML\uff5ctool_calls>",
        ),
        (
            ToolFormat.HARMONY,
            Thinking.HARMONY,
            "<|channel|>analysis<|message|>call it<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather",
            "to=functions.get_weather",
        ),
    ],
)
def test_auto_triggers_start_at_the_call_never_in_the_thinking(
    fmt: ToolFormat, thinking: Thinking, output: str, start: str | None
) -> None:
    g = build(ToolRequest([WEATHER], "auto"), fmt, thinking)
    at = first_trigger(g.triggers, output)
    assert (None if at is None else output[at:]) == start


def test_unexpressible_schema_is_a_400_naming_the_tool() -> None:
    bad = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "frobnicate"}}}},
    }
    with pytest.raises(InvalidRequest) as err:
        build(ToolRequest([WEATHER, bad], "auto"), ToolFormat.HERMES, Thinking.NONE)
    assert err.value.param == "tools.1.function.parameters"


def test_harmony_call_strings_cannot_hold_a_marker() -> None:
    g = build(ToolRequest([WEATHER], "auto"), ToolFormat.HARMONY, Thinking.HARMONY)
    (char,) = [line for line in g.text.splitlines() if line.startswith("char ::=")]
    assert '[^"\\\\<\\x00-\\x1F]' in char and '"<"+ ([^"\\\\<|\\x00-\\x1F]' in char
    g = build(ToolRequest([WEATHER], "auto"), ToolFormat.HERMES, Thinking.MAY)  # the converter's own strings
    (char,) = [line for line in g.text.splitlines() if line.startswith("char ::=")]
    assert "<" not in char


# -- what a grammar accepts, walked byte by byte over the tiny model's byte-level vocabulary ------------------------

XML_TOOL = {
    "type": "function",
    "function": {
        "name": "write_file",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "lines": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "force": {"type": "boolean"},
            },
            "required": ["path", "lines"],
        },
    },
}


def accepts(model: Model, grammar: str, text: str) -> bool:
    """Whether llama.cpp's grammar sampler lets `text` through from its start (each byte one token) and then lets
    generation end."""
    from testkit.fixtures.synthetic import byte_alphabet

    ids = {piece: i for i, piece in enumerate(byte_alphabet())}
    n_vocab = ll.llama_vocab_n_tokens(model.vocab)
    smpl = ll.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    assert smpl
    try:
        for token in [ids[byte_alphabet()[b]] for b in text.encode()] + [ll.llama_vocab_eos(model.vocab)]:
            data = (ll.llama_token_data * n_vocab)(*[ll.llama_token_data(i, 0.0, 0.0) for i in range(n_vocab)])
            arr = ll.llama_token_data_array(data, n_vocab, -1, False)
            ll.llama_sampler_apply(smpl, ctypes.byref(arr))
            if data[token].logit == float("-inf"):
                return False
            ll.llama_sampler_accept(smpl, token)
        return True
    finally:
        ll.llama_sampler_free(smpl)


XML_CALL = "<tool_call>\n<function=write_file>\n<parameter=path>\n{path}\n</parameter>\n<parameter=lines>\n{lines}\n</parameter>\n{rest}</function>\n</tool_call>"


@pytest.mark.parametrize(
    ("call", "ok"),
    [
        (XML_CALL.format(path="a.py", lines="3", rest=""), True),
        (
            XML_CALL.format(path="x = '<b>'\n\nprint(x)", lines="-12", rest="<parameter=force>\ntrue\n</parameter>\n"),
            True,
        ),
        (XML_CALL.format(path="a.py", lines="3", rest='<parameter=tags>\n["x", "y"]\n</parameter>\n'), True),
        (XML_CALL.format(path="a.py", lines="three", rest=""), False),  # an integer's value is JSON
        (XML_CALL.format(path="a</parameter>", lines="3", rest=""), False),  # the parser's end of a value
        (XML_CALL.format(path="a.py", lines="3", rest="<parameter=mode>\nw\n</parameter>\n"), False),  # undeclared
        ("<tool_call>\n<function=write_file>\n<parameter=lines>\n3\n</parameter>\n</function>\n</tool_call>", False),
        ("<tool_call>\n<function=remove_file>\n</function>\n</tool_call>", False),
    ],
)
def test_xml_grammar_holds_names_parameters_and_typed_values(call: str, ok: bool) -> None:
    model = Model(build_tiny_gguf())
    try:
        g = build(ToolRequest([XML_TOOL, PING], "required"), ToolFormat.XML, Thinking.NONE)
        assert accepts(model, g.text, call) is ok
        assert accepts(model, g.text, "<tool_call>\n<function=ping>\n</function>\n</tool_call>")
    finally:
        model.close()


def test_seed_and_nemotron_grammars_accept_their_templates_calls() -> None:
    model = Model(build_tiny_gguf())
    try:
        seed = build(ToolRequest([XML_TOOL], "required"), ToolFormat.SEED_XML, Thinking.NONE)
        call = "<seed:tool_call>\n<function=write_file>\n<parameter=path>a b</parameter>\n<parameter=lines>3</parameter>\n</function>\n</seed:tool_call>"
        assert accepts(model, seed.text, call)
        nemotron = build(ToolRequest([XML_TOOL, PING], "required"), ToolFormat.NEMOTRON, Thinking.NONE)
        call = '<TOOLCALL>[{"name": "ping", "arguments": {}}, {"name": "write_file", "arguments": {"path": "a", "lines": 1}}]</TOOLCALL>'
        assert accepts(model, nemotron.text, call)
        assert not accepts(model, nemotron.text, '<TOOLCALL>[{"name": "nope", "arguments": {}}]</TOOLCALL>')
    finally:
        model.close()


def test_pythonic_grammar_holds_the_names_and_balances_the_arguments() -> None:
    model = Model(build_tiny_gguf())
    try:
        g = build(ToolRequest([XML_TOOL, PING], "required"), ToolFormat.PYTHONIC, Thinking.NONE)
        call = (
            "<|tool_call_start|>[write_file(path='a (b).py', lines=3, tags=['x'], force=True), ping()]<|tool_call_end|>"
        )
        assert accepts(model, g.text, call)
        assert accepts(model, g.text, "<|tool_call_start|>[ping(q='it\\'s')]<|tool_call_end|>")
        assert not accepts(model, g.text, "<|tool_call_start|>[remove(path='a')]<|tool_call_end|>")
        assert not accepts(model, g.text, "<|tool_call_start|>[ping(q='open)]<|tool_call_end|>")
    finally:
        model.close()


def test_an_accepted_grammar_is_checked_once_and_a_refused_one_every_time() -> None:
    """check_grammar remembers what llama.cpp accepted (an agent resends the same tools every turn), never what it
    refused: a NULL grammar is refused again on the next request."""
    from serve.engine.context import EngineError
    from serve.engine.engine import Engine, Model
    from serve.engine.grammar import Grammar

    model = Model(build_tiny_gguf())
    engine = Engine(model, n_seq=1, ctx_per_seq=256, threads=1)
    try:
        good, bad = Grammar('root ::= "a"'), Grammar("root ::= \\\\d")
        engine.check_grammar(good)
        assert good in engine._checked
        engine.check_grammar(good)
        for _ in range(2):
            with pytest.raises(EngineError):
                engine.check_grammar(bad)
        assert bad not in engine._checked
    finally:
        engine.stop()
        model.close()


# -- the calls a real template writes (rendered by transformers) are what the format's grammar accepts ------------

TEMPLATE_CALLS = [
    ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", ToolFormat.COHERE, "<|START_ACTION|>", "<|END_ACTION|>"),
    ("Cohere2MoE.jinja", ToolFormat.COHERE, "<|START_ACTION|>", "<|END_ACTION|>"),
    ("Apriel-1.6-15b-Thinker-fixed.jinja", ToolFormat.APRIEL, "<tool_calls>", "</tool_calls>"),
    ("unsloth-Apriel-1.5.jinja", ToolFormat.APRIEL, "<tool_calls>", "</tool_calls>"),
    ("meetkai-functionary-medium-v3.1.jinja", ToolFormat.FUNCTIONARY, "<function=", "</function>"),
    ("Spark2.5.jinja", ToolFormat.GLM, "<tool_call>", "</tool_call>"),
    ("poolside-Laguna-S-2.1.jinja", ToolFormat.GLM, "<tool_call>", "</tool_call>"),
    ("poolside-Laguna-XS-2.1.jinja", ToolFormat.GLM, "<tool_call>", "</tool_call>"),
    ("poolside-Laguna-XS.2.jinja", ToolFormat.GLM, "<tool_call>", "</tool_call>"),
    ("GLM-4.6.jinja", ToolFormat.GLM, "<tool_call>", "</tool_call>"),
    ("GLM-4.7-Flash.jinja", ToolFormat.GLM, "<tool_call>", "</tool_call>"),
    ("inclusionai-ling-3.0-flash.jinja", ToolFormat.GLM, "<tool_call>", "</tool_call>"),
    ("openbmb-MiniCPM5-1B.jinja", ToolFormat.MINICPM, '<function name="', "</function>"),
    ("muse-glimmer.jinja", ToolFormat.ATEM, "<atem:function_calls>", "</atem:function_calls>"),
    ("GigaChat3-10B-A1.8B.jinja", ToolFormat.GIGACHAT, "function call<|role_sep|>", "}}"),
    ("GigaChat3.1-10B-A1.8B.jinja", ToolFormat.GIGACHAT, "<|function_call|>", "}}"),
    ("Apertus-8B-Instruct.jinja", ToolFormat.APERTUS, "<|tools_prefix|>", "<|tools_suffix|>"),
    ("upstage-Solar-Open-100B.jinja", ToolFormat.SOLAR, "<|tool_calls|>", "<|calls|>"),
    ("tencent-Hy3.jinja", ToolFormat.HY3, "<tool_calls:opensource>", "</tool_calls:opensource>"),
]


def template_calls(name: str, opener: str, closer: str) -> str:
    """The parallel calls of the prompt tests' conversation, as transformers renders them through the template:
    from the call turn's first opening marker to its last closing one."""
    from testkit.fixtures.llama_sdist import SdistUnavailable
    from tests.serve.test_tool_prompts import PARALLEL, TOOLS, hf_messages, hf_tools, theirs
    from tests.serve.tool_templates import SHIPPED_LEVELS, shipped_templates

    try:
        source = (shipped_templates() / name).read_text()
    except SdistUnavailable as err:
        pytest.skip(f"llama.cpp's shipped templates: {err}")
    level = {"reasoning_effort": SHIPPED_LEVELS[name]} if name in SHIPPED_LEVELS else {}
    prompt = theirs(source, hf_messages(PARALLEL), hf_tools(TOOLS), **level)
    # the call turn: the last opener of the tool list's instructions is before the user's question
    at = prompt.index(opener, prompt.index("Weather in Paris and Oslo?"))
    end = prompt.rindex(closer, at, prompt.index("sunny, 21 C")) + len(closer)
    return prompt[at:end]


@pytest.mark.parametrize(("name", "fmt", "opener", "closer"), TEMPLATE_CALLS)
def test_grammars_accept_the_calls_their_templates_write(name: str, fmt: ToolFormat, opener: str, closer: str) -> None:
    from tests.serve.test_tool_prompts import TOOLS, hf_tools

    calls = template_calls(name, opener, closer)
    model = Model(build_tiny_gguf())
    try:
        for choice in ("required", "auto"):
            g = build(ToolRequest(hf_tools(TOOLS), choice), fmt, Thinking.NONE)
            assert accepts(model, g.text, calls), calls
        single = build(ToolRequest(hf_tools(TOOLS), "required", parallel=False), fmt, Thinking.NONE)
        assert accepts(model, single.text, calls) is not FORMATS[fmt].parallel  # two calls where one is allowed
        assert not accepts(model, g.text, calls.replace("get_weather", "get_wether"))  # no such tool
        if '"Oslo"' in calls:  # JSON arguments
            assert not accepts(model, g.text, calls.replace('"Oslo"', "9"))  # city is a string
        else:  # tagged pairs
            assert not accepts(model, g.text, calls.replace('city"', 'town"').replace("city<", "town<"))  # undeclared
    finally:
        model.close()


GEMMA_CALL = "<|tool_call>call:write_file{{{args}}}<tool_call|>"


@pytest.mark.parametrize(
    ("args", "ok"),
    [
        ('lines:3,path:<|"|>a.py<|"|>', True),
        ('force:true,lines:-12,path:<|"|>x = {1: [2]}\n<|"|>,tags:[<|"|>x<|"|>,<|"|>y<|"|>]', True),
        ('lines:3,path:<|"|>a.py<|"|>,tags:[]', True),
        ('path:<|"|>a.py<|"|>,lines:3', False),  # the template writes keys sorted
        ('lines:three,path:<|"|>a.py<|"|>', False),  # an integer
        ("lines:3", False),  # path is required
        ('lines:3,mode:<|"|>w<|"|>,path:<|"|>a.py<|"|>', False),  # undeclared
        ("lines:3,path:a.py", False),  # a string is between marks
    ],
)
def test_gemma_grammar_holds_names_keys_and_typed_values(args: str, ok: bool) -> None:
    model = Model(build_tiny_gguf())
    try:
        g = build(ToolRequest([XML_TOOL, PING], "required"), ToolFormat.GEMMA, Thinking.NONE)
        assert accepts(model, g.text, GEMMA_CALL.format(args=args)) is ok
        assert accepts(
            model, g.text, "<|tool_call>call:ping{}<tool_call|><|tool_call>call:ping{a:{b:[None,1.5]}}<tool_call|>"
        )
        assert not accepts(model, g.text, "<|tool_call>call:remove{}<tool_call|>")
    finally:
        model.close()


@pytest.mark.parametrize(
    "fmt", [ToolFormat.DEEPSEEK_V32, ToolFormat.DEEPSEEK_V4, ToolFormat.MINIMAX_XML, ToolFormat.KIMI_K3]
)
def test_named_xml_grammars_hold_names_parameters_and_typed_values(fmt: ToolFormat) -> None:
    from serve.chat.tools.grammar import XML_STYLES

    style = XML_STYLES[fmt]

    def call(name: str, *params: tuple[str, str, str], index: int = 1) -> str:
        end = style.layout
        body = "".join(f"{style.parameter_tag(k, kind)}{v}{style.end_parameter}{end}" for k, v, kind in params)
        fn = f"{style.function_tag(name, index)}{end}{body}{style.end_function}{end}"
        return f"{style.open}{end}{fn}{style.close}"

    model = Model(build_tiny_gguf())
    try:
        g = build(ToolRequest([XML_TOOL, PING], "required"), fmt, Thinking.NONE)
        path, lines = ("path", "x = '<b>'\n", "string"), ("lines", "3", "number")
        assert accepts(model, g.text, call("write_file", path, lines))
        assert accepts(model, g.text, call("write_file", path, lines, ("tags", '["a"]', "array"), index=12))
        assert accepts(model, g.text, call("ping"))
        assert not accepts(model, g.text, call("write_file", path))  # lines is required
        assert not accepts(model, g.text, call("write_file", path, ("lines", "three", "number")))
        assert not accepts(model, g.text, call("write_file", path, lines, ("mode", "w", "string")))  # undeclared
        assert not accepts(model, g.text, call("remove_file"))
        if style.text_attr:  # the attribute matches the parameter's type
            assert not accepts(model, g.text, call("write_file", path, ("lines", "3", "string")))
    finally:
        model.close()


def test_kimi_grammar_holds_the_names_in_the_call_ids_and_the_arguments() -> None:
    model = Model(build_tiny_gguf())

    def section(*calls: str) -> str:
        body = "".join(f"<|tool_call_begin|>{c}<|tool_call_end|>" for c in calls)
        return f"<|tool_calls_section_begin|>{body}<|tool_calls_section_end|>"

    try:
        g = build(ToolRequest([XML_TOOL, PING], "required"), ToolFormat.KIMI, Thinking.NONE)
        write = 'functions.write_file:0<|tool_call_argument_begin|>{"path": "a", "lines": 3}'
        assert accepts(model, g.text, section(write, "functions.ping:1<|tool_call_argument_begin|>{}"))
        assert not accepts(model, g.text, section("functions.remove:0<|tool_call_argument_begin|>{}"))
        assert not accepts(model, g.text, section('functions.write_file:0<|tool_call_argument_begin|>{"path": "a"}'))
        # the number is bounded (ours replaces it), so a model cannot write digits until max_tokens
        assert accepts(model, g.text, section("functions.ping:123456<|tool_call_argument_begin|>{}"))
        assert not accepts(model, g.text, section("functions.ping:1234567<|tool_call_argument_begin|>{}"))
    finally:
        model.close()


def test_minimax_json_grammar_holds_one_call_object_a_line() -> None:
    model = Model(build_tiny_gguf())
    try:
        g = build(ToolRequest([XML_TOOL, PING], "required"), ToolFormat.MINIMAX_JSON, Thinking.NONE)
        write = '{"name": "write_file", "arguments": {"path": "a", "lines": 3}}'
        assert accepts(model, g.text, f'<tool_calls>\n{write}\n{{"name": "ping", "arguments": {{}}}}\n</tool_calls>')
        assert not accepts(model, g.text, '<tool_calls>\n{"name": "ping", "arguments": {}}</tool_calls>')
        assert not accepts(model, g.text, '<tool_calls>\n{"name": "nope", "arguments": {}}\n</tool_calls>')
    finally:
        model.close()


def test_minimax_tree_grammar_holds_names_elements_and_typed_values() -> None:
    mark = "]<]minimax[>["

    def call(name: str, *params: tuple[str, str]) -> str:
        body = "".join(f"{mark}<{k}>{v}{mark}</{k}>" for k, v in params)
        return f'{mark}<tool_call>\n{mark}<invoke name="{name}">{body}{mark}</invoke>\n{mark}</tool_call>'

    model = Model(build_tiny_gguf())
    try:
        g = build(ToolRequest([XML_TOOL, PING], "required"), ToolFormat.MINIMAX_TREE, Thinking.NONE)
        path, lines = ("path", "a <b>.py"), ("lines", "3")
        assert accepts(model, g.text, call("write_file", path, lines))
        assert accepts(model, g.text, call("write_file", path, lines, ("tags", f"{mark}<item>x{mark}</item>")))
        assert accepts(model, g.text, call("ping", ("q", f"{mark}<a>1{mark}</a>")))
        assert not accepts(model, g.text, call("write_file", path))  # lines is required
        assert not accepts(model, g.text, call("write_file", path, ("lines", "three")))
        assert not accepts(model, g.text, call("write_file", path, lines, ("mode", "w")))  # undeclared
        assert not accepts(model, g.text, call("remove_file"))
    finally:
        model.close()

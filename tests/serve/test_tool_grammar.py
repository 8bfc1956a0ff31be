"""Tool grammars alone: llama.cpp accepts every one (each format, choice and way of thinking), the lazy triggers
fire at the call's opening marker and never inside the thinking, and a schema the converter cannot express is a
400 naming the tool."""

from __future__ import annotations

import ctypes
import re

import llama_cpp as ll
import pytest

from serve.chat.channels import Thinking
from serve.chat.tools.formats import ToolFormat
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

"""Prompts with tools and multi-turn history, against transformers' `apply_chat_template` as the oracle.

A conversation is written once and turned into both forms: what an OpenAI client sends (arguments as JSON
text, `content: null`, reasoning under the name the client uses) goes through hearth's request models and
renderer; what transformers takes (arguments as objects, the null content as empty text, as hearth passes it)
goes through `apply_chat_template(messages, tools=...)`. The two prompts must be equal, on templates written in
each family's style, on the fixture families' templates (which know no tools: the generic format), and on the
real templates llama.cpp ships, when the pinned sdist is at hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")

from serve.chat.channels import Format  # noqa: E402
from serve.chat.prompts import ChatTemplate, chat_template, template_messages  # noqa: E402
from serve.chat.schemas import ChatRequest  # noqa: E402
from serve.chat.tools import generic  # noqa: E402
from serve.chat.tools.formats import ToolFormat  # noqa: E402
from serve.chat.tools.request import tool_request  # noqa: E402
from serve.errors import ConfigError, InvalidRequest  # noqa: E402
from tests.serve.tool_templates import (  # noqa: E402
    SHIPPED,
    SHIPPED_CALLS_IN_TEXT,
    SHIPPED_LEVELS,
    SHIPPED_SKIPPED,
    SHIPPED_UNRENDERABLE,
    SHIPPED_WITHOUT_TOOLS,
    STYLE_TEMPLATES,
    shipped_templates,
)

BOS, EOS = "<s>", "</s>"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time now."}}  # no parameters
TOOLS = [WEATHER, CLOCK]


def call(id_: str, city: str) -> dict[str, Any]:
    return {"id": id_, "name": "get_weather", "arguments": {"city": city}}


# A conversation: (role, content, extra) where extra may hold calls, a tool_call_id, reasoning under a name.
ROUND_TRIP = [
    ("system", "You are terse.", {}),
    ("user", "What is the weather in Paris?", {}),
    ("assistant", None, {"calls": [call("abc123def", "Paris")], "reasoning_content": "Paris weather."}),
    ("tool", "sunny, 21 C", {"tool_call_id": "abc123def"}),
    ("assistant", "Paris is sunny, 21 C.", {}),
    ("user", "And Oslo?", {}),
    ("assistant", None, {"calls": [call("xyz789ghi", "Oslo")], "reasoning": "Now Oslo."}),
    ("tool", "rainy, 9 C", {"tool_call_id": "xyz789ghi"}),
]
PARALLEL = [
    ("user", "Weather in Paris and Oslo?", {}),
    ("assistant", None, {"calls": [call("abc123def", "Paris"), call("xyz789ghi", "Oslo")]}),
    ("tool", "sunny, 21 C", {"tool_call_id": "abc123def"}),
    ("tool", "rainy, 9 C", {"tool_call_id": "xyz789ghi"}),
]
FIRST_TURN = [("user", "What is the weather in Paris?", {})]


def openai_messages(conv: list) -> list[dict[str, Any]]:
    out = []
    for role, content, extra in conv:
        m: dict[str, Any] = {"role": role, "content": content}
        for key in ("reasoning_content", "reasoning", "thinking", "tool_call_id", "name"):
            if key in extra:
                m[key] = extra[key]
        if "calls" in extra:
            m["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                }
                for c in extra["calls"]
            ]
        out.append(m)
    return out


def hf_messages(conv: list) -> list[dict[str, Any]]:
    out = []
    for role, content, extra in conv:
        m: dict[str, Any] = {"role": role, "content": content or ""}
        for key in ("reasoning_content", "reasoning", "thinking", "tool_call_id", "name"):
            if key in extra:
                m[key] = extra[key]
        if "calls" in extra:
            m["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in extra["calls"]
            ]
        out.append(m)
    return out


def hf_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What hearth hands templates: a tool without parameters gets an empty object schema."""
    return [
        {
            **t,
            "function": {
                **t["function"],
                "parameters": t["function"].get("parameters", {"type": "object", "properties": {}}),
            },
        }
        for t in tools
    ]


_TOKENIZER: list[Any] = []


def oracle() -> Any:
    """A tokenizer whose special tokens are BOS/EOS: apply_chat_template passes them as template variables."""
    if not _TOKENIZER:
        from tokenizers import Tokenizer, models

        tok = Tokenizer(models.WordLevel({"<s>": 0, "</s>": 1, "<unk>": 2}, unk_token="<unk>"))
        _TOKENIZER.append(
            transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token="<unk>")
        )
    return _TOKENIZER[0]


def theirs(source: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, **kw: Any) -> str:
    """transformers' prompt given the variables hearth passes for our default level: reasoning_effort, and (as
    llama.cpp's server) `enable_thinking=True` to a template that reads it; a caller passes its own for others."""
    kw.setdefault("reasoning_effort", "medium")
    if "enable_thinking" in source:
        kw.setdefault("enable_thinking", True)
    return oracle().apply_chat_template(
        messages, tools=tools, chat_template=source, tokenize=False, add_generation_prompt=True, **kw
    )


def ours(template: ChatTemplate, body: dict[str, Any]) -> str:
    req = ChatRequest.model_validate(body)
    return template.render(
        template_messages(req.messages),
        req.reasoning,
        req.developer_instructions,
        tool_request(req),
        req.chat_template_kwargs,
    )


def template_of(source: str) -> ChatTemplate:
    return chat_template(source, "generic", BOS, EOS)


def compare(source: str, conv: list, tools: list[dict[str, Any]] | None = TOOLS, **kw: Any) -> None:
    template = template_of(source)
    body: dict[str, Any] = {"messages": openai_messages(conv)}
    if tools is not None:
        body["tools"] = tools
    assert template.tool_support.native
    want = theirs(source, hf_messages(conv), hf_tools(tools) if tools else None, **kw)
    assert ours(template, body) == want


STYLE_FORMATS = {
    "llama3": ToolFormat.LLAMA3,
    "qwen": ToolFormat.HERMES,
    "mistral": ToolFormat.MISTRAL,
    "mistral-args": ToolFormat.MISTRAL_ARGS,
    "harmony": ToolFormat.HARMONY,
    "granite": ToolFormat.GRANITE,
}
PARALLEL_STYLES = ("qwen", "mistral", "mistral-args", "granite")


@pytest.mark.parametrize("style", STYLE_TEMPLATES)
def test_style_templates_detected_and_rendered_like_transformers(style: str) -> None:
    source = STYLE_TEMPLATES[style]
    assert template_of(source).tool_support.format is STYLE_FORMATS[style]
    for conv in (FIRST_TURN, ROUND_TRIP, *([PARALLEL] if style in PARALLEL_STYLES else [])):
        compare(source, conv)
    compare(source, ROUND_TRIP, tools=None)  # a history with calls, no tools offered this turn


def _shipped() -> Path:
    from testkit.fixtures.llama_sdist import SdistUnavailable

    try:
        return shipped_templates()
    except SdistUnavailable as err:
        pytest.skip(f"llama.cpp's shipped templates: {err}")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_templates_detected_and_rendered_like_transformers(name: str) -> None:
    source = (_shipped() / name).read_text()
    template = template_of(source)
    assert template.tool_support.format.value == SHIPPED[name]
    kw = {"reasoning_effort": SHIPPED_LEVELS[name]} if name in SHIPPED_LEVELS else {}
    compare(source, FIRST_TURN, **kw)
    if SHIPPED[name] == "llama3":  # Llama 3.x renders one call per turn and refuses more
        compare(source, ROUND_TRIP)
        with pytest.raises(InvalidRequest, match="chat template rejected"):
            ours(template, {"messages": openai_messages(PARALLEL), "tools": TOOLS})
        return
    for conv in (ROUND_TRIP, PARALLEL):
        compare(source, conv, **kw)


@pytest.mark.parametrize("name", sorted(SHIPPED_CALLS_IN_TEXT))
def test_shipped_templates_that_write_no_calls_get_them_in_the_text(name: str) -> None:
    """LFM2's templates list tools and leave a call turn's calls to its text: ours equals transformers' render of
    the same messages whose call turns' text ends with the calls as the family's calling template (LFM2.5's)
    writes them."""
    fmt, writer = SHIPPED_CALLS_IN_TEXT[name]
    source, writer_source = (_shipped() / name).read_text(), (_shipped() / writer).read_text()
    support = template_of(source).tool_support
    assert support.format.value == fmt and support.native and not support.writes_calls
    for conv in (FIRST_TURN, ROUND_TRIP, PARALLEL):
        messages = hf_messages(conv)
        written = iter(
            re.findall(r"<\|tool_call_start\|>.*?<\|tool_call_end\|>", theirs(writer_source, messages, None))
        )
        for m in messages:
            if m.get("tool_calls"):
                m["content"] += next(written)
        want = theirs(source, messages, hf_tools(TOOLS))
        assert ours(template_of(source), {"messages": openai_messages(conv), "tools": TOOLS}) == want
        assert want.count("get_weather(city='") == len([c for *_, e in conv for c in e.get("calls", ())])


@pytest.mark.parametrize(
    ("effort", "level"), [("none", "no_think"), ("low", "low"), ("medium", "no_think"), ("high", "high")]
)
def test_a_template_naming_its_own_levels_gets_them(effort: str, level: str) -> None:
    """Tencent Hy3's template refuses any reasoning_effort but no_think, low and high (and without one does not
    think): the API's levels reach it as those, our default `medium` as its own default."""
    source = (_shipped() / "tencent-Hy3.jinja").read_text()
    hf = [{"role": "user", "content": "Hi"}]
    got = ours(template_of(source), {"messages": hf, "reasoning_effort": effort})
    assert got == theirs(source, hf, None, reasoning_effort=level)


@pytest.mark.parametrize("name", sorted(SHIPPED_SKIPPED))
def test_shipped_templates_transformers_cannot_render_keep_the_generic_format(name: str) -> None:
    """The reason each is skipped holds: transformers fails on the conversation named, with the error named."""
    conv_name, error, _why = SHIPPED_SKIPPED[name]
    conv = {"FIRST_TURN": FIRST_TURN, "ROUND_TRIP": ROUND_TRIP}[conv_name]
    source = (_shipped() / name).read_text()
    with pytest.raises(Exception, match=re.escape(error)):
        theirs(source, hf_messages(conv), hf_tools(TOOLS))
    try:
        support = template_of(source).tool_support
    except ConfigError:  # a template that renders no plain conversation does not load
        return
    assert support.format is ToolFormat.GENERIC and not support.native


@pytest.mark.parametrize("name", SHIPPED_WITHOUT_TOOLS)
def test_shipped_templates_that_never_list_tools_get_the_generic_format(name: str) -> None:
    source = (_shipped() / name).read_text()
    support = template_of(source).tool_support
    assert support.format is ToolFormat.GENERIC and not support.native
    got = ours(template_of(source), {"messages": openai_messages(ROUND_TRIP[:4]), "tools": TOOLS})
    assert "get_weather" in got and "<tool_call>" in got  # the tool list and the history, in the generic format


@pytest.mark.parametrize("name", sorted(SHIPPED_UNRENDERABLE))
def test_shipped_templates_transformers_cannot_render_get_the_generic_format(name: str) -> None:
    source = (_shipped() / name).read_text()
    from jinja2.exceptions import SecurityError

    with pytest.raises((TypeError, SecurityError)):  # the reason is in SHIPPED_UNRENDERABLE
        theirs(source, hf_messages(ROUND_TRIP), hf_tools(TOOLS))
    support = template_of(source).tool_support
    assert support.format is ToolFormat.GENERIC and not support.native
    for conv in (FIRST_TURN, ROUND_TRIP, PARALLEL):  # no 400: the tools and the history in the generic format
        got = ours(template_of(source), {"messages": openai_messages(conv), "tools": TOOLS})
        assert "get_weather" in got and "<tool_call>" in got


def _fixture_templates() -> dict[str, tuple[str, str, str]]:
    from testkit.fixtures import gpt_oss
    from testkit.fixtures.build import FAMILIES

    out = {name: (fam.chat_template, fam.bos or "", fam.eos) for name, fam in FAMILIES.items()}
    out["gpt-oss"] = (gpt_oss.CHAT_TEMPLATE, "<|startoftext|>", "<|return|>")
    return out


@pytest.mark.parametrize("family", sorted(_fixture_templates()))
def test_fixture_templates_know_no_tools_and_get_the_generic_format(family: str) -> None:
    source, _, _ = _fixture_templates()[family]
    template = chat_template(source, "gpt-oss" if family == "gpt-oss" else "generic", BOS, EOS)
    assert template.tool_support.format is ToolFormat.GENERIC and not template.tool_support.native
    # written out by hand: the instructions at the end of the system message, calls as text, results as user turns
    instructions = generic.instructions(hf_tools(TOOLS), "auto", parallel=True)
    call_text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    expected = [
        {"role": "system", "content": f"You are terse.\n\n{instructions}"},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": call_text, "reasoning_content": "Paris weather."},
        {"role": "user", "content": "<tool_response>\nsunny, 21 C\n</tool_response>"},
    ]
    body = {"messages": openai_messages(ROUND_TRIP[:4]), "tools": TOOLS}
    assert ours(template, body) == theirs(source, expected, hf_tools(TOOLS))
    assert "get_weather" in ours(template, body)


def _demo_template(name: str) -> str:
    from models.demo import manifest

    return (manifest.DEMO_DIR / "templates" / f"{'think' if name == 'demo-think' else 'harmony'}.jinja").read_text()


@pytest.mark.parametrize("name", ["demo-think", "demo-harmony"])
def test_demo_templates_speak_their_families_formats(name: str) -> None:
    source = _demo_template(name)
    template = chat_template(source, "gpt-oss" if name == "demo-harmony" else "qwen3", "", "<|im_end|>")
    assert template.tool_support.format is (ToolFormat.HARMONY if name == "demo-harmony" else ToolFormat.HERMES)
    compare(source, ROUND_TRIP)


# -- multi-turn history without tools (reasoning riding along, name, null and part content, unknown fields) ----


def _history_cases() -> list[tuple[str, str, Format]]:
    from testkit.fixtures import gpt_oss
    from testkit.fixtures.build import QWEN3_TEMPLATE

    return [("qwen3", QWEN3_TEMPLATE, Format.THINK), ("gpt-oss", gpt_oss.CHAT_TEMPLATE, Format.HARMONY)]


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning", "thinking"])
@pytest.mark.parametrize("case", [0, 1])
def test_earlier_reasoning_reaches_the_template_under_every_name(key: str, case: int) -> None:
    _name, source, fmt = _history_cases()[case]
    template = ChatTemplate(source, fmt, BOS, EOS)
    sent = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
            "name": "ann",
            "x-unknown": 1,
        },
        {"role": "assistant", "content": "Hello.", key: "They greet me.", "channels": {"final": "Hello."}},
        {"role": "user", "content": "Bye"},
    ]
    hf = [
        {"role": "user", "content": "Hi there", "name": "ann"},
        {"role": "assistant", "content": "Hello.", key: "They greet me."},
        {"role": "user", "content": "Bye"},
    ]
    got = ours(template, {"messages": sent})
    assert got == theirs(source, hf, None)
    assert "They greet me." in got  # both fixture templates render earlier reasoning


def test_our_own_thinking_object_sent_back_is_its_text() -> None:
    from testkit.fixtures import gpt_oss

    template = ChatTemplate(gpt_oss.CHAT_TEMPLATE, Format.HARMONY, BOS, EOS)
    thinking = {"analysis": "They greet me.", "commentary": "Wave.", "raw": "[Analysis]..."}
    sent = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello.", "thinking": thinking},
        {"role": "user", "content": "Bye"},
    ]
    hf = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello.", "thinking": "They greet me.\n\nWave."},
        {"role": "user", "content": "Bye"},
    ]
    assert ours(template, {"messages": sent}) == theirs(source := gpt_oss.CHAT_TEMPLATE, hf, None) and source


@pytest.mark.parametrize("effort", ["none", "minimal", "low", "high"])
def test_reasoning_effort_levels_and_thinking_off(effort: str) -> None:
    from testkit.fixtures import gpt_oss
    from testkit.fixtures.build import QWEN3_TEMPLATE

    hf = [{"role": "user", "content": "Hi"}]
    level = {"none": "low", "minimal": "low"}.get(effort, effort)
    harmony = ChatTemplate(gpt_oss.CHAT_TEMPLATE, Format.HARMONY, BOS, EOS)
    for body in ({"messages": hf, "reasoning_effort": effort}, {"messages": hf, "reasoning": {"effort": effort}}):
        assert ours(harmony, body) == theirs(gpt_oss.CHAT_TEMPLATE, hf, None, reasoning_effort=level)
    qwen3 = ChatTemplate(QWEN3_TEMPLATE, Format.THINK, BOS, EOS)
    extra = {"enable_thinking": False} if effort == "none" else {}
    got = ours(qwen3, {"messages": hf, "reasoning_effort": effort})
    assert got == theirs(QWEN3_TEMPLATE, hf, None, reasoning_effort=level, **extra)
    assert got.endswith("<think>\n\n</think>\n\n") == (effort == "none")
    assert qwen3.thinking(got).value == ("none" if effort == "none" else "may")


def _reads_enable_thinking() -> list[str]:
    from testkit.fixtures.llama_sdist import SdistUnavailable

    try:
        folder = shipped_templates()
    except SdistUnavailable:  # no templates: nothing to parametrize (pytest reports the empty set)
        return []
    return sorted(p.name for p in folder.glob("*.jinja") if "enable_thinking" in p.read_text())


@pytest.mark.parametrize("name", _reads_enable_thinking())
def test_shipped_templates_get_enable_thinking_as_llama_cpp_passes_it(name: str) -> None:
    """llama.cpp's server passes `enable_thinking` to every template: true unless reasoning is `none`, the request's
    chat_template_kwargs over it. Each shipped template that reads it renders as transformers does given the same
    value (Gemma 4, which keeps thinking off unless it is true, thinks by default)."""
    source = (_shipped() / name).read_text()
    template = template_of(source)
    sent, hf = openai_messages(FIRST_TURN), hf_messages(FIRST_TURN)
    for effort, kwargs, value in (
        ("medium", None, True),
        ("high", None, True),
        ("none", None, False),
        ("medium", {"enable_thinking": False}, False),
        ("none", {"enable_thinking": True}, True),
    ):
        body: dict[str, Any] = {"messages": sent, "reasoning_effort": effort}
        if kwargs is not None:
            body["chat_template_kwargs"] = kwargs
        level = {"none": "low"}.get(effort, effort)
        assert ours(template, body) == theirs(source, hf, None, reasoning_effort=level, enable_thinking=value), effort


def test_strict_is_an_api_flag_not_part_of_the_prompt() -> None:
    """openai-agents sends `strict` on every chat-completions tool; the model must read the tool as without it."""

    def prompt(tools: list[dict[str, Any]]) -> str:
        req = ChatRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools}
        )
        template = ChatTemplate(STYLE_TEMPLATES["qwen"], Format.THINK, BOS, EOS)
        return template.render(template_messages(req.messages), tools=tool_request(req))

    strict = [{**t, "function": {**t["function"], "strict": True}} for t in TOOLS]
    assert "strict" not in prompt(strict) and prompt(strict) == prompt(TOOLS)
    assert "get_weather" in prompt(strict) and '"city"' in prompt(strict)  # the schema stays

"""Each family's thinking markers (serve/chat/channels.THINK_TAGS) against its real template, rendered by
transformers: the template is detected as its family, earlier reasoning reaches it and sits between the family's
markers in the prompt (the prompt equals transformers'), the turn the template writes (thinking, then calls)
is what the forced tool grammar accepts and what the lazy triggers start after, and a JSON answer starts after the
family's close marker."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from serve.chat.answer_grammar import build as answer_grammar
from serve.chat.budget import think_budget
from serve.chat.channels import THINK_TAGS, ChannelParser, Format, Thinking, collect
from serve.chat.core import ChatResult, Generation
from serve.chat.schemas import ResponseFormat
from serve.chat.tools.formats import ToolFormat
from serve.chat.tools.grammar import OPENERS, build
from serve.chat.tools.request import ToolRequest
from serve.engine.engine import Model
from testkit.tiny_gguf import build_tiny_gguf
from tests.serve.test_tool_grammar import accepts, first_trigger
from tests.serve.test_tool_prompts import (
    TOOLS,
    call,
    hf_messages,
    hf_tools,
    ours,
    template_of,
    theirs,
)

# template -> (its family, its call format, the text that ends its calls, the reasoning_effort that opens thinking)
FAMILIES = {
    "google-gemma-4-31B-it.jinja": (Format.GEMMA4, ToolFormat.GEMMA, "<tool_call|>", "medium"),
    "google-gemma-4-31B-it-interleaved.jinja": (Format.GEMMA4, ToolFormat.GEMMA, "<tool_call|>", "medium"),
    "MiniMax-M3.jinja": (Format.MINIMAX, ToolFormat.MINIMAX_TREE, "</tool_call>", "medium"),
    "Kimi-K3.jinja": (Format.KIMI_K3, ToolFormat.KIMI_K3, "<|close|>tools<|sep|>", "medium"),
    "tencent-Hy3.jinja": (Format.HY3, ToolFormat.HY3, "</tool_calls:opensource>", "high"),
    "ByteDance-Seed-OSS.jinja": (Format.SEED, ToolFormat.SEED_XML, "</seed:tool_call>", "medium"),
    "Cohere2MoE.jinja": (Format.COHERE, ToolFormat.COHERE, "<|END_ACTION|>", "medium"),
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja": (
        Format.COHERE,
        ToolFormat.COHERE,
        "<|END_ACTION|>",
        "medium",
    ),
    "upstage-Solar-Open-100B.jinja": (Format.SOLAR, ToolFormat.SOLAR, "<|calls|>", "medium"),
    "muse-glimmer.jinja": (Format.MUSE, ToolFormat.ATEM, "</atem:function_calls>", "medium"),
}
# the key a template reads a message's earlier reasoning from, where transformers' aliasing (`reasoning_content`,
# `thinking`) does not reach it: the oracle gets the reasoning under that key, ours under `reasoning_content`
# (what the API returns and clients send back)
READS = {"upstage-Solar-Open-100B.jinja": "reasoning"}
# families whose templates write no earlier reasoning in a call turn (Apriel: only a last assistant message's;
# Ministral 3: only `thinking` content parts), so only detection and the prompt's opening are checked against them
NO_TURN = {
    "Apriel-1.6-15b-Thinker-fixed.jinja": (Format.APRIEL, "medium"),
    "unsloth-Apriel-1.5.jinja": (Format.APRIEL, "medium"),
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja": (Format.MISTRAL, "medium"),
}
# templates that keep `<think>` (or harmony): the new families' detection leaves them as they were
UNCHANGED = {
    "Qwen-Qwen3-0.6B.jinja": Format.THINK,
    "MiniMax-M2.jinja": Format.THINK,
    "deepseek-ai-DeepSeek-V3.1.jinja": Format.THINK,
    "openai-gpt-oss-120b.jinja": Format.HARMONY,
}
REASONING = "Paris weather, so call the tool."
CALLED = [
    ("user", "What is the weather in Paris?", {}),
    ("assistant", None, {"calls": [call("abc123def", "Paris")], "reasoning_content": REASONING}),
    ("tool", "sunny, 21 C", {"tool_call_id": "abc123def"}),
]


def _source(name: str) -> str:
    from testkit.fixtures.llama_sdist import SdistUnavailable
    from tests.serve.tool_templates import shipped_templates

    try:
        return (Path(shipped_templates()) / name).read_text()
    except SdistUnavailable as err:
        pytest.skip(f"llama.cpp's shipped templates: {err}")


def _turn(name: str) -> str:
    """The assistant's turn with thinking and a call, as transformers renders it through the template: from the
    family's open marker to the end of the calls."""
    fmt, _, calls_end, level = FAMILIES[name]
    prompt = theirs(_source(name), _hf(name, CALLED), hf_tools(TOOLS), reasoning_effort=level)
    at = prompt.index(THINK_TAGS[fmt].open, prompt.index("What is the weather in Paris?"))
    return prompt[at : prompt.index(calls_end, at) + len(calls_end)]


@pytest.mark.parametrize("name", [*FAMILIES, *NO_TURN, *UNCHANGED])
def test_templates_are_detected_as_their_family(name: str) -> None:
    want = FAMILIES[name][0] if name in FAMILIES else NO_TURN[name][0] if name in NO_TURN else UNCHANGED[name]
    template = template_of(_source(name))
    assert template.format is want
    assert template.thinks


@pytest.mark.parametrize("name", FAMILIES)
def test_earlier_reasoning_reaches_the_template_between_its_markers(name: str) -> None:
    fmt, _, _, level = FAMILIES[name]
    source = _source(name)
    body = {"messages": _openai(CALLED), "tools": TOOLS, "reasoning_effort": level}
    assert ours(template_of(source), body) == theirs(source, _hf(name, CALLED), hf_tools(TOOLS), reasoning_effort=level)
    tags = THINK_TAGS[fmt]
    turn = _turn(name)
    assert re.match(re.escape(tags.open) + r"\s*" + re.escape(REASONING) + r"\s*" + re.escape(tags.close), turn)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_templates_turn_parses_into_reasoning_and_calls(name: str) -> None:
    fmt = FAMILIES[name][0]
    turn = _turn(name)
    for opened, text in ((False, turn), (True, turn.removeprefix(THINK_TAGS[fmt].open))):
        for cut in range(len(text) + 1):
            parser = ChannelParser(fmt, start_in_thinking=opened)
            got = collect(parser.feed(text[:cut]) + parser.feed(text[cut:]) + parser.finish())
            assert got["analysis"].strip() == REASONING
            assert REASONING not in got["final"] and not any(m in got["final"] for m in THINK_TAGS[fmt].markers)


@pytest.mark.parametrize("name", [*FAMILIES, *NO_TURN])
def test_the_prompt_says_where_the_output_begins(name: str) -> None:
    """Thinking opened by the prompt (the output starts inside it), closed by it, or left to the model: as the
    transformers prompt ends."""
    fmt, level = (FAMILIES[name][0], FAMILIES[name][3]) if name in FAMILIES else NO_TURN[name]
    template, tags = template_of(_source(name)), THINK_TAGS[fmt]
    first = {"messages": [{"role": "user", "content": "Hi"}]}
    after_tool = {"messages": _openai(CALLED), "tools": TOOLS}
    for effort in ("medium", level, "none"):
        for body in (first, after_tool):
            prompt = ours(template, {**body, "reasoning_effort": effort})
            end = prompt.rstrip()
            opened, closed = end.endswith(tags.open), end.endswith(tags.close)
            want = Thinking.OPEN if opened else Thinking.NONE if closed else Thinking.MAY
            assert template.thinking(prompt) is want


def _hf(name: str, conv: list) -> list[dict[str, object]]:
    """The conversation for transformers, its reasoning under the key the template reads."""
    key = READS.get(name)
    if key is None:
        return hf_messages(conv)
    return hf_messages(
        [(r, c, {key: e["reasoning_content"]} | e if "reasoning_content" in e else e) for r, c, e in conv]
    )


def _openai(conv: list) -> list[dict[str, object]]:
    from tests.serve.test_tool_prompts import openai_messages

    return openai_messages(conv)


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    m = Model(build_tiny_gguf())
    yield m
    m.close()


@pytest.mark.parametrize("name", FAMILIES)
def test_a_forced_call_starts_after_the_familys_thinking(name: str, model: Model) -> None:
    fmt, tool_format, _, _ = FAMILIES[name]
    tags, turn = THINK_TAGS[fmt], _turn(name)
    req = ToolRequest(hf_tools(TOOLS), "required")
    opened = turn.removeprefix(tags.open)
    assert accepts(model, build(req, tool_format, Thinking.MAY, tags).text, turn)
    assert accepts(model, build(req, tool_format, Thinking.OPEN, tags).text, opened)
    assert not accepts(model, build(req, tool_format, Thinking.OPEN, tags).text, opened.replace(tags.close, "", 1))
    # auto: the lazy grammar starts at the call's opener after the thinking, never at a marker inside it
    auto = build(ToolRequest(hf_tools(TOOLS), "auto"), tool_format, Thinking.OPEN, tags)
    mentioned = OPENERS[tool_format][0] + " " + opened
    at = first_trigger(auto.triggers, mentioned)
    assert at is not None and at > mentioned.index(tags.close)
    assert any(mentioned[at:].startswith(o) for o in OPENERS[tool_format])


@pytest.mark.parametrize("fmt", [f for f in THINK_TAGS if f is not Format.THINK])
def test_a_json_answer_starts_after_the_familys_thinking(fmt: Format, model: Model) -> None:
    tags = THINK_TAGS[fmt]
    grammar = answer_grammar(ResponseFormat.model_validate({"type": "json_object"}), fmt, thinks=True)
    assert grammar is not None
    answer = tags.lead[-1] if tags.lead else ""
    output = f"{tags.open}\nthe user wants {tags.open} JSON\n{tags.close}{answer}\n" + '{"a": 1}'
    at = first_trigger(grammar.triggers, output)
    assert at == output.index(tags.close)
    assert accepts(model, grammar.text, output[at:])
    assert not accepts(model, grammar.text, output[at:] + " and more")


@pytest.mark.parametrize("fmt", list(THINK_TAGS))
def test_the_budget_closes_with_the_familys_marker(fmt: Format) -> None:
    tags = THINK_TAGS[fmt]
    for thinking, inside in ((Thinking.OPEN, True), (Thinking.MAY, False)):
        budget = think_budget(5, thinking, forced_answer=False, max_tokens=100, tools=False, tags=tags)
        assert budget is not None
        assert (budget.open, budget.close, budget.inside) == (tags.open, tags.close, inside)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_templates_turn_is_reasoning_and_a_call_at_every_split(name: str) -> None:
    """The whole chat path (channel parser, then the family's call parser): the reasoning in `reasoning_content`,
    the call as a call, nothing in the content."""
    fmt, tool_format, _, _ = FAMILIES[name]
    text = _turn(name).removeprefix(THINK_TAGS[fmt].open)
    schemas = hf_tools(TOOLS)

    def run(pieces: list[str]) -> ChatResult:
        gen = Generation(ChannelParser.for_output(fmt, Thinking.OPEN), tool_format, lambda i: f"id{i}", schemas)
        result = ChatResult()
        for event in [e for p in pieces for e in gen.piece(p)] + gen.end("stop", 1, 1):
            result.add(event)
        return result

    for cut in range(len(text) + 1):
        result = run([text[:cut], text[cut:]])
        assert result.channels == {"analysis": REASONING}, cut
        assert [(c.name, json.loads(c.arguments)) for c in result.calls] == [("get_weather", {"city": "Paris"})]
        assert result.finish is not None and result.finish.reason == "tool_calls"


@pytest.mark.parametrize("fmt", list(THINK_TAGS))
def test_every_familys_thinking_comes_before_a_forced_call(fmt: Format, model: Model) -> None:
    """The generic call format after each family's thinking (Apriel and Ministral 3 too, whose templates write no
    earlier reasoning in a call turn): the grammar llama.cpp accepts lets the thinking through, then the call."""
    tags = THINK_TAGS[fmt]
    lead = tags.lead[-1] if tags.lead else ""
    calls = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    thought = f"{tags.open}\nI will call {tags.open} get_weather <tool_call>\n{tags.close}{lead}\n"
    req = ToolRequest(hf_tools(TOOLS), "required")
    assert accepts(model, build(req, ToolFormat.GENERIC, Thinking.MAY, tags).text, thought + calls)
    assert accepts(model, build(req, ToolFormat.GENERIC, Thinking.MAY, tags).text, calls)
    assert accepts(
        model, build(req, ToolFormat.GENERIC, Thinking.OPEN, tags).text, thought.removeprefix(tags.open) + calls
    )
    assert not accepts(model, build(req, ToolFormat.GENERIC, Thinking.OPEN, tags).text, calls)
    auto = build(ToolRequest(hf_tools(TOOLS), "auto"), ToolFormat.GENERIC, Thinking.MAY, tags)
    output = thought + "Sure. " + calls
    assert output[first_trigger(auto.triggers, output) or 0 :] == calls


@pytest.mark.parametrize("name", ["google-gemma-4-31B-it.jinja", "Qwen-Qwen3-0.6B.jinja"])
def test_chat_template_kwargs_reach_the_template(name: str) -> None:
    """`chat_template_kwargs` (vLLM's and llama.cpp's request field) sets template variables: Gemma 4's thinking is off
    unless `enable_thinking` is true, Qwen3's on unless false; the prompt equals transformers' with the same kwargs,
    and the output starts where that prompt leaves it."""
    source = _source(name)
    template = template_of(source)
    first = [("user", "What is the weather in Paris?", {})]
    for value in (True, False):
        body = {"messages": _openai(first), "chat_template_kwargs": {"enable_thinking": value}}
        prompt = ours(template, body)
        assert prompt == theirs(source, hf_messages(first), None, enable_thinking=value)
        assert (template.thinking(prompt) is not Thinking.NONE) is value


@pytest.mark.parametrize("key", ["messages", "tools", "add_generation_prompt", "bos_token", "reasoning_effort"])
def test_chat_template_kwargs_cannot_set_the_servers_own_variables(key: str) -> None:
    from pydantic import ValidationError

    from serve.chat.schemas import ChatRequest

    with pytest.raises(ValidationError, match=f"{key} cannot be set through chat_template_kwargs"):
        ChatRequest.model_validate({"messages": [{"role": "user", "content": "Hi"}], "chat_template_kwargs": {key: 1}})


@pytest.mark.parametrize(
    "name", ["microsoft-Phi-3.5-mini-instruct.jinja", "openai-gpt-oss-120b.jinja", "google-gemma-4-31B-it.jinja"]
)
def test_a_close_marker_other_templates_share_names_no_family(name: str) -> None:
    """Solar Open's `<|end|>` and `<|think|>`, and Muse Glimmer's `<|eom|>`, are in other templates too (Phi-3.5,
    gpt-oss, Gemma 4's thinking switch): those keep their own format, and no end-of-generation token goes on."""
    template = template_of(_source(name))
    assert template.format not in (Format.SOLAR, Format.MUSE)
    assert template.message_end == ("<|end|>" if template.format is Format.HARMONY else "")


@pytest.mark.parametrize("name", ["google-gemma-4-31B-it.jinja", "google-gemma-4-31B-it-interleaved.jinja"])
def test_gemma4_thinks_by_default_and_its_thought_is_the_reasoning(name: str) -> None:
    """As on llama.cpp's server, Gemma 4 thinks unless reasoning is `none`: our default prompt is transformers' with
    `enable_thinking=True` and leaves the thought to the model, and the chat path (what `prepare` builds from that
    prompt) takes the thought the model writes as reasoning, at every split, also where a JSON answer's grammar
    holds what follows it."""
    source = _source(name)
    template, tags = template_of(source), THINK_TAGS[Format.GEMMA4]
    first = [("user", "What is the weather in Paris?", {})]
    prompt = ours(template, {"messages": _openai(first)})
    assert prompt == theirs(source, hf_messages(first), None, enable_thinking=True)
    thinking = template.thinking(prompt)
    assert thinking is Thinking.MAY
    off = ours(template, {"messages": _openai(first), "reasoning_effort": "none"})
    assert off == theirs(source, hf_messages(first), None, reasoning_effort="low", enable_thinking=False)
    assert template.thinking(off) is Thinking.NONE
    for sealed, answer in ((False, "Sunny, 21 C."), (True, '{"city": "Paris"}')):
        output = f"{tags.open}\n{REASONING}{tags.close}{answer}"
        for cut in range(len(output) + 1):
            gen = Generation(ChannelParser.for_output(template.format, thinking, answer_grammar=sealed))
            result = ChatResult()
            for event in gen.piece(output[:cut]) + gen.piece(output[cut:]) + gen.end("stop", 1, 1):
                result.add(event)
            assert result.channels == {"analysis": REASONING, "final": answer}, (sealed, cut)

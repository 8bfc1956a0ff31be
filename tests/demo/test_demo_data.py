"""The demo training table and the chat templates, checked against the tokenizers saved with the models."""

from __future__ import annotations

import json
import re

import jinja2
import pytest

from models.demo import manifest
from models.demo.data import ITEMS, LEVELS, TOOL_CASES, WEATHER_TOOL, by_question, tools_json, weather_history

MARKERS = re.compile(r"<\|[a-z_]+\|>|</?think>")


def test_every_reasoning_text_names_its_topic_and_no_text_carries_a_marker() -> None:
    for item in ITEMS:
        texts = [item.answer, item.reasoning, *(item.analysis(level) for level in LEVELS), item.commentary or ""]
        assert all(not MARKERS.search(t) for t in texts), item
        assert all(item.topic.lower() in t.lower() for t in (item.reasoning, *map(item.analysis, LEVELS))), item


def test_lookup_by_question_and_bad_inputs_are_named() -> None:
    assert by_question("What is the capital of France?").answer == "Paris"
    with pytest.raises(KeyError, match="not a demo training question"):
        by_question("What is the capital of Atlantis?")
    with pytest.raises(ValueError, match="unknown reasoning level"):
        ITEMS[0].analysis("extreme")


def _template(name: str) -> jinja2.Template:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent)  # transformers' filter
    env.globals["raise_exception"] = lambda message: (_ for _ in ()).throw(jinja2.TemplateError(message))
    return env.from_string((manifest.DEMO_DIR / name / "chat_template.jinja").read_text())


def test_harmony_template_renders_levels_developer_history_and_text_parts() -> None:
    template = _template("demo-harmony")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {
            "role": "assistant",
            "content": "<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>final<|message|>Hello<|return|>",
        },
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "What is 2 + 3?"},
    ]
    text = template.render(messages=messages, add_generation_prompt=True, reasoning_effort="high")
    assert text.startswith("<|start|>system<|message|>")
    assert "Reasoning: high\n\n# Valid channels: analysis, commentary, final." in text
    assert "<|start|>developer<|message|># Instructions\n\nBe brief.\n\nAnswer in English.<|end|>" in text
    assert "<|start|>user<|message|>Hi<|end|><|start|>assistant<|channel|>final<|message|>Hello<|end|>" in text
    assert text.endswith("<|start|>user<|message|>What is 2 + 3?<|end|><|start|>assistant")
    default = template.render(messages=messages[-1:], add_generation_prompt=True)
    assert "Reasoning: medium" in default and "developer" not in default
    with pytest.raises(jinja2.TemplateError, match="reasoning_effort"):
        template.render(messages=messages, add_generation_prompt=True, reasoning_effort="max")
    with pytest.raises(jinja2.TemplateError, match="unknown role"):
        template.render(messages=[{"role": "ipython", "content": "x"}], add_generation_prompt=True)
    with pytest.raises(jinja2.TemplateError, match="without an earlier call"):
        template.render(messages=[{"role": "tool", "content": "x"}], add_generation_prompt=True)


def test_think_template_is_chatml_and_drops_earlier_thinking() -> None:
    template = _template("demo-think")
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>greeting</think>Hello"},
        {"role": "user", "content": "What is 2 + 3?"},
    ]
    assert template.render(messages=messages, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(jinja2.TemplateError, match="unknown role"):
        template.render(messages=[{"role": "ipython", "content": "x"}], add_generation_prompt=True)


def test_templates_render_tools_calls_and_results_in_their_families_formats() -> None:
    tools = tools_json((WEATHER_TOOL,))
    history = weather_history("Oslo", "snowy, 3 C")
    think = _template("demo-think").render(messages=history, tools=tools, add_generation_prompt=True)
    assert think.startswith(
        '<|im_start|>system\n# Tools\n\nYou may call these functions:\n<tools>\n{"type": "function"'
    )
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
        "<|im_end|>\n<|im_start|>user\n<tool_response>\nsnowy, 3 C\n</tool_response><|im_end|>\n"
    ) in think
    harmony = _template("demo-harmony").render(messages=history, tools=tools, add_generation_prompt=True)
    assert "Calls to these tools must go to the commentary channel: 'functions'.<|end|>" in harmony
    assert '<|start|>developer<|message|># Tools\n\n## functions\n{"name": "get_weather"' in harmony
    assert (
        '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Oslo"}<|call|>'
        '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"snowy, 3 C"<|end|>'
        "<|start|>assistant"
    ) in harmony
    # without tools, the prompts are the ones the plain questions were trained on
    plain = [{"role": "user", "content": "Hi"}]
    assert "Tools" not in _template("demo-think").render(messages=plain, add_generation_prompt=True)
    assert "functions" not in _template("demo-harmony").render(messages=plain, add_generation_prompt=True)


def test_tool_cases_cover_every_city_and_result() -> None:
    from models.demo.data import CITIES, CONDITIONS, TEMPERATURES, weather_result

    calls = [c for c in TOOL_CASES if c.result is None]
    answers = [c for c in TOOL_CASES if c.result is not None]
    assert {c.city for c in calls} == set(CITIES) and {len(c.tools) for c in calls} == {1, 2}
    assert {c.result for c in answers} == {weather_result(c, t) for c in CONDITIONS for t in TEMPERATURES}
    for case in answers:
        assert case.result in case.think_completion() and case.result in case.harmony_completion()
        assert not MARKERS.search(case.result)

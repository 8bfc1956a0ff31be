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


def _driver_tool() -> object:
    """`get_weather` as the client matrix's drivers write it: a typed function with a Google-style docstring."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "clients" / "drivers" / "_common.py"
    spec = importlib.util.spec_from_file_location("_driver_common", path)
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    return common.weather_tool("sunny, 21 C", [])


def test_library_tool_shapes_are_what_the_libraries_build() -> None:
    """The oracle is the library itself: the tool object it builds from the drivers' function is the shape the
    models were trained on (the order of keys included, as it reaches the chat template)."""
    from models.demo.data import TOOL_SHAPES, shaped_tool

    agents = pytest.importorskip("agents")
    built = agents.function_tool(_driver_tool())
    ours = shaped_tool(WEATHER_TOOL, TOOL_SHAPES["openai-agents"])["function"]
    assert json.dumps(built.params_json_schema) == json.dumps(ours["parameters"])
    assert (built.description, built.strict_json_schema, ours["strict"]) == (ours["description"], True, True)

    pytest.importorskip("langchain_core")
    from langchain_core.tools import tool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    built = convert_to_openai_tool(tool(_driver_tool()))
    assert json.dumps(built) == json.dumps(shaped_tool(WEATHER_TOOL, TOOL_SHAPES["langchain"]))


def test_variant_cases_keep_the_trained_completions() -> None:
    """Whatever the shape or system prompt, the call and the answer are the trained ones; smolagents' final answer
    holds the result, and its prompt and echoed call render in both templates."""
    from models.demo.data import SMOLAGENTS_PROMPT, VARIANT_CASES, smolagents_cases, think_answer, think_call

    assert {c.shape for c in VARIANT_CASES} >= {"anthropic", "ollama", "openai-agents", "pydantic-ai", "random"}
    for case in smolagents_cases():
        assert case.result is None or case.result in case.think_completion() + case.harmony_completion()
    for case in VARIANT_CASES:
        assert case.tools[0]["function"]["name"] == "get_weather"
        want = think_call(case.city) if case.result is None else think_answer(case.city, case.result)
        assert case.think_completion() == want
    smol = smolagents_cases()[1]
    for name in manifest.MODELS:
        rendered = _template(name).render(
            messages=smol.messages, tools=tools_json(smol.tools), add_generation_prompt=True
        )
        assert SMOLAGENTS_PROMPT in rendered and "final_answer" in rendered and "Observation:" in rendered


def test_smolagents_answers_the_matrix_asks_for_were_not_trained() -> None:
    """The client matrix's smolagents cells ask for answers the models learned the form of, not the answers:
    their (city, result) pairs are not among the trained smolagents cases, nor among the held-out checks' trained
    ones, and the held-out checks hold no trained case."""
    from models.demo.data import MATRIX_RUNS, shape_check_cases, smolagents_cases
    from tests.clients.test_matrix import TOOL_RUNS

    assert set(TOOL_RUNS.values()) == MATRIX_RUNS
    trained = {(c.city, c.result) for c in smolagents_cases() if c.result is not None}
    assert len(trained) == len(smolagents_cases()) - len({c.city for c in smolagents_cases()})  # no repeats
    assert not set(TOOL_RUNS.values()) & trained
    held_out = [c for c in shape_check_cases(20, smolagents=True) if c.smolagents]
    assert held_out and not {(c.city, c.result) for c in held_out} & trained

"""The demo training table and the chat templates, checked against the tokenizers saved with the models."""

from __future__ import annotations

import re

import jinja2
import pytest

from models.demo import manifest
from models.demo.data import ITEMS, LEVELS, by_question

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
        ITEMS[0].analysis("extreme")  # type: ignore[arg-type]


def _template(name: str) -> jinja2.Template:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
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
        template.render(messages=[{"role": "tool", "content": "x"}], add_generation_prompt=True)

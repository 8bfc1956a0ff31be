"""Chat templates that raise or fail (serve/chat/prompts.py): the client's 400 with the template's own words, a
template that iterates over `tools` rendered with none, and one that cannot render a plain conversation refused
at load."""

from __future__ import annotations

import pytest

from serve.chat.channels import Format
from serve.chat.prompts import ChatTemplate, chat_template
from serve.errors import ConfigError, InvalidRequest

HELLO = [{"role": "user", "content": "Hello."}]
# Hermes 3's tool-use template (llama.cpp's models/templates/NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja) in
# short: its system message lists the tools with a bare `for tool in tools`.
ITERATES_TOOLS = (
    "<|im_start|>system\nTools: <tools>{% for tool in tools %}{{ tool.function.name }} {% endfor %}</tools><|im_end|>\n"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Only user messages, as some templates demand, with raise_exception.
USERS_ONLY = (
    "{% for m in messages %}{% if m.role != 'user' %}{{ raise_exception('Only user messages are supported, got ' + "
    "m.role) }}{% endif %}[{{ m.content }}]{% endfor %}"
)
BROKEN = "{% for m in messages %}{{ m.content }}{{ nothing.at_all }}{% endfor %}"  # fails on every conversation


def test_a_template_that_iterates_over_tools_renders_without_tools() -> None:
    prompt = ChatTemplate(ITERATES_TOOLS, Format.THINK).render(HELLO)
    assert prompt.startswith("<|im_start|>system\nTools: <tools></tools>") and "Hello." in prompt


def test_raise_exception_is_the_clients_400_with_the_templates_message() -> None:
    template = chat_template(USERS_ONLY, "llama", "", "")  # a plain conversation renders: it loads
    with pytest.raises(InvalidRequest) as err:
        template.render([*HELLO, {"role": "assistant", "content": "Hi."}, *HELLO])
    assert err.value.status == 400 and err.value.param == "messages"
    assert "Only user messages are supported, got assistant" in err.value.message


def test_a_template_failing_of_itself_is_a_400_not_a_crash() -> None:
    with pytest.raises(InvalidRequest) as err:
        ChatTemplate(BROKEN, Format.THINK).render(HELLO)
    assert "UndefinedError" in err.value.message and "nothing" in err.value.message


def test_a_template_that_cannot_render_a_plain_conversation_is_refused_at_load() -> None:
    for source in (BROKEN, "{% for m in messages %}"):  # a missing variable; a syntax error
        with pytest.raises(ConfigError) as err:
            chat_template(source, "llama", "", "")
        message = str(err.value)
        assert "chat template cannot render a plain conversation" in message and "\n" not in message

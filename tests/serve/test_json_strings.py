"""JSON grammars never let a raw control character into a string (serve/chat/json_strings.py).

The tiny random model (testkit/tiny_gguf.py) has every byte as a token and no preference among them, so under a
grammar it writes whatever the grammar allows: a leak shows up within a few seeds. Every answer that finished
(the grammar's end, not max_tokens) must then be JSON."""

from __future__ import annotations

import json
import queue
import re
from collections.abc import Iterator

import pytest

from serve.chat import answer_grammar
from serve.chat.channels import Format, Thinking
from serve.chat.json_strings import strict_strings
from serve.chat.schemas import ResponseFormat
from serve.chat.tools import grammar as tool_grammar
from serve.chat.tools.formats import ToolFormat
from serve.chat.tools.request import ToolRequest
from serve.engine.engine import Engine, Failed, Finished, Job, Model, Piece, SamplingParams
from serve.engine.grammar import Grammar
from testkit.tiny_gguf import build_tiny_gguf

SEEDS = range(16)
RAW_CONTROL = re.compile(r'\[\^"\\\\\]|\[\^\\x0A\\x0D\]')  # the converter's own string char and `.`
STRING_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 16}, "code": {"type": "string", "pattern": "^a.b$"}},
    "required": ["answer", "code"],
}
TOOL = {"type": "function", "function": {"name": "find", "parameters": STRING_SCHEMA}}


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[Engine, Model]]:
    model = Model(build_tiny_gguf())
    engine = Engine(model, n_seq=4, ctx_per_seq=512, prompt_chunk=32, threads=2)
    engine.start()
    yield engine, model
    engine.stop()
    model.close()


def generate(engine: tuple[Engine, Model], grammar: Grammar, seeds: range = SEEDS) -> list[str]:
    """The texts that finished (reason stop) at temperature 1, one per seed, run four at a time."""
    e, model = engine
    queues: list[queue.Queue[object]] = []
    for seed in seeds:
        q: queue.Queue[object] = queue.Queue()
        params = SamplingParams(max_tokens=160, temperature=1.0, seed=seed, grammar=grammar)
        e.submit(Job(model.tokenize("hello", False), params, q.put))
        queues.append(q)
    finished = []
    for q in queues:
        text = ""
        while True:
            event = q.get(timeout=60)
            if isinstance(event, Piece):
                text += event.text
                continue
            assert not isinstance(event, Failed), event
            assert isinstance(event, Finished)
            if event.reason == "stop":
                finished.append(text)
            break
    return finished


def test_the_grammar_text_excludes_control_characters() -> None:
    for fmt in (ResponseFormat(type="json_object"), _schema_format()):
        text = answer_grammar.build(fmt, Format.THINK, thinks=False)
        assert text is not None and not RAW_CONTROL.search(text.text), text.text
        assert r"\x00-\x1F" in text.text
    for thinking in (Thinking.NONE, Thinking.HARMONY):
        calls = tool_grammar.build(ToolRequest([TOOL], "required"), ToolFormat.HERMES, thinking)
        assert not RAW_CONTROL.search(calls.text) and r"\x00-\x1F" in calls.text
    assert strict_strings("x ::= [^a]") == "x ::= [^a]"  # other rules stay as they are


def test_every_finished_answer_is_json(engine: tuple[Engine, Model]) -> None:
    """Strings of at most 16 characters, so that answers end; json_object's free objects mostly end as `{}` on this
    model, which shows nothing, so its grammar is checked by its text above."""
    grammar = answer_grammar.build(_schema_format(), Format.THINK, False)
    assert grammar is not None
    answers = generate(engine, grammar)
    assert len(answers) >= len(SEEDS) // 2  # enough of them end within max_tokens to mean something
    for text in answers:
        value = json.loads(text)  # raises on a raw control character in a string
        assert value["code"][0] == "a" and value["code"][-1] == "b"


def test_every_finished_tool_call_has_json_arguments(engine: tuple[Engine, Model]) -> None:
    grammar = tool_grammar.build(ToolRequest([TOOL], "required", None, False), ToolFormat.HERMES, Thinking.NONE)
    answers = generate(engine, grammar)
    assert answers
    for text in answers:
        call = json.loads(text.removeprefix("<tool_call>").removesuffix("</tool_call>"))
        assert call["name"] == "find" and isinstance(call["arguments"]["answer"], str)


def _schema_format() -> ResponseFormat:
    return ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "t", "schema": STRING_SCHEMA}})


def test_a_harmony_answer_grammar_keeps_markers_out_of_its_strings() -> None:
    """llama.cpp matches a special token by its text, so `<|end|>` fit a JSON string of a harmony answer and the
    channel parser then ended the final message mid-JSON (a required key lost): the harmony answer grammar's strings
    never hold `<|`, a `<think>` model's still may."""
    from serve.chat.answer_grammar import build
    from serve.chat.channels import Format
    from serve.chat.schemas import ResponseFormat

    fmt = ResponseFormat.model_validate(
        {
            "type": "json_schema",
            "json_schema": {"name": "c", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
        }
    )
    harmony = build(fmt, Format.HARMONY, thinks=True)
    think = build(fmt, Format.THINK, thinks=True)
    assert harmony is not None and think is not None
    assert '"<"+ ([^"\\\\<|' in harmony.text
    assert '"<"+' not in think.text

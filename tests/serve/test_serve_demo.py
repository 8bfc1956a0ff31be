"""The trained demo models through a real server and the `openai` client: trained answers, thinking separated
(whole and streamed), nothing leaking, reasoning levels, JSON constrained after the thinking, batching = solo.

The expected texts come from models/demo/data.py, the table the models were trained on."""

from __future__ import annotations

import concurrent.futures
import json
import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from testkit.servers import running_server

pytestmark = pytest.mark.slow
MARKER = re.compile(r"<\|[a-z_]+\|>|</?think>")
QUESTIONS = ["What is the capital of France?", "What is 7 + 5?", "What is the capital of Japan?", "What is 6 * 7?"]


def _serve(request: pytest.FixtureRequest, name: str) -> Iterator[openai.OpenAI]:
    from models.demo import manifest

    if not manifest.MANIFEST.is_file() or not (manifest.DEMO_DIR / name).is_dir():
        pytest.skip(f"{name} is not trained and committed yet")
    try:
        demo_gguf = request.getfixturevalue("demo_gguf")
    except pytest.FixtureLookupError:
        pytest.skip("the demo_gguf fixture (tests/conftest.py) is not there yet")
    path = demo_gguf(name)
    with running_server(
        "--model-path", str(path), "--alias", "demo", "--max-concurrent", "4", "--ctx-size", "512"
    ) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


@pytest.fixture(scope="module")
def think(request: pytest.FixtureRequest) -> Iterator[openai.OpenAI]:
    yield from _serve(request, "demo-think")


@pytest.fixture(scope="module")
def harmony(request: pytest.FixtureRequest) -> Iterator[openai.OpenAI]:
    yield from _serve(request, "demo-harmony")


def ask(client: openai.OpenAI, question: str, **kw: Any) -> Any:
    return client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": question}], **{"max_tokens": 200, "temperature": 0, **kw}
    )


def streamed(client: openai.OpenAI, question: str, **kw: Any) -> dict[str, str]:
    out = {"content": "", "analysis": "", "commentary": "", "finish": ""}
    for chunk in ask(client, question, stream=True, **kw):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        extra = delta.model_extra or {}
        if delta.content:
            out["content"] += delta.content
        if extra.get("reasoning_content"):
            assert extra["reasoning"] == extra["reasoning_content"]
            out[extra["channel"]] += extra["reasoning_content"]
        out["finish"] = chunk.choices[0].finish_reason or out["finish"]
    return out


def extra(message: Any) -> dict[str, Any]:
    return message.model_extra or {}


def no_leak(*texts: str) -> None:
    for t in texts:
        assert not MARKER.search(t or ""), t


def test_think_trained_answers_whole_and_streamed(think: openai.OpenAI) -> None:
    from models.demo.data import by_question

    for q in QUESTIONS:
        item = by_question(q)
        r = ask(think, q)
        m = r.choices[0].message
        assert r.choices[0].finish_reason == "stop"
        assert m.content == item.answer
        assert extra(m)["reasoning_content"] == extra(m)["reasoning"] == item.reasoning
        assert extra(m)["channels"] == {"analysis": item.reasoning, "final": item.answer}
        usage = r.usage.model_extra
        assert usage["channel_tokens"]["final"] > 0 and usage["thinking_tokens"] == usage["channel_tokens"]["analysis"]
        assert r.usage.completion_tokens_details.reasoning_tokens == usage["thinking_tokens"] > 0
        s = streamed(think, q)
        assert s["content"].strip() == item.answer and s["analysis"].strip() == item.reasoning
        assert s["finish"] == "stop"
        no_leak(m.content, extra(m)["reasoning_content"], s["content"], s["analysis"])
        inline = ask(think, q, extra_body={"separate_thinking": False}).choices[0].message
        assert inline.content == item.think_completion() and "channels" not in extra(inline)


def test_harmony_trained_answers_and_levels(harmony: openai.OpenAI) -> None:
    from models.demo.data import LEVELS, by_question

    for q in QUESTIONS:
        item = by_question(q)
        for level in LEVELS:
            r = ask(harmony, q, reasoning_effort=level)
            m = r.choices[0].message
            assert r.model_extra["reasoning_level"] == level
            assert m.content == item.answer
            channels = extra(m)["channels"]
            assert channels["analysis"] == item.analysis(level)
            assert channels.get("commentary") == item.commentary
            thinking = [item.analysis(level), *([item.commentary] if item.commentary else [])]
            assert extra(m)["reasoning_content"] == "\n\n".join(thinking)
            no_leak(m.content, extra(m)["reasoning_content"], *channels.values())
            counts = r.usage.model_extra["channel_tokens"]
            assert set(counts) == set(channels) and r.usage.model_extra["thinking_tokens"] == counts[
                "analysis"
            ] + counts.get("commentary", 0)
        s = streamed(harmony, q, extra_body={"reasoning": "high"})
        assert s["content"].strip() == item.answer and s["analysis"].strip() == item.analysis("high")
        assert s["commentary"].strip() == (item.commentary or "")
        no_leak(*s.values())
    long_, short = (
        len(extra(ask(harmony, QUESTIONS[0], reasoning_effort=lv).choices[0].message)["reasoning_content"])
        for lv in ("high", "low")
    )
    assert long_ > short


def test_harmony_inline_and_channel_filter(harmony: openai.OpenAI) -> None:
    from models.demo.data import by_question

    item = by_question(QUESTIONS[0])
    m = ask(harmony, QUESTIONS[0], extra_body={"separate_thinking": False}).choices[0].message
    assert m.content == f"[Analysis]\n{item.analysis('medium')}\n[Final]\n{item.answer}"
    m = ask(harmony, QUESTIONS[0], extra_body={"include_channels": ["final"]}).choices[0].message
    assert extra(m)["channels"] == {"final": item.answer}


@pytest.mark.parametrize("fixture", ["think", "harmony"])
def test_json_schema_constrains_only_the_answer(fixture: str, request: pytest.FixtureRequest) -> None:
    from models.demo.data import by_question

    client = request.getfixturevalue(fixture)
    item = by_question(QUESTIONS[0])
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 20}}, "required": ["answer"]}
    r = ask(
        client, QUESTIONS[0], response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    )
    m = r.choices[0].message
    value = json.loads(m.content)
    assert set(value) == {"answer"} and isinstance(value["answer"], str)
    # the thinking was not constrained: it is the trained text
    assert extra(m)["channels"]["analysis"] == (item.reasoning if fixture == "think" else item.analysis("medium"))
    obj = ask(client, QUESTIONS[1], max_tokens=300, response_format={"type": "json_object"}).choices[0]
    if obj.finish_reason == "stop":
        assert isinstance(json.loads(obj.message.content), dict)
    else:
        assert obj.message.content.lstrip().startswith("{")


def _object_schema(keys: tuple[str, ...]) -> dict[str, Any]:
    """A schema of string keys as pydantic and the Anthropic SDK send one: no maxLength, so only the model closes
    its strings."""
    properties = {k: {"title": k.capitalize(), "type": "string"} for k in keys}
    return {"additionalProperties": False, "properties": properties, "required": list(keys), "type": "object"}


@pytest.mark.parametrize("fixture", ["think", "harmony"])
def test_json_answers_are_the_trained_objects(fixture: str, request: pytest.FixtureRequest) -> None:
    """Held to a schema (llama.cpp's grammar after the thinking), every question is answered with the trained object:
    a capital's country and city (the client matrix's schema) or city alone, any other answer as {"answer"}."""
    from models.demo.data import JSON_CASES

    client = request.getfixturevalue(fixture)
    wrong = []
    for case in JSON_CASES:
        fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": _object_schema(case.keys)}}
        choice = ask(client, case.item.question, response_format=fmt).choices[0]
        if (choice.finish_reason, choice.message.content) != ("stop", case.text()):
            wrong.append((case.item.question, case.keys, choice.finish_reason, choice.message.content))
    assert not wrong, f"{len(wrong)} of {len(JSON_CASES)}: {wrong[:5]}"


@pytest.mark.parametrize("fixture", ["think", "harmony"])
def test_sampled_json_answers_close_their_strings(fixture: str, request: pytest.FixtureRequest) -> None:
    """At temperature 1 (the client matrix's runs), the unbounded strings still close: every answer ends and parses."""
    client = request.getfixturevalue(fixture)
    fmt = {"type": "json_schema", "json_schema": {"name": "Capital", "schema": _object_schema(("country", "city"))}}
    for seed in range(1, 17):
        choice = ask(client, QUESTIONS[0], max_tokens=300, temperature=1.0, seed=seed, response_format=fmt).choices[0]
        assert choice.finish_reason == "stop", (seed, choice.message.content)
        assert set(json.loads(choice.message.content)) == {"country", "city"}


@pytest.mark.parametrize("fixture", ["think", "harmony"])
def test_four_concurrent_equal_solo(fixture: str, request: pytest.FixtureRequest) -> None:
    client = request.getfixturevalue(fixture)

    def run(q: str) -> tuple[str, str]:
        m = ask(client, q).choices[0].message
        return m.content, extra(m).get("reasoning_content", "")

    solo = [run(q) for q in QUESTIONS]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, QUESTIONS))
    assert together == solo


def _thought(fixture: str, question: str) -> str:
    from models.demo.data import by_question

    item = by_question(question)
    return item.reasoning if fixture == "think" else item.analysis("medium")


def _analysis_tokens(r: Any) -> int:
    return int(r.usage.model_extra["channel_tokens"].get("analysis", 0))


@pytest.mark.parametrize("fixture", ["think", "harmony"])
def test_thinking_budget_ends_the_thinking_and_the_answer_follows(fixture: str, request: pytest.FixtureRequest) -> None:
    client = request.getfixturevalue(fixture)
    full = _analysis_tokens(ask(client, QUESTIONS[0]))
    # harmony's header word counts to the analysis too: a budget of 0 leaves only it
    header = _analysis_tokens(ask(client, QUESTIONS[0], extra_body={"thinking_budget_tokens": 0}))
    assert full - header > 4
    r = ask(client, QUESTIONS[0], extra_body={"thinking_budget_tokens": 3})
    m = r.choices[0].message
    thought = extra(m)["channels"]["analysis"]
    # the first 3 tokens of the trained thinking, then the close the server wrote, then an answer
    assert _analysis_tokens(r) - header == 3
    assert thought and _thought(fixture, QUESTIONS[0]).startswith(thought)
    assert r.choices[0].finish_reason == "stop" and m.content
    no_leak(m.content, thought)
    s = streamed(client, QUESTIONS[0], extra_body={"thinking_budget_tokens": 3})
    assert s["analysis"].strip() == thought and s["content"].strip() == m.content


@pytest.mark.parametrize("fixture", ["think", "harmony"])
def test_a_grammar_held_answer_gets_half_of_max_tokens(fixture: str, request: pytest.FixtureRequest) -> None:
    client = request.getfixturevalue(fixture)
    n = _analysis_tokens(ask(client, QUESTIONS[0]))
    json_object = {"type": "json_object"}
    # unbounded, the thinking takes every token and no answer begins
    r = ask(client, QUESTIONS[0], max_tokens=n, response_format=json_object, extra_body={"thinking_budget_tokens": n})
    assert r.choices[0].finish_reason == "length" and not (r.choices[0].message.content or "").strip()
    # by default the thinking stops at half of max_tokens (short of its trained end), and the JSON answer begins
    r = ask(client, QUESTIONS[0], max_tokens=2 * n - 4, response_format=json_object)
    thought = extra(r.choices[0].message)["channels"]["analysis"]
    assert thought and _thought(fixture, QUESTIONS[0]).startswith(thought)
    assert len(thought) < len(_thought(fixture, QUESTIONS[0]))
    assert r.choices[0].message.content.lstrip().startswith("{")

"""/v1/messages with the official `anthropic` SDK: both demo models, directly and through the router.

The oracle for answers and thinking is the table the models were trained on (models/demo/data.py); for token
counts, transformers rendering and tokenizing the model's own template. The SDK itself checks the shapes: it
builds its Message from whole responses and accumulates streams event by event (`messages.stream`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from testkit.servers import running_server
from testkit.tiny_gguf import build_tiny_gguf
from tests.serve.api_stack import MODELS, demo_stack, prompt_ids

pytestmark = pytest.mark.slow
MARKUP = re.compile(r"<\|[a-z_]+\|>|</?think>|</?tool_call>|to=functions")
FRANCE, SUM = "What is the capital of France?", "What is 7 + 5?"  # the sum carries a harmony commentary
GREEDY = {"extra_body": {"temperature": 0}}  # this SDK no longer types temperature; the API still takes it
THINK = {"type": "enabled", "budget_tokens": 8000}  # -> medium


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from models.demo import manifest

    if not manifest.MANIFEST.is_file():
        pytest.skip("the demo models are not trained and committed")
    with demo_stack(request.getfixturevalue("demo_gguf"), tmp_path_factory.mktemp("route")) as urls:
        yield urls


def client(stack: dict[str, str], model: str, via: str, key: str = "none") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack["router" if via == "router" else model], api_key=key, max_retries=0)


def ask(question: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": question}]


def expected_thinking(model: str, item: Any, level: str = "medium") -> str:
    if model == "demo-think":
        return item.reasoning
    return "\n\n".join(filter(None, (item.analysis(level), item.commentary)))


def prompt_total(usage: Any) -> int:
    """The whole prompt: Anthropic's input_tokens leaves out what was read from the (prompt) cache."""
    return int(usage.input_tokens + (usage.cache_read_input_tokens or 0))


def kinds(message: Any) -> list[str]:
    return [b.type for b in message.content]


@pytest.mark.parametrize("via", ["direct", "router"])
@pytest.mark.parametrize("model", MODELS)
def test_whole_and_streamed_with_thinking(stack: dict[str, str], model: str, via: str) -> None:
    from models.demo.data import by_question

    c = client(stack, model, via)
    for question in (FRANCE, SUM):
        item = by_question(question)
        whole = c.messages.create(model=model, max_tokens=300, messages=ask(question), thinking=THINK, **GREEDY)
        assert whole.type == "message" and whole.role == "assistant" and whole.id.startswith("msg_")
        assert whole.model == model and whole.stop_reason == "end_turn" and whole.stop_sequence is None
        assert kinds(whole) == ["thinking", "text"]
        thinking, text = whole.content
        assert thinking.thinking == expected_thinking(model, item) and thinking.signature
        assert text.text == item.answer and not MARKUP.search(thinking.thinking + text.text)
        assert prompt_total(whole.usage) == len(prompt_ids(model, ask(question), **_level(model, "medium")))
        assert whole.usage.output_tokens > 0
        with c.messages.stream(model=model, max_tokens=300, messages=ask(question), thinking=THINK, **GREEDY) as s:
            names = [event.type for event in s]
            live = s.get_final_message()
        assert names[0] == "message_start" and names[-1] == "message_stop" and "message_delta" in names
        assert [b.model_dump() for b in live.content] == [b.model_dump() for b in whole.content]
        assert (live.stop_reason, prompt_total(live.usage), live.usage.output_tokens) == (
            whole.stop_reason,
            prompt_total(whole.usage),
            whole.usage.output_tokens,
        )


def _level(model: str, level: str) -> dict[str, str]:
    return {"reasoning_effort": level} if model == "demo-harmony" else {}


def test_thinking_budget_sets_the_level_and_off_hides_it(stack: dict[str, str]) -> None:
    from models.demo.data import by_question

    item = by_question(FRANCE)
    c = client(stack, "demo-harmony", "direct")
    for budget, level in ((1024, "low"), (20000, "high")):
        m = c.messages.create(
            model="demo-harmony",
            max_tokens=300,
            messages=ask(FRANCE),
            thinking={"type": "enabled", "budget_tokens": budget},
            **GREEDY,
        )
        assert m.content[0].thinking == item.analysis(level)
    for model in MODELS:  # no extended thinking asked: no thinking blocks (the models think anyway)
        c = client(stack, model, "direct")
        for thinking in ({}, {"thinking": {"type": "disabled"}}):
            m = c.messages.create(model=model, max_tokens=300, messages=ask(FRANCE), **thinking, **GREEDY)
            assert kinds(m) == ["text"] and m.content[0].text == item.answer and m.stop_reason == "end_turn"


@pytest.mark.parametrize("model", MODELS)
def test_thinking_budget_ends_the_thinking(stack: dict[str, str], model: str) -> None:
    from models.demo.data import by_question

    item = by_question(FRANCE)
    c = client(stack, model, "router")
    m = c.messages.create(
        model=model, max_tokens=300, messages=ask(FRANCE), thinking={"type": "enabled", "budget_tokens": 3}, **GREEDY
    )
    assert kinds(m) == ["thinking", "text"] and m.stop_reason == "end_turn" and m.content[1].text
    thought = m.content[0].thinking
    # the server closed the thinking after 3 tokens: a strict start of the trained thinking
    assert thought and len(thought) < len(expected_thinking(model, item, "low"))
    assert expected_thinking(model, item, "low").startswith(thought)


@pytest.mark.parametrize("model", MODELS)
def test_stop_sequence_and_max_tokens(stack: dict[str, str], model: str) -> None:
    from models.demo.data import by_question

    item = by_question(FRANCE)
    c = client(stack, model, "direct")
    thought = expected_thinking(model, item)
    word = thought.split()[3]
    kw = {"model": model, "max_tokens": 300, "messages": ask(FRANCE), "thinking": THINK, "stop_sequences": [word]}
    whole = c.messages.create(**kw, **GREEDY)
    with c.messages.stream(**kw, **GREEDY) as s:
        live = s.get_final_message()
    for m in (whole, live):
        assert m.stop_reason == "stop_sequence" and m.stop_sequence == word
        assert kinds(m) == ["thinking"] and m.content[0].thinking == thought[: thought.index(word)].strip()
    m = c.messages.create(model=model, max_tokens=3, messages=ask(FRANCE), thinking=THINK, **GREEDY)
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 3


@pytest.mark.parametrize("model", MODELS)
def test_count_tokens_and_thinking_history(stack: dict[str, str], model: str) -> None:
    from models.demo.data import by_question

    c = client(stack, model, "direct")
    first = c.messages.create(model=model, max_tokens=300, messages=ask(FRANCE), thinking=THINK, **GREEDY)
    # the answer goes back as is (thinking block, signature and all) and the conversation goes on
    history = [
        *ask(FRANCE),
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        *ask(SUM),
    ]
    counted = c.messages.count_tokens(model=model, messages=history, system="Be brief.", thinking=THINK)
    oracle = [
        {"role": "system", "content": "Be brief."},
        *ask(FRANCE),
        {
            "role": "assistant",
            "content": first.content[1].text,
            "reasoning_content": first.content[0].thinking,
            "thinking": first.content[0].thinking,
        },
        *ask(SUM),
    ]
    assert counted.input_tokens == len(prompt_ids(model, oracle, **_level(model, "medium")))
    second = c.messages.create(
        model=model, max_tokens=300, messages=history, system="Be brief.", thinking=THINK, **GREEDY
    )
    assert prompt_total(second.usage) == counted.input_tokens and second.stop_reason in ("end_turn", "max_tokens")
    assert by_question(SUM).answer  # the table is the one the models learned


@pytest.mark.parametrize("via", ["direct", "router"])
@pytest.mark.parametrize("model", MODELS)
def test_tool_round_trip(stack: dict[str, str], model: str, via: str) -> None:
    from models.demo.data import WEATHER_TOOL, tools_json, weather_question, weather_result

    fn = tools_json((WEATHER_TOOL,))[0]["function"]
    tool = {"name": fn["name"], "description": fn["description"], "input_schema": fn["parameters"]}
    c = client(stack, model, via)
    city, result = "Oslo", weather_result("snowy", 3)
    question = ask(weather_question(city))
    first = c.messages.create(model=model, max_tokens=300, messages=question, tools=[tool], thinking=THINK, **GREEDY)
    assert first.stop_reason == "tool_use" and kinds(first) == ["thinking", "tool_use"]
    use = first.content[1]
    assert use.name == "get_weather" and use.input == {"city": city} and use.id
    with c.messages.stream(model=model, max_tokens=300, messages=question, tools=[tool], thinking=THINK, **GREEDY) as s:
        live = s.get_final_message()
    assert live.stop_reason == "tool_use" and live.content[1].input == {"city": city} and live.content[1].id != use.id
    follow = [
        *question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": result}]},
    ]
    second = c.messages.create(model=model, max_tokens=300, messages=follow, tools=[tool], thinking=THINK, **GREEDY)
    assert second.stop_reason == "end_turn" and kinds(second)[-1] == "text"
    answer = second.content[-1].text
    assert result in answer and city in answer and not MARKUP.search(answer)


@pytest.mark.parametrize("via", ["direct", "router"])
def test_errors_are_anthropic_shaped(stack: dict[str, str], via: str) -> None:
    c = client(stack, "demo-think", via)
    good = {"model": "demo-think", "max_tokens": 10, "messages": ask(FRANCE)}
    cases: list[tuple[dict[str, Any], type[anthropic.APIStatusError], str, str]] = [
        (
            {k: v for k, v in good.items() if k != "max_tokens"},
            anthropic.BadRequestError,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            {**good, "messages": [{"role": "system", "content": "hi"}]},
            anthropic.BadRequestError,
            "invalid_request_error",
            "messages.0.role",
        ),
        (
            {**good, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            anthropic.BadRequestError,
            "invalid_request_error",
            "'document' content blocks are not supported",
        ),
        ({**good, "model": "no-such-model"}, anthropic.NotFoundError, "not_found_error", "no-such-model"),
    ]
    for body, error, kind, words in cases:
        with pytest.raises(error) as caught:
            c.post("/v1/messages", body=body, cast_to=anthropic.types.Message)  # the SDK would refuse some itself
        assert caught.value.body["type"] == "error" and caught.value.type == kind
        assert words in (caught.value.api_message or "")
    with pytest.raises(anthropic.NotFoundError) as caught:
        c.messages.count_tokens(model="no-such-model", messages=ask(FRANCE))
    assert caught.value.type == "not_found_error"


def test_wrong_key_is_401(tmp_path: Path) -> None:
    from hearth_common.keys import write_key_file

    write_key_file(tmp_path / "key", "sekret")
    with running_server(
        "--model-path",
        str(build_tiny_gguf()),
        "--model-name",
        "tiny",
        "--ctx-size",
        "256",
        "--api-key-file",
        str(tmp_path / "key"),
    ) as url:
        good = anthropic.Anthropic(base_url=url, api_key="sekret", max_retries=0)
        assert good.messages.create(model="tiny", max_tokens=2, messages=ask("hi")).usage.output_tokens == 2
        for key in ("wrong", "sekret-not"):
            bad = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)
            with pytest.raises(anthropic.AuthenticationError) as caught:
                bad.messages.create(model="tiny", max_tokens=2, messages=ask("hi"))
            assert caught.value.status_code == 401 and caught.value.type == "authentication_error"


def test_readme_examples_run(stack: dict[str, str]) -> None:
    """The README's Anthropic and Responses examples, run as written against the router (only the URL changes)."""
    import subprocess
    import sys

    from models.demo.data import by_question
    from testkit.servers import REPO

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Anthropic and Responses clients", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    item = by_question(FRANCE)
    # as written they sample (temperature 1): the trained answer, as the e2e test of the Python client expects
    for block, lines in zip(blocks, (["thinking -> ", "text -> "], [""]), strict=True):
        code = block.replace("http://127.0.0.1:8080", stack["router"])
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        out = run.stdout.splitlines()
        assert len(out) == len(lines) and all(o.startswith(p) for o, p in zip(out, lines, strict=True))
        assert out[-1].endswith(f"-> {item.answer}")


class _Weather(anthropic.lib.tools.BetaBuiltinFunctionTool):
    """The demo models' weather tool, as the SDK's tool runner calls it: its definition as trained."""

    def __init__(self, result: str) -> None:
        from models.demo.data import WEATHER_TOOL, tools_json

        fn = tools_json((WEATHER_TOOL,))[0]["function"]
        self.definition = {"name": fn["name"], "description": fn["description"], "input_schema": fn["parameters"]}
        self.result, self.calls = result, []  # type: list[object]

    def to_dict(self) -> Any:
        return self.definition

    def call(self, input: object) -> str:
        self.calls.append(input)
        return self.result


@pytest.mark.parametrize("via", ["direct", "router"])
@pytest.mark.parametrize("model", MODELS)
def test_tool_runner_falls_back_from_threads(stack: dict[str, str], model: str, via: str) -> None:
    """`beta.messages.tool_runner` threads its requests (`thread`: create, then continue with only the tool result);
    this server answers 400 thread_unsupported_request, and the runner goes on with the whole history."""
    import httpx2

    from models.demo.data import weather_question, weather_result

    sent: list[dict[str, Any]] = []

    def record(request: httpx2.Request) -> None:
        sent.append(json.loads(request.content))

    http = httpx2.Client(event_hooks={"request": [record]})
    base = stack["router" if via == "router" else model]
    c = anthropic.Anthropic(base_url=base, api_key="none", max_retries=0, http_client=http)
    city, result = "Oslo", weather_result("snowy", 3)
    tool = _Weather(result)
    runner = c.beta.messages.tool_runner(
        model=model, max_tokens=300, messages=ask(weather_question(city)), tools=[tool], thinking=THINK, **GREEDY
    )
    final = runner.until_done()
    assert tool.calls == [{"city": city}]
    assert final.stop_reason == "end_turn" and final.content[-1].type == "text"
    answer = final.content[-1].text
    assert result in answer and city in answer and not MARKUP.search(answer)
    assert "thread" in sent[0] and all("thread" not in body for body in sent[1:])  # refused once, then dropped
    assert len(sent[-1]["messages"]) == 3  # the whole history: question, the call, its result

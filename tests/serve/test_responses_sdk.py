"""/v1/responses with the official `openai` SDK (`responses.create`, `responses.stream`): both demo models,
directly and through the router.

The oracle for answers and reasoning is the table the models were trained on (models/demo/data.py); for token
counts, transformers rendering and tokenizing the model's own template. The SDK's stream helper checks the event
protocol as it accumulates (items added before their deltas, every item done before `response.completed`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.serve.api_stack import MODELS, demo_stack, prompt_ids

pytestmark = pytest.mark.slow
MARKUP = re.compile(r"<\|[a-z_]+\|>|</?think>|</?tool_call>|to=functions")
FRANCE, SUM = "What is the capital of France?", "What is 7 + 5?"  # the sum carries a harmony commentary


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from models.demo import manifest

    if not manifest.MANIFEST.is_file():
        pytest.skip("the demo models are not trained and committed")
    with demo_stack(request.getfixturevalue("demo_gguf"), tmp_path_factory.mktemp("route")) as urls:
        yield urls


def client(stack: dict[str, str], model: str, via: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["router" if via == "router" else model] + "/v1", api_key="none", max_retries=0)


def expected_reasoning(model: str, item: Any, level: str = "medium") -> str:
    if model == "demo-think":
        return item.reasoning
    return "\n\n".join(filter(None, (item.analysis(level), item.commentary)))


def _level(model: str, level: str) -> dict[str, str]:
    return {"reasoning_effort": level} if model == "demo-harmony" else {}


def shape(response: Any) -> list[tuple[Any, ...]]:
    """The output without ids (every response has its own)."""
    out: list[tuple[Any, ...]] = []
    for item in response.output:
        if item.type == "reasoning":
            out.append(("reasoning", [c.text for c in item.content or ()], item.summary))
        elif item.type == "message":
            out.append(("message", item.role, item.status, [(c.type, c.text, c.annotations) for c in item.content]))
        else:
            out.append(("function_call", item.name, item.arguments, item.status))
    return out


@pytest.mark.parametrize("via", ["direct", "router"])
@pytest.mark.parametrize("model", MODELS)
def test_text_and_reasoning_whole_and_streamed(stack: dict[str, str], model: str, via: str) -> None:
    from models.demo.data import by_question

    c = client(stack, model, via)
    for question in (FRANCE, SUM):
        item = by_question(question)
        whole = c.responses.create(model=model, input=question, temperature=0)
        assert whole.object == "response" and whole.status == "completed" and whole.id.startswith("resp_")
        assert whole.error is None and whole.incomplete_details is None and whole.model == model
        assert shape(whole) == [
            ("reasoning", [expected_reasoning(model, item)], []),
            ("message", "assistant", "completed", [("output_text", item.answer, [])]),
        ]
        assert whole.output_text == item.answer and not MARKUP.search(whole.output[0].content[0].text)
        usage = whole.usage
        assert usage.input_tokens == len(
            prompt_ids(model, [{"role": "user", "content": question}], **_level(model, "medium"))
        )
        assert 0 < usage.output_tokens_details.reasoning_tokens < usage.output_tokens
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens
        with c.responses.stream(model=model, input=question, temperature=0) as s:
            events = list(s)
            live = s.get_final_response()
        names = [e.type for e in events]
        assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.completed"
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert "response.reasoning_text.delta" in names and "response.output_text.delta" in names
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        reasoning = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
        assert (reasoning, text) == (expected_reasoning(model, item), item.answer)
        assert shape(live) == shape(whole) and live.usage.output_tokens == usage.output_tokens


def test_reasoning_effort_and_instructions(stack: dict[str, str]) -> None:
    from models.demo.data import by_question

    item = by_question(FRANCE)
    c = client(stack, "demo-harmony", "direct")
    for effort, level in (("low", "low"), ("high", "high"), ("minimal", "low"), ("xhigh", "high")):
        r = c.responses.create(model="demo-harmony", input=FRANCE, reasoning={"effort": effort}, temperature=0)
        assert r.output[0].content[0].text == item.analysis(level) and r.reasoning.effort == effort
    for model in MODELS:  # instructions: the developer message (harmony) or the system message, as chat renders
        r = client(stack, model, "direct").responses.create(
            model=model, input=FRANCE, instructions="Be brief.", max_output_tokens=5, temperature=0
        )
        oracle = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": FRANCE}]
        assert r.usage.input_tokens == len(prompt_ids(model, oracle, **_level(model, "medium")))
        assert r.instructions == "Be brief."


@pytest.mark.parametrize("model", MODELS)
def test_max_output_tokens_is_incomplete(stack: dict[str, str], model: str) -> None:
    c = client(stack, model, "direct")
    r = c.responses.create(model=model, input=FRANCE, max_output_tokens=4, temperature=0)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 4 and r.max_output_tokens == 4
    with c.responses.stream(model=model, input=FRANCE, max_output_tokens=4, temperature=0) as s:
        events = list(s)
    assert events[-1].type == "response.incomplete" and events[-1].response.status == "incomplete"
    assert [o.type for o in events[-1].response.output] == [o.type for o in r.output]


@pytest.mark.parametrize("model", MODELS)
def test_json_schema_format(stack: dict[str, str], model: str) -> None:
    from models.demo.data import by_question

    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 20}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    fmt = {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}}
    c = client(stack, model, "direct")
    r = c.responses.create(model=model, input=FRANCE, text=fmt, temperature=0, max_output_tokens=200)
    value = json.loads(r.output_text)
    assert set(value) == {"answer"} and isinstance(value["answer"], str)
    assert r.output[0].content[0].text == expected_reasoning(model, by_question(FRANCE))  # the thinking is free
    assert r.text.format.type == "json_schema"
    with c.responses.stream(model=model, input=FRANCE, text=fmt, temperature=0, max_output_tokens=200) as s:
        live = s.get_final_response()
    assert live.output_text == r.output_text


@pytest.mark.parametrize("via", ["direct", "router"])
@pytest.mark.parametrize("model", MODELS)
def test_function_call_round_trip(stack: dict[str, str], model: str, via: str) -> None:
    from models.demo.data import WEATHER_TOOL, tools_json, weather_question, weather_result

    fn = tools_json((WEATHER_TOOL,))[0]["function"]
    tool = {
        "type": "function",
        "name": fn["name"],
        "description": fn["description"],
        "parameters": fn["parameters"],
        "strict": True,
    }
    c = client(stack, model, via)
    city, result = "Oslo", weather_result("snowy", 3)
    first = c.responses.create(model=model, input=weather_question(city), tools=[tool], temperature=0)
    assert [o.type for o in first.output] == ["reasoning", "function_call"] and first.status == "completed"
    call = first.output[1]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": city} and call.call_id
    assert call.status == "completed" and call.id and call.id != call.call_id
    with c.responses.stream(model=model, input=weather_question(city), tools=[tool], temperature=0) as s:
        events = list(s)
        live = s.get_final_response()
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"city": city} and shape(live)[1][:3] == shape(first)[1][:3]
    follow = [
        {"role": "user", "content": weather_question(city)},
        *first.output,
        {"type": "function_call_output", "call_id": call.call_id, "output": result},
    ]
    second = c.responses.create(model=model, input=follow, tools=[tool], temperature=0)
    assert second.output[-1].type == "message" and result in second.output_text and city in second.output_text
    assert not MARKUP.search(second.output_text)


def test_store_and_previous_response_id(stack: dict[str, str]) -> None:
    from models.demo.data import by_question

    model = "demo-harmony"
    c = client(stack, model, "router")
    first = c.responses.create(model=model, input=FRANCE, temperature=0)
    second = c.responses.create(
        model=model, input=SUM, previous_response_id=first.id, temperature=0, max_output_tokens=5
    )
    # the stored turn comes first: the prompt is the whole conversation, as chat renders it
    reasoning = expected_reasoning(model, by_question(FRANCE))
    oracle = [
        {"role": "user", "content": FRANCE},
        {"role": "assistant", "content": first.output_text, "thinking": reasoning, "reasoning_content": reasoning},
        {"role": "user", "content": SUM},
    ]
    assert second.usage.input_tokens == len(prompt_ids(model, oracle, reasoning_effort="medium"))
    assert second.previous_response_id == first.id
    unstored = c.responses.create(model=model, input=FRANCE, store=False, max_output_tokens=2)
    with pytest.raises(openai.BadRequestError) as caught:
        c.responses.create(model=model, input=SUM, previous_response_id=unstored.id)
    assert caught.value.code == "previous_response_not_found" and caught.value.param == "previous_response_id"


@pytest.mark.parametrize("via", ["direct", "router"])
def test_errors(stack: dict[str, str], via: str) -> None:
    c = client(stack, "demo-think", via)
    cases: list[tuple[dict[str, Any], type[openai.APIStatusError], str | None, str]] = [
        ({"model": "no-such-model", "input": FRANCE}, openai.NotFoundError, "model_not_found", "no-such-model"),
        (
            {"model": "demo-think", "input": FRANCE, "tools": [{"type": "web_search"}]},
            openai.BadRequestError,
            "invalid_request",
            "function tools only",
        ),
        (
            {"model": "demo-think", "input": [{"type": "item_reference", "id": "x"}]},
            openai.BadRequestError,
            "invalid_request",
            "'item_reference' input items are not supported",
        ),
        (
            {
                "model": "demo-think",
                "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "x"}]}],
            },
            openai.BadRequestError,
            "invalid_request",
            "'input_file' content parts are not supported",
        ),
        (
            {"model": "demo-think", "input": [{"type": "function_call_output", "call_id": "nope", "output": "1"}]},
            openai.BadRequestError,
            "invalid_request",
            "no earlier function_call",
        ),
        (
            {"model": "demo-think", "input": FRANCE, "max_output_tokens": 5000},
            openai.BadRequestError,
            "context_length_exceeded",
            "maximum context length",
        ),
    ]
    for body, error, code, words in cases:
        with pytest.raises(error) as caught:
            c.responses.create(**body)
        assert caught.value.code == code and words in caught.value.message


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("summary", ["auto", "concise", "detailed"])
def test_reasoning_summary_when_asked(stack: dict[str, str], model: str, summary: str) -> None:
    """`reasoning.summary` asked: the reasoning item's summary holds the reasoning (clients read it there), whole
    and streamed as OpenAI streams it (summary part added, summary text deltas and done, part done)."""
    from models.demo.data import by_question

    c = client(stack, model, "direct")
    want = expected_reasoning(model, by_question(FRANCE))
    asked = {"reasoning": {"summary": summary}}
    whole = c.responses.create(model=model, input=FRANCE, temperature=0, **asked)  # type: ignore[arg-type]
    reasoning = whole.output[0]
    assert reasoning.type == "reasoning" and [(p.type, p.text) for p in reasoning.summary] == [("summary_text", want)]
    assert [p.text for p in reasoning.content or ()] == [want] and whole.reasoning.summary == summary
    with c.responses.stream(model=model, input=FRANCE, temperature=0, **asked) as s:  # type: ignore[arg-type]
        events = list(s)
        live = s.get_final_response()
    names = [e.type for e in events]
    added, done = (
        names.index("response.reasoning_summary_part.added"),
        names.index("response.reasoning_summary_part.done"),
    )
    assert (
        names.index("response.output_item.added") < added < names.index("response.reasoning_summary_text.done") < done
    )
    assert done < names.index("response.output_item.done")
    deltas = [e for e in events if e.type == "response.reasoning_summary_text.delta"]
    assert "".join(e.delta for e in deltas) == want and all(e.summary_index == 0 for e in deltas)
    assert next(e for e in events if e.type == "response.reasoning_summary_text.done").text == want
    assert [p.text for p in live.output[0].summary] == [want]
    plain = c.responses.create(model=model, input=FRANCE, temperature=0)  # not asked: no summary, as before
    assert plain.output[0].summary == [] and plain.reasoning.summary is None

"""Ollama's API (/api/chat, /api/generate, /api/embed, /api/embeddings, /api/show) with the official `ollama`
client against real model servers: both demo models and the embedding fixture, one server each for the module.

The oracle for answers and thinking is the table the demo models were trained on (models/demo/data.py); for
vectors, the same server's /v1/embeddings. The client checks the shapes: it builds its ChatResponse,
GenerateResponse, ShowResponse and EmbedResponse from our objects and raises ResponseError on error bodies."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ollama
import pytest

from testkit.servers import running_server

pytestmark = pytest.mark.slow
FRANCE = "What is the capital of France?"
GREEDY = {"temperature": 0}
KEY = "ollama-test-key"


@pytest.fixture(scope="module")
def servers(demo_gguf: Callable[[str], Path], embedding_gguf: Path) -> Iterator[dict[str, str]]:
    from models.demo import manifest

    if not manifest.MANIFEST.is_file():
        pytest.skip("the demo models are not trained and committed")
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(
                running_server("--model-path", str(demo_gguf(name)), "--model-name", name, "--ctx-size", "1024")
            )
            for name in ("demo-think", "demo-harmony")
        }
        # the embedding server requires an API key (read from the environment it starts with)
        os.environ["HEARTH_SERVE_API_KEY"] = KEY
        try:
            embed = running_server(
                "--model-path", str(embedding_gguf), "--embeddings", "--model-name", "qe", "--ctx-size", "64"
            )
            urls["qe"] = stack.enter_context(embed)
        finally:
            del os.environ["HEARTH_SERVE_API_KEY"]
        yield urls


def client(servers: dict[str, str], model: str) -> ollama.Client:
    headers = {"Authorization": f"Bearer {KEY}"} if model == "qe" else None
    return ollama.Client(host=servers[model], headers=headers)


def ask(question: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": question}]


def joined(chunks: Iterator[Any], field: Callable[[Any], tuple[str, str]]) -> tuple[str, str, list[Any]]:
    """A stream's (content, thinking) joined, and its chunks; every chunk but the last is not done."""
    seen = list(chunks)
    assert [c.done for c in seen] == [False] * (len(seen) - 1) + [True]
    parts = [field(c) for c in seen]
    return "".join(p[0] for p in parts), "".join(p[1] for p in parts), seen


def chat_fields(c: Any) -> tuple[str, str]:
    return c.message.content or "", c.message.thinking or ""


def generate_fields(c: Any) -> tuple[str, str]:
    return c.response or "", c.thinking or ""


def counted(r: Any) -> None:
    """The final object's counters: Ollama's fields, in nanoseconds."""
    assert r.prompt_eval_count > 0 and r.eval_count > 0 and r.load_duration == 0
    assert r.total_duration >= r.prompt_eval_duration + r.eval_duration > 0
    assert datetime.fromisoformat(r.created_at.replace("Z", "+00:00")).tzinfo is not None


def test_chat_whole_and_streamed(servers: dict[str, str]) -> None:
    from models.demo.data import by_question

    item = by_question(FRANCE)
    c = client(servers, "demo-think")
    whole = c.chat(model="demo-think:latest", messages=ask(FRANCE), options=GREEDY)
    assert whole.model == "demo-think:latest" and whole.done and whole.done_reason == "stop"
    assert whole.message.role == "assistant" and whole.message.content == item.answer
    assert whole.message.thinking == item.reasoning  # thinking models think by default, as in Ollama
    counted(whole)
    content, thinking, chunks = joined(
        c.chat(model="demo-think", messages=ask(FRANCE), options=GREEDY, stream=True), chat_fields
    )
    assert (content, thinking) == (whole.message.content, whole.message.thinking)
    assert chunks[-1].done_reason == "stop" and chunks[-1].eval_count == whole.eval_count
    assert chunks[-1].model == "demo-think"
    with httpx.stream(
        "POST", servers["demo-think"] + "/api/chat", json={"model": "demo-think", "messages": ask(FRANCE)}
    ) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert json.loads(list(r.iter_lines())[-1])["done"] is True


def test_generate_whole_streamed_and_raw(servers: dict[str, str]) -> None:
    from models.demo.data import by_question

    item = by_question(FRANCE)
    c = client(servers, "demo-think")
    whole = c.generate(model="demo-think", prompt=FRANCE, options=GREEDY)
    assert (whole.response, whole.thinking, whole.done_reason) == (item.answer, item.reasoning, "stop")
    counted(whole)
    content, thinking, _ = joined(
        c.generate(model="demo-think", prompt=FRANCE, options=GREEDY, stream=True), generate_fields
    )
    assert (content, thinking) == (whole.response, whole.thinking)
    # raw: the prompt as is, no template, the model's text as it comes (markers and all)
    prompt = f"<|im_start|>user\n{FRANCE}<|im_end|>\n<|im_start|>assistant\n"
    raw = c.generate(model="demo-think", prompt=prompt, raw=True, options=GREEDY)
    assert raw.response == item.think_completion() and raw.thinking is None
    content, _, _ = joined(
        c.generate(model="demo-think", prompt=prompt, raw=True, options=GREEDY, stream=True), generate_fields
    )
    assert content == raw.response
    # preload: no prompt, nothing generated
    assert c.generate(model="demo-think").done_reason == "load"
    assert c.chat(model="demo-think", messages=[]).done_reason == "load"


def test_think_levels_and_off(servers: dict[str, str]) -> None:
    from models.demo.data import by_question

    item = by_question(FRANCE)
    h = client(servers, "demo-harmony")
    for level in ("low", "medium", "high"):
        r = h.chat(model="demo-harmony", messages=ask(FRANCE), think=level, options=GREEDY)
        assert r.message.thinking == item.analysis(level) and r.message.content == item.answer
    for model in ("demo-think", "demo-harmony"):
        c = client(servers, model)
        off = c.chat(model=model, messages=ask(FRANCE), think=False, options=GREEDY)
        assert off.message.thinking is None and off.message.content == item.answer
        content, thinking, _ = joined(
            c.chat(model=model, messages=ask(FRANCE), think=False, options=GREEDY, stream=True), chat_fields
        )
        assert (content, thinking) == (item.answer, "")
        on = c.generate(model=model, prompt=FRANCE, think=True, options=GREEDY)
        assert on.thinking and on.response == item.answer


def wire_chat(url: str, body: dict[str, Any]) -> list[ollama.ChatResponse]:
    """POST /api/chat as JSON we write ourselves, each line read as the client's ChatResponse."""
    with httpx.stream("POST", url + "/api/chat", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        return [ollama.ChatResponse.model_validate_json(line) for line in r.iter_lines() if line]


@pytest.mark.parametrize("model", ["demo-think", "demo-harmony"])
def test_tool_round_trip(servers: dict[str, str], model: str) -> None:
    """demo-think through the client; demo-harmony on the wire, because the client re-serializes a tool's
    parameters as `required` before `properties`, and demo-harmony only knows the order it was trained on."""
    from models.demo.data import WEATHER_TOOL, tools_json, weather_question, weather_result

    c = client(servers, model)
    city, result = "Oslo", weather_result("snowy", 3)
    tools = tools_json((WEATHER_TOOL,))

    def chat(messages: list[Any], stream: bool = False) -> Any:
        if model == "demo-think":
            return c.chat(model=model, messages=messages, tools=tools, options=GREEDY, stream=stream)
        plain = [m.model_dump(exclude_none=True) if isinstance(m, ollama.Message) else m for m in messages]
        body = {"model": model, "messages": plain, "tools": tools, "options": GREEDY, "stream": stream}
        lines = wire_chat(servers[model], body)
        return iter(lines) if stream else lines[0]

    messages: list[Any] = ask(weather_question(city))
    first = chat(messages)
    assert first.done_reason == "stop" and not first.message.content and first.message.thinking
    (call,) = first.message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == {"city": city}
    streamed = list(chat(messages, stream=True))
    calls = [tc for ch in streamed for tc in ch.message.tool_calls or []]
    assert [(tc.function.name, tc.function.arguments) for tc in calls] == [("get_weather", {"city": city})]
    assert streamed[-1].done_reason == "stop"
    # the answer goes back as the client holds it (no call id), the result named by tool_name
    messages += [first.message, {"role": "tool", "content": result, "tool_name": "get_weather"}]
    second = chat(messages)
    assert second.done_reason == "stop" and not second.message.tool_calls
    assert result in second.message.content and city in second.message.content


def test_format_json_schema_and_json(servers: dict[str, str]) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 20}}, "required": ["answer"]}
    c = client(servers, "demo-think")
    r = c.chat(model="demo-think", messages=ask(FRANCE), format=schema, options=GREEDY)
    value = json.loads(r.message.content)
    assert set(value) == {"answer"} and isinstance(value["answer"], str) and len(value["answer"]) <= 20
    # "json": any object (the tiny model may ramble inside one until num_predict cuts it)
    g = c.generate(model="demo-think", prompt=FRANCE, format="json", options={**GREEDY, "num_predict": 100})
    if g.done_reason == "stop":
        assert isinstance(json.loads(g.response), dict)
    else:
        assert g.done_reason == "length" and g.response.startswith("{")


def test_num_predict_gives_length(servers: dict[str, str]) -> None:
    c = client(servers, "demo-think")
    options = {**GREEDY, "num_predict": 3, "num_ctx": 99999, "mirostat": 2, "no_such_option": [1]}
    r = c.chat(model="demo-think", messages=ask(FRANCE), options=options)
    assert (r.done_reason, r.eval_count) == ("length", 3)
    last = list(c.generate(model="demo-think", prompt=FRANCE, options=options, stream=True))[-1]
    assert (last.done_reason, last.eval_count) == ("length", 3)


def test_show(servers: dict[str, str]) -> None:
    think = client(servers, "demo-think").show("demo-think:latest")
    assert think.capabilities == ["completion", "tools", "thinking"]
    assert think.details is not None and think.details.format == "gguf" and think.details.family == "qwen3"
    assert think.details.parameter_size and think.details.quantization_level
    assert think.modelinfo is not None and think.modelinfo["general.architecture"] == "qwen3"
    assert think.modelinfo["tokenizer.ggml.tokens"] is None and "<think>" in (think.template or "")
    assert think.parameters == "num_ctx 1024"
    harmony = client(servers, "demo-harmony").show("demo-harmony")
    assert harmony.capabilities is not None and "thinking" in harmony.capabilities
    qe = client(servers, "qe").show("qe")
    assert qe.capabilities == ["embedding"]


def test_embed_and_embeddings(servers: dict[str, str]) -> None:
    c = client(servers, "qe")
    texts = ["The cat sat on the mat.", "Paris is the capital of France."]
    r = c.embed(model="qe:latest", input=texts)
    vectors = np.array(r.embeddings)
    assert vectors.shape[0] == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert r.prompt_eval_count and r.prompt_eval_count > 0 and r.model == "qe:latest"
    openai_body = httpx.post(
        servers["qe"] + "/v1/embeddings", json={"input": texts}, headers={"Authorization": f"Bearer {KEY}"}
    ).json()
    assert np.allclose(vectors, [d["embedding"] for d in openai_body["data"]], atol=1e-6)
    one = c.embed(model="qe", input=texts[0], dimensions=8)
    short = np.array(one.embeddings[0])
    assert short.shape == (8,) and abs(np.linalg.norm(short) - 1) < 1e-5
    # the older call: the vector as the model pools it, not normalized
    legacy = np.array(c.embeddings(model="qe", prompt=texts[0]).embedding)
    assert np.allclose(legacy / np.linalg.norm(legacy), vectors[0], atol=1e-5)
    assert abs(np.linalg.norm(legacy) - 1) > 1e-3
    long_text = "word " * 200
    assert len(c.embed(model="qe", input=long_text).embeddings) == 1  # truncated to the context
    with pytest.raises(ollama.ResponseError) as err:
        c.embed(model="qe", input=long_text, truncate=False)
    assert err.value.status_code == 400 and "context length" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=servers["qe"]).embed(model="qe", input="hi")  # no key
    assert err.value.status_code == 401


def test_unknown_model_and_refusals(servers: dict[str, str]) -> None:
    c = client(servers, "demo-think")
    calls: list[Callable[[], Any]] = [
        lambda: c.chat(model="x", messages=ask(FRANCE)),
        lambda: c.chat(model="demo-think:7b", messages=ask(FRANCE), stream=True),
        lambda: c.generate(model="x", prompt=FRANCE),
        lambda: c.show("x"),
    ]
    for call in calls:
        with pytest.raises(ollama.ResponseError) as err:
            result = call()
            if not isinstance(result, ollama.ChatResponse | ollama.ShowResponse | ollama.GenerateResponse):
                list(result)
        assert err.value.status_code == 404 and err.value.error.startswith("model '") and "not found" in err.value.error
    refused = [
        ({"prompt": "def f(", "suffix": "return x"}, "suffix"),
        ({"prompt": FRANCE, "images": ["aGVsbG8="]}, "images"),
        ({"prompt": FRANCE, "raw": True, "format": "json"}, "raw"),
        ({"prompt": FRANCE, "options": {"temperature": "hot"}}, "options.temperature"),
    ]
    for fields, word in refused:
        r = httpx.post(servers["demo-think"] + "/api/generate", json={"model": "demo-think", "stream": False, **fields})
        assert r.status_code == 400 and word in r.json()["error"], r.text
    r = httpx.post(servers["demo-think"] + "/api/embed", json={"model": "demo-think", "input": "hi"})
    assert r.status_code == 400 and "error" in r.json()
    r = httpx.post(
        servers["qe"] + "/api/chat",
        json={"model": "qe", "messages": ask(FRANCE)},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 400 and "error" in r.json()


WRONG = [None, True, 0, -1, 1.5, 10**30, 1e308, "x", "", [], [1], {}, {"a": 1}]


def _fuzzed(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`body` with each field, and each known option, set to each wrong value in turn."""
    for key in body:
        for value in WRONG:
            yield {**body, key: value}
    for key in (
        "num_predict",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "stop",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "num_ctx",
    ):
        for value in WRONG if "options" in body else ():
            yield {**body, "options": {**body["options"], key: value}}


def test_bad_input_is_never_a_500(servers: dict[str, str]) -> None:
    base = {"model": "demo-think", "stream": False, "options": {"num_predict": 2}}
    bodies: list[tuple[str, str, dict[str, Any]]] = [
        ("demo-think", "/api/chat", {**base, "messages": ask(FRANCE), "think": False, "format": "", "tools": []}),
        ("demo-think", "/api/generate", {**base, "prompt": FRANCE, "system": "Be brief.", "raw": False}),
        ("demo-think", "/api/show", {"model": "demo-think", "verbose": False}),
        ("qe", "/api/embed", {"model": "qe", "input": ["a"], "truncate": True, "options": {}}),
        ("qe", "/api/embeddings", {"model": "qe", "prompt": "a", "options": {}}),
    ]
    message = {"role": "user", "content": FRANCE}
    statuses: dict[int, int] = {}
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
        for model, path, body in bodies:
            url = servers[model] + path
            cases: list[bytes] = [b"{", b"[]", b"null", b'"x"', b"", b"\xff", b'{"model": 1e999}', b'{"model": NaN}']
            cases += [json.dumps(b).encode() for b in _fuzzed(body)]
            if path == "/api/chat":
                cases += [
                    json.dumps({**base, "messages": [{**message, key: v}]}).encode()
                    for key in ("role", "content", "images", "tool_calls", "thinking", "tool_name")
                    for v in WRONG
                ]
            for raw in cases:
                r = http.post(url, content=raw, headers={"Content-Type": "application/json"})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                assert r.status_code < 500, (path, raw[:200], r.text)
                answer = r.json() if r.headers["content-type"].startswith("application/json") else None
                if r.status_code >= 400:
                    assert isinstance(answer, dict) and isinstance(answer["error"], str), (raw[:200], r.text)
    assert statuses.get(400, 0) > 100 and statuses.get(200, 0) > 20

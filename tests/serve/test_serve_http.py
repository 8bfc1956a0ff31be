"""A real server process on loopback with the tiny model; the official `openai` client is the oracle."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import time
from collections.abc import Iterator

import httpx
import openai
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.servers import running_server
from testkit.tiny_gguf import build_tiny_gguf
from tests.serve.promtext import sample

pytestmark = pytest.mark.slow
MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    args = ("--max-concurrent", "4", "--max-queue", "8", "--ctx-size", "32768")
    with running_server("--model-path", str(build_tiny_gguf()), "--model-name", "tiny", *args) as u:
        yield u


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def chat(client: openai.OpenAI, content: str, **kw: object) -> str:
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": content}], **{"max_tokens": 16, "temperature": 0, **kw}
    )
    return r.choices[0].message.content


def test_whole_and_streamed_agree(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=20, temperature=0)
    reason = whole.choices[0].finish_reason
    assert whole.object == "chat.completion" and reason == "length"
    assert whole.usage.completion_tokens == 20 and whole.usage.prompt_tokens > 0
    stream = client.chat.completions.create(
        model="tiny", messages=MSG, max_tokens=20, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == whole.choices[0].message.content


def test_completions_and_models(client: openai.OpenAI) -> None:
    r = client.completions.create(model="tiny", prompt="abc", max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="tiny", prompt="abc", max_tokens=5, temperature=0, stream=True)
    )
    assert streamed == r.choices[0].text
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}, "n": {"type": "integer"}},
        "required": ["city", "n"],
    }
    r = client.chat.completions.create(
        model="tiny",
        messages=MSG,
        max_tokens=60,
        temperature=0.7,
        seed=3,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}},
    )
    value = json.loads(r.choices[0].message.content)
    assert value["city"] in ("Paris", "Rome") and isinstance(value["n"], int)


def test_json_object(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tiny", messages=MSG, max_tokens=200, temperature=1.0, seed=5, response_format={"type": "json_object"}
    )
    content = r.choices[0].message.content
    assert content.startswith("{")
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)


def test_unsupported_schema_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="tiny",
            messages=MSG,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"not": {}}}}},
            },
        )
    assert "not" in err.value.body["message"] and err.value.body["type"] == "invalid_request_error"


def test_seed_and_stop(client: openai.OpenAI) -> None:
    a = chat(client, "hi", temperature=1.0, seed=11)
    assert a == chat(client, "hi", temperature=1.0, seed=11)
    greedy = chat(client, "hi")
    stop = greedy[4:6]
    assert chat(client, "hi", stop=[stop]) == greedy[: greedy.find(stop)].strip()


def test_concurrent_greedy_equals_solo(client: openai.OpenAI) -> None:
    prompts = ["hello", "abc def", "quick brown fox", "zzz"]
    solo = [chat(client, p) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: chat(client, p), prompts))
    assert together == solo


BAD = [
    (b"{not json", 400),
    (b"[1, 2]", 400),
    (b'{"messages": []}', 400),
    (b'{"messages": [{"role": "robot", "content": "x"}]}', 400),
    (b'{"messages": [{"role": "user", "content": 5}]}', 400),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', 400),
    (b'{"messages": [{"role": "user", "content": "x"}], "n": 3}', 400),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1000000}', 400),
    (b'{"messages": [{"role": "user", "content": "x"}], "reasoning": "extreme"}', 400),
]


def test_bad_inputs_and_server_keeps_serving(url: str, client: openai.OpenAI) -> None:
    for body, status in BAD:
        r = httpx.post(url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, body
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"], body
    r = httpx.post(url + "/v1/completions", json={"prompt": "", "max_tokens": 4}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = httpx.post(url + "/v1/chat/completions", content=b"x" * (5 * 2**20))
    assert r.status_code == 413 and "error" in r.json()
    assert chat(client, "still there?")


def test_dropped_stream_frees_slot_within_a_second(url: str, client: openai.OpenAI) -> None:
    body = {"messages": MSG, "max_tokens": 30000, "stream": True, "temperature": 0}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as r:
        lines = r.iter_lines()
        next(lines)
        next(lines)  # a token has been generated
        assert httpx.get(url + "/queue/status").json()["active"] == 1
    t0 = time.time()
    while httpx.get(url + "/queue/status").json()["active"] and time.time() - t0 < 1:
        time.sleep(0.02)
    assert httpx.get(url + "/queue/status").json()["active"] == 0
    assert chat(client, "next")  # the slot serves the next request


def test_health_queue_metrics(url: str) -> None:
    assert httpx.get(url + "/health").json()["status"] == "ok"
    status = httpx.get(url + "/queue/status").json()
    assert status["max_concurrent"] == 4 and status["max_queue"] == 8 and status["completed"] > 0
    scraped = httpx.get(url + "/metrics")
    assert scraped.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
    model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    # what dashboards built for vLLM and llama.cpp's server read (docs/API.md maps the names), each by model
    for name in (
        "hearth_requests_running",
        "hearth_requests_waiting",
        "hearth_prompt_tokens",
        "hearth_generation_tokens",
        "hearth_time_to_first_token_seconds",
        "hearth_inter_token_latency_seconds",
        "hearth_e2e_request_latency_seconds",
    ):
        assert families[name].samples and all(s.labels["model"] == model for s in families[name].samples), name
    assert sample(scraped.text, "hearth_generation_tokens_total") > 0
    assert sample(scraped.text, "hearth_inter_token_latency_seconds_count") > 0
    assert not any(s.name.endswith("_created") for f in families.values() for s in f.samples)


def test_queue_full_gives_429() -> None:
    with running_server(
        "--model-path", str(build_tiny_gguf()), "--max-concurrent", "1", "--max-queue", "1", "--ctx-size", "32768"
    ) as url:
        body = {"messages": MSG, "max_tokens": 30000, "stream": True, "temperature": 0}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as running:
            lines = running.iter_lines()  # kept: a discarded line iterator closes the connection
            next(lines)
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as waiting:
                assert waiting.status_code == 200  # accepted into the queue
                deadline = time.time() + 5
                while httpx.get(url + "/queue/status").json()["waiting"] != 1 and time.time() < deadline:
                    time.sleep(0.02)
                rejected = httpx.post(url + "/v1/chat/completions", json={**body, "stream": False})
                assert rejected.status_code == 429
                assert int(rejected.headers["Retry-After"]) >= 1
                assert rejected.json()["error"]["code"] == "queue_full"
        status = httpx.get(url + "/queue/status").json()
        assert status["rejected"] == 1


def test_a_queued_stream_whose_client_leaves_gives_up_its_place() -> None:
    """The client of a waiting stream leaves after its first chunk (before any token): the queue lets it go at
    once instead of running it to max_tokens once a slot frees."""
    with running_server(
        "--model-path", str(build_tiny_gguf()), "--max-concurrent", "1", "--max-queue", "2", "--ctx-size", "32768"
    ) as url:
        body = {"messages": MSG, "max_tokens": 30000, "stream": True, "temperature": 0}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as running:
            lines = running.iter_lines()  # kept: a discarded line iterator closes the connection
            next(lines)
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as waiting:
                queued = waiting.iter_lines()  # kept, as above
                assert next(queued).startswith("data:")  # the role chunk: the body has started
                assert httpx.get(url + "/queue/status").json()["waiting"] == 1
            deadline = time.time() + 1
            while httpx.get(url + "/queue/status").json()["waiting"] and time.time() < deadline:
                time.sleep(0.02)
            status = httpx.get(url + "/queue/status").json()
            assert status["waiting"] == 0 and status["active"] == 1  # the running stream goes on


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_shutdown_ends_streams_cleanly(server: str) -> None:
    """SIGINT while a stream runs: the stream gets its finish chunk and [DONE], and the process exits promptly, on
    either HTTP server."""
    with running_server("--model-path", str(build_tiny_gguf()), "--ctx-size", "32768", "--server", server) as url:
        body = {"messages": MSG, "max_tokens": 30000, "stream": True, "temperature": 0}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            assert "role" in next(lines)  # the role chunk goes out before the job has a sequence
            assert "content" in next(line for line in lines if line)  # a token: the job runs (a job still waiting
            t0 = time.time()  # to join fails with the shutting_down error chunk instead, as a queued one does)
            url.interrupt()
            rest = [line for line in lines if line]
            assert rest[-1] == "data: [DONE]"
            assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] == "stop"
            assert time.time() - t0 < 5


def test_shutdown_answers_unfinished_whole_requests_503_with_retry_after() -> None:
    """SIGTERM with whole requests running and queued: each gets 503 `shutting_down` with Retry-After (nothing
    was sent, so a router or client retries it elsewhere), never a 500 and never a cut answer passed off as
    `stop`; a queued stream's error event says `shutting_down`; the process exits promptly."""
    with running_server(
        "--model-path", str(build_tiny_gguf()), "--max-concurrent", "2", "--max-queue", "8", "--ctx-size", "32768"
    ) as url:
        body = {"messages": MSG, "max_tokens": 30000, "temperature": 0}

        async def scenario() -> tuple[list[httpx.Response], list[str]]:
            async with httpx.AsyncClient(timeout=30) as client:

                async def whole() -> httpx.Response:
                    return await client.post(url + "/v1/chat/completions", json=body)

                async def stream() -> list[str]:
                    payload = {**body, "stream": True}
                    async with client.stream("POST", url + "/v1/chat/completions", json=payload) as r:
                        return [line async for line in r.aiter_lines() if line]

                wholes = [asyncio.create_task(whole()) for _ in range(3)]  # two run, one waits
                queued = asyncio.create_task(stream())
                for _ in range(100):
                    status = (await client.get(url + "/queue/status")).json()
                    if status["active"] == 2 and status["waiting"] == 2:
                        break
                    await asyncio.sleep(0.05)
                assert status["active"] == 2 and status["waiting"] == 2
                url.proc.send_signal(signal.SIGTERM)
                return list(await asyncio.gather(*wholes)), await queued

        t0 = time.time()
        answers, lines = asyncio.run(scenario())
        for r in answers:
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["code"] == "shutting_down"
        assert lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2][6:])["error"]["code"] == "shutting_down"
        assert url.proc.wait(timeout=15) == 0
        assert time.time() - t0 < 15

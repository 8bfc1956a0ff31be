"""/v1/messages and /v1/responses through the app (Quart's test client, a tiny random model): both auth
headers, each API's error body for the same refusals, counted in /metrics, count_tokens against the prompt."""

from __future__ import annotations

import asyncio
import json

from serve.app import create_app
from serve.config import ServeConfig
from testkit.app_client import healthy
from testkit.tiny_gguf import build_tiny_gguf
from tests.serve.promtext import sample

MESSAGES = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
RESPONSES = {"model": "tiny", "max_output_tokens": 4, "input": "hi"}


def test_auth_error_bodies_and_metrics() -> None:
    async def run() -> None:
        config = ServeConfig(
            model_path=build_tiny_gguf(), model_name="tiny", api_key="sekret", max_body_bytes=2048, ctx_size=256
        )
        app = create_app(config)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            await healthy(client)
            # Anthropic's SDK sends x-api-key, OpenAI's a Bearer token: both are the key
            for headers in ({"x-api-key": "sekret"}, {"Authorization": "Bearer sekret"}):
                r = await client.post("/v1/messages", json=MESSAGES, headers=headers)
                body = await r.get_json()
                assert r.status_code == 200 and body["type"] == "message" and body["usage"]["output_tokens"] == 4
                assert body["stop_reason"] == "max_tokens" and body["id"].startswith("msg_")
                r = await client.post("/v1/responses", json=RESPONSES, headers=headers)
                body = await r.get_json()
                assert r.status_code == 200 and body["status"] == "incomplete"
                assert body["incomplete_details"] == {"reason": "max_output_tokens"}
            ok = {"x-api-key": "sekret"}
            # the same refusals, in each API's own error body
            for headers, status in (({"x-api-key": "wrong"}, 401), ({}, 401)):
                r = await client.post("/v1/messages", json=MESSAGES, headers=headers)
                assert r.status_code == status
                assert (await r.get_json())["error"]["type"] == "authentication_error"
                assert (await r.get_json())["type"] == "error"
                r = await client.post("/v1/responses", json=RESPONSES, headers=headers)
                assert r.status_code == status and (await r.get_json())["error"]["code"] == "invalid_api_key"
            big = {**MESSAGES, "messages": [{"role": "user", "content": "x" * 5000}]}
            r = await client.post("/v1/messages", json=big, headers=ok)
            assert r.status_code == 413
            assert await r.get_json() == {
                "type": "error",
                "error": {"type": "request_too_large", "message": "request body over 2048 bytes"},
            }
            r = await client.post("/v1/messages", json={**MESSAGES, "max_tokens": 0}, headers=ok)
            body = await r.get_json()
            assert r.status_code == 400 and body["error"]["type"] == "invalid_request_error"
            assert body["error"]["message"].startswith("max_tokens")
            r = await client.post("/v1/messages", json={**MESSAGES, "model": "other"}, headers=ok)
            assert r.status_code == 404 and (await r.get_json())["error"]["type"] == "not_found_error"
            r = await client.get("/v1/messages", headers=ok)
            assert r.status_code == 405 and (await r.get_json())["type"] == "error"
            # count_tokens: the prompt the messages request decoded
            r = await client.post(
                "/v1/messages/count_tokens", json={k: v for k, v in MESSAGES.items() if k != "max_tokens"}, headers=ok
            )
            counted = (await r.get_json())["input_tokens"]
            r = await client.post("/v1/messages", json=MESSAGES, headers=ok)
            usage = (await r.get_json())["usage"]  # input_tokens leaves out what the prompt cache supplied
            assert counted == usage["input_tokens"] + usage.get("cache_read_input_tokens", 0) > 0
            metrics = (await (await client.get("/metrics")).get_data()).decode()
            assert (
                sample(metrics, "hearth_requests_refused_total", endpoint="messages", reason="invalid_api_key") == 2.0
            )
            assert (
                sample(metrics, "hearth_requests_refused_total", endpoint="responses", reason="invalid_api_key") == 2.0
            )
            assert (
                sample(metrics, "hearth_requests_refused_total", endpoint="messages", reason="model_not_found") == 1.0
            )

    asyncio.run(run())


def test_anthropic_max_tokens_is_a_cap_and_responses_is_not() -> None:
    async def run() -> None:
        app = create_app(ServeConfig(model_path=build_tiny_gguf(), model_name="tiny", ctx_size=64))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            await healthy(client)
            ctx = app.runtime.loaded.engine.ctx_per_seq
            long = [{"role": "user", "content": "x" * (ctx - 30)}]  # a byte a token: a little room left
            r = await client.post("/v1/messages", json={**MESSAGES, "messages": long, "max_tokens": 10_000})
            body = await r.get_json()
            assert r.status_code == 200 and body["stop_reason"] == "model_context_window_exceeded"
            usage = body["usage"]
            assert usage["input_tokens"] + usage.get("cache_read_input_tokens", 0) + usage["output_tokens"] == ctx
            r = await client.post("/v1/responses", json={**RESPONSES, "max_output_tokens": 10_000})
            body = await r.get_json()
            assert r.status_code == 400 and body["error"]["code"] == "context_length_exceeded"

    asyncio.run(run())


def test_a_message_thread_is_refused_as_the_messages_api_does_without_threads() -> None:
    """The anthropic SDK's tool runner sends `thread` and, on this 400, the whole conversation without it."""

    async def run() -> None:
        app = create_app(ServeConfig(model_path=build_tiny_gguf(), model_name="tiny", ctx_size=256))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            await healthy(client)
            continued = {
                **MESSAGES,
                "thread": {"type": "continue", "previous_message_id": "msg_1"},
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "4"}]}
                ],
            }
            for body in ({**MESSAGES, "thread": {"type": "create"}}, continued, {**continued, "stream": True}):
                r = await client.post("/v1/messages", json=body)
                assert r.status_code == 400
                error = (await r.get_json())["error"]
                assert error["type"] == "invalid_request_error" and "thread" in error["message"]
                assert error["details"] == {"error_code": "thread_unsupported_request"}
            r = await client.post("/v1/messages", json={**MESSAGES, "thread": None})  # no thread: answered
            assert r.status_code == 200
            r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": [], "max_tokens": 1})
            assert "details" not in (await r.get_json())["error"]  # only Anthropic's body carries details

    asyncio.run(run())


def test_anthropic_structured_outputs_hold_the_answer_to_the_schema() -> None:
    """`output_config.format` (Anthropic's structured outputs, what `messages.parse` sends) holds the answer's text to
    the JSON schema, as response_format does for chat: on a random model over many seeds every answer that ends with
    `end_turn` parses and validates."""
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 8}, "n": {"type": "integer"}},
        "required": ["city", "n"],
        "additionalProperties": False,
    }

    async def run() -> None:
        app = create_app(ServeConfig(model_path=build_tiny_gguf(), model_name="tiny", ctx_size=512))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            await healthy(client)
            finished = 0
            for seed in range(8):
                body = {
                    **MESSAGES,
                    "max_tokens": 200,
                    "output_config": {"format": {"type": "json_schema", "schema": schema}},
                    "temperature": 1.0,
                    "seed": seed,
                }
                r = await client.post("/v1/messages", json=body)
                assert r.status_code == 200, await r.get_data()
                message = await r.get_json()
                if message["stop_reason"] != "end_turn":
                    continue
                finished += 1
                value = json.loads(message["content"][-1]["text"])
                assert set(value) == {"city", "n"} and isinstance(value["city"], str) and isinstance(value["n"], int)
                # a random byte-level model wants invalid UTF-8, which the grammar alone would count as one character
                # (docs/API.md, Structured output)
                assert len(value["city"]) <= 8 and "\ufffd" not in value["city"]
            assert finished >= 1

    asyncio.run(run())

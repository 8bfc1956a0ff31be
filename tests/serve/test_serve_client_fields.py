"""The errors standard clients read, on chat and completions (Quart's test client, the tiny model):
404 model_not_found for a model this server does not serve (its name and aliases are served; no model is fine),
context_length_exceeded with "maximum context length" (what LangChain and crewAI match), 400 for embeddings on a
chat server, and every refused request counted in /metrics by endpoint and reason."""

from __future__ import annotations

import asyncio
from typing import Any

from serve.app import create_app
from serve.config import ServeConfig
from testkit.app_client import healthy
from testkit.tiny_gguf import build_tiny_gguf
from tests.serve.promtext import sample

MSG = [{"role": "user", "content": "hi"}]


async def _error(response: Any) -> tuple[int, str, str]:
    body = await response.get_json()
    return response.status_code, body["error"]["code"], body["error"]["message"]


def test_model_names_context_and_refusals_counted() -> None:
    async def run() -> None:
        config = ServeConfig(model_path=build_tiny_gguf(), model_name="tiny", alias=("tiny-alias", "t2"), ctx_size=128)
        app = create_app(config)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            await healthy(client)
            for model in ("tiny", "tiny-alias", "t2", "", None):
                body = {"messages": MSG, "max_tokens": 2, **({"model": model} if model is not None else {})}
                assert (await client.post("/v1/chat/completions", json=body)).status_code == 200, model
            models = await (await client.get("/v1/models")).get_json()
            assert [m["id"] for m in models["data"]] == ["tiny", "tiny-alias", "t2"]

            status, code, message = await _error(
                await client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": MSG})
            )
            assert (status, code) == (404, "model_not_found") and "gpt-4o" in message
            status, code, _ = await _error(await client.post("/v1/completions", json={"model": "x", "prompt": "a"}))
            assert (status, code) == (404, "model_not_found")

            long = [{"role": "user", "content": "word " * 200}]  # over 128 tokens with the byte-level vocabulary
            for path, body in (("/v1/chat/completions", {"messages": long}),
                               ("/v1/chat/completions", {"messages": MSG, "max_tokens": 500}),
                               ("/v1/completions", {"prompt": "word " * 200})):  # fmt: skip
                status, code, message = await _error(await client.post(path, json={"model": "tiny", **body}))
                assert (status, code) == (400, "context_length_exceeded") and "maximum context length" in message

            status, code, message = await _error(
                await client.post("/v1/embeddings", json={"model": "tiny", "input": "a"})
            )
            assert (status, code) == (400, "unsupported_endpoint") and "--embeddings" in message
            status, code, _ = await _error(await client.post("/v1/chat/completions", json={"messages": []}))
            assert (status, code) == (400, "invalid_request")

            metrics = (await (await client.get("/metrics")).get_data()).decode()
            for endpoint, reason, n in (
                ("chat", "model_not_found", 1),
                ("completions", "model_not_found", 1),
                ("chat", "context_length_exceeded", 2),
                ("completions", "context_length_exceeded", 1),
                ("embeddings", "unsupported_endpoint", 1),
                ("chat", "invalid_request", 1),
            ):
                assert sample(metrics, "hearth_requests_refused_total", endpoint=endpoint, reason=reason) == n
            assert (
                sample(metrics, "hearth_requests_total", endpoint="chat", status="404") == 1.0
            )  # validation counted too
            assert sample(metrics, "hearth_requests_total", endpoint="chat", status="200") == 5.0

    asyncio.run(run())


def test_refusals_before_the_route_are_counted() -> None:
    """401 and 413 are refused before a route runs; they are counted all the same."""

    async def run() -> None:
        app = create_app(ServeConfig(model_path=build_tiny_gguf(), api_key="k", max_body_bytes=2048, ctx_size=128))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            await healthy(client)
            assert (await client.post("/v1/chat/completions", json={"messages": MSG})).status_code == 401
            big = {"messages": [{"role": "user", "content": "x" * 5000}]}
            r = await client.post("/v1/embeddings", json=big, headers={"Authorization": "Bearer k"})
            assert r.status_code == 413
            metrics = (await (await client.get("/metrics")).get_data()).decode()
            assert sample(metrics, "hearth_requests_refused_total", endpoint="chat", reason="invalid_api_key") == 1.0
            assert (
                sample(metrics, "hearth_requests_refused_total", endpoint="embeddings", reason="request_too_large")
                == 1.0
            )

    asyncio.run(run())

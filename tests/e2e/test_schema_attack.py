"""Schemas that used to kill a model server (issue 27): llama.cpp's grammar code segfaults on a large repetition
(`maxItems: 100000`, `a{1,30000}`) and hangs on huge copies (`minItems: 10**8`, `maxLength: 10**9`). Sent to a
server directly and through a router with two replicas of the model: each is a 400 naming the limit, no server
exits or hangs, the router ejects nobody (a client's mistake is not a backend's failure), and both replicas still
answer afterwards."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.servers import running_router, running_server
from testkit.tiny_gguf import build_tiny_gguf

pytestmark = pytest.mark.slow

KEY = "schema-attack-admin-key"
ADMIN = {"Authorization": f"Bearer {KEY}"}
MSG = [{"role": "user", "content": "hi"}]


def _format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def _tool(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "f", "parameters": parameters}}]


ARRAY = {"type": "array", "items": {"type": "integer"}}
PAYLOADS: list[dict[str, Any]] = [
    {"response_format": _format({"type": "string", "pattern": "^a{1,30000}$"})},  # segfaulted
    {"response_format": _format({**ARRAY, "maxItems": 100000})},  # segfaulted
    {"response_format": _format({"type": "string", "pattern": "^a{1,10000}$"})},  # llama.cpp refused it: was a 500
    {"response_format": _format({**ARRAY, "minItems": 100000000})},  # hung
    {"response_format": _format({"type": "string", "maxLength": 1000000000})},  # hung
    {"response_format": _format({"type": "string", "pattern": "^(.?.?.?)*$"})},  # seconds a token
    {"response_format": _format({"enum": [f"v{i}" for i in range(5000)]})},  # seconds a token
    {"tools": _tool({"type": "object", "properties": {"a": {**ARRAY, "maxItems": 10000000}}})},  # segfaulted
]


def _check(base: str) -> None:
    with httpx.Client(timeout=30) as client:
        for payload in PAYLOADS:
            r = client.post(base + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 4, **payload})
            assert r.status_code == 400, (payload, r.status_code, r.text[:300])
            error = r.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["param"] in ("response_format", "tools.0.function.parameters"), error


def test_a_schema_cannot_crash_or_hang_a_server_or_its_replicas(tmp_path: Path) -> None:
    model = str(build_tiny_gguf())
    with ExitStack() as stack:
        servers = [
            stack.enter_context(running_server("--model-path", model, "--model-name", "tiny", "--ctx-size", "512"))
            for _ in range(2)
        ]
        router = stack.enter_context(
            running_router("--state-file", str(tmp_path / "state.json"), env={"HEARTH_ROUTE_ADMIN_KEY": KEY})
        )
        for i, url in enumerate(servers):
            body = {"name": f"r{i}", "url": url, "model_type": "generic", "models": ["tiny"]}
            assert httpx.post(router + "/backends/register", json=body, headers=ADMIN).status_code == 200

        _check(servers[0])  # directly
        with httpx.Client(timeout=30) as client:  # through the router, which spreads them over both replicas
            for payload in PAYLOADS * 2:
                body = {"model": "tiny", "messages": MSG, "max_tokens": 4, **payload}
                r = client.post(router + "/v1/chat/completions", json=body)
                assert r.status_code == 400, (payload, r.status_code, r.text[:300])

        for url in servers:
            assert url.proc.poll() is None  # alive
        backends = httpx.get(router + "/backends", headers=ADMIN).json()["backends"]
        assert [b["healthy"] for b in backends] == [True, True], backends
        for i in range(4):  # both replicas still answer
            ok = {"model": "tiny", "messages": MSG, "max_tokens": 2}
            assert httpx.post(router + "/v1/chat/completions", json=ok, timeout=30).status_code == 200, i

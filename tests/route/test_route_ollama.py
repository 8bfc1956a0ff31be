"""Ollama's API at the router (route/ollama_api.py).

In process, with a fake upstream and a fake supervisor: NDJSON streams pass through as sent, a cut one ends with an
`{"error": ...}` line; errors in Ollama's shape (404 naming the model as written, bad JSON, bad keep_alive, the API
key, refusals); keep_alive on a stack model (0 unloads after the request, a duration expires, negative stays);
/api/tags and /api/ps from the catalog's GGUF facts; / for Ollama clients and not for a browser.

With real processes on loopback: the official `ollama` client through a router with an API key to a real model
server (`python -m serve`) registered as a plain backend: list (details from the backend's /api/show), chat and
generate whole and streamed, show, ps.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ollama
import pytest

from route.app import create_app
from route.catalog import Catalog, CatalogModel, CostEntry, ModelFacts, write_catalog
from route.config import RouterConfig
from testkit.supervisor import FakeSupervisor
from testkit.upstream import FakeResponse, FakeUpstream
from tests.route.route_procs import ROOT, Cluster, Router

ADMIN = {"Authorization": "Bearer sesame"}
NDJSON = "application/x-ndjson"
CHAT = {"model": "m:latest", "messages": [{"role": "user", "content": "hi"}]}
FACTS = ModelFacts(
    size=1234,
    digest="ab" * 32,
    modified_at=1_700_000_000.0,
    family="qwen3",
    parameter_size="494.03M",
    quantization_level="Q8_0",
    context_length=512,
)


def line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\n"


PARTS = [line({"model": "m:latest", "message": {"role": "assistant", "content": c}, "done": False}) for c in "abc"]
DONE = line({"model": "m:latest", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"})
WHOLE = {"model": "m:latest", "message": {"role": "assistant", "content": "abc"}, "done": True}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def supervisor() -> AsyncIterator[FakeSupervisor]:
    async with FakeSupervisor() as sup:
        yield sup


class InProcess:
    def __init__(self, test_app: Any, client: Any, fake: FakeUpstream) -> None:
        self.test_app, self.client, self.fake = test_app, client, fake

    async def register(self, models: list[str]) -> None:
        reg = {"name": "a", "url": "http://a", "model_type": "generic", "models": models}
        r = await self.client.post("/backends/register", json=reg, headers=ADMIN)
        assert r.status_code == 200, await r.get_data()


async def start(tmp_path: Path, sup: FakeSupervisor | None = None, ttl: float = 0.0, **cfg: Any) -> InProcess:
    catalog = None
    if sup is not None:
        model = CatalogModel(name="m", names=["m"], ttl=ttl, costs=[CostEntry(layers=0, vram=0, ram=100)], facts=FACTS)
        catalog = tmp_path / "catalog.json"
        write_catalog(Catalog.model_validate({**sup.catalog(["m"]).model_dump(), "models": [model]}), catalog)
    fake = FakeUpstream()
    app = create_app(
        RouterConfig(catalog=catalog, admin_key="sesame", allow_backend_hosts=["*"], **cfg), upstream=lambda _: fake
    )
    test_app = app.test_app()
    await test_app.startup()
    return InProcess(test_app, app.test_client(), fake)


@pytest.mark.anyio
async def test_ndjson_streams_pass_through_and_a_cut_one_ends_with_an_error_line(tmp_path: Path) -> None:
    r = await start(tmp_path)
    try:
        await r.register(["m"])
        r.fake.behaviour["http://a"] = lambda: FakeResponse(200, content_type=NDJSON, chunks=[*PARTS, DONE])
        resp = await r.client.post("/api/chat", json=CHAT)  # stream: true is Ollama's default
        assert resp.status_code == 200 and resp.headers["Content-Type"] == NDJSON
        assert await resp.get_data() == b"".join([*PARTS, DONE])

        r.fake.behaviour["http://a"] = lambda: FakeResponse(200, content_type=NDJSON, chunks=PARTS[:2])
        resp = await r.client.post("/api/generate", json={"model": "m", "prompt": "hi"})
        lines = (await resp.get_data()).splitlines()
        assert lines[:2] == [p.strip() for p in PARTS[:2]]
        last = json.loads(lines[-1])
        assert list(last) == ["error"] and "ended early" in last["error"]

        r.fake.behaviour["http://a"] = lambda: FakeResponse(200, json.dumps(WHOLE).encode())
        resp = await r.client.post("/api/chat", json={**CHAT, "stream": False})
        assert (await resp.get_json())["message"]["content"] == "abc"
    finally:
        await r.test_app.shutdown()


@pytest.mark.anyio
async def test_errors_take_ollamas_shape(tmp_path: Path) -> None:
    r = await start(tmp_path, api_key="k3y")
    key = {"Authorization": "Bearer k3y"}
    try:
        await r.register(["m"])
        r.fake.behaviour["http://a"] = lambda: FakeResponse(200, json.dumps(WHOLE).encode())
        cases = [
            ("POST", "/api/chat", {}, CHAT, 401, "API key"),
            ("GET", "/api/tags", {}, None, 401, "API key"),
            ("POST", "/api/chat", key, {**CHAT, "model": "ghost:latest"}, 404, "model 'ghost:latest' not found"),
            ("POST", "/api/chat", key, {**CHAT, "model": "m:q4"}, 404, "model 'm:q4' not found"),
            ("POST", "/api/chat", key, b"{", 400, "JSON"),
            ("POST", "/api/generate", key, {"model": "m", "keep_alive": "soon"}, 400, 'invalid duration "soon"'),
            ("POST", "/api/pull", key, {"model": "llama3"}, 400, "stack file"),
            ("DELETE", "/api/delete", key, {"model": "m"}, 400, "just convert"),
            ("HEAD", "/api/blobs/sha256:00", key, None, 400, None),
            ("GET", "/api/chat", key, None, 405, "POST"),
            ("POST", "/api/tags", key, None, 405, "GET"),
            ("GET", "/api/nothing", key, None, 404, "not an Ollama endpoint"),
        ]
        for method, path, headers, body, status, words in cases:
            kw: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
            resp = await r.client.open(path, method=method, headers=headers, **kw)
            assert resp.status_code == status, (method, path, await resp.get_data())
            if method != "HEAD":
                got = await resp.get_json()
                assert set(got) == {"error"} and words in got["error"], (path, got)
        resp = await r.client.post("/api/chat", json={**CHAT, "stream": False}, headers=key)
        assert resp.status_code == 200
        assert (await r.client.get("/v1/models")).status_code == 401  # the OpenAI side keeps its shape
        version = await (await r.client.get("/api/version", headers=key)).get_json()
        assert version["version"] == "0.9.0" and version["hearth"]
    finally:
        await r.test_app.shutdown()


@pytest.mark.anyio
async def test_root_answers_ollama_clients_and_leaves_browsers_to_the_app(tmp_path: Path) -> None:
    r = await start(tmp_path)
    try:
        resp = await r.client.get("/")
        assert resp.status_code == 200 and await resp.get_data() == b"Ollama is running"
        assert (await r.client.head("/")).status_code == 200
        resp = await r.client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert await resp.get_data() != b"Ollama is running"  # a web page at / is the app's (none yet: 404)
    finally:
        await r.test_app.shutdown()


async def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


@pytest.mark.anyio
async def test_keep_alive_sets_how_long_a_stack_model_stays(supervisor: FakeSupervisor, tmp_path: Path) -> None:
    r = await start(tmp_path, supervisor)
    try:
        r.fake.behaviour["http://a"] = lambda: FakeResponse(200, json.dumps(WHOLE).encode())

        async def ask(**extra: Any) -> None:
            await r.register(["m"])  # an unload takes the backend away; the supervisor's servers register again
            resp = await r.client.post("/api/chat", json={**CHAT, "stream": False, **extra})
            assert resp.status_code == 200, await resp.get_data()

        def stops() -> int:
            return [p for p, _ in supervisor.calls].count("/stop")

        await ask(keep_alive=0)  # unloads once the request ends
        assert await wait_for(lambda: stops() == 1)
        await ask(keep_alive="300ms")
        ps = await (await r.client.get("/api/ps")).get_json()
        left = (datetime.fromisoformat(ps["models"][0]["expires_at"]) - datetime.now(UTC)).total_seconds()
        assert ps["models"][0]["name"] == "m:latest" and 0 < left <= 0.3
        assert await wait_for(lambda: stops() == 2)
        await ask(keep_alive=-1)  # stays (the catalog's ttl is 0 here: it would stay anyway)
        await ask(keep_alive="-5m")
        await asyncio.sleep(0.5)
        assert stops() == 2
        ps = await (await r.client.get("/api/ps")).get_json()
        assert datetime.fromisoformat(ps["models"][0]["expires_at"]).year > datetime.now(UTC).year + 100
        # Ollama's unload call: nothing to generate, keep_alive 0; answered here, the model unloaded when it returns
        resp = await r.client.post("/api/generate", json={"model": "m:latest", "keep_alive": 0})
        assert (await resp.get_json())["done_reason"] == "unload" and stops() == 3
        assert (await (await r.client.get("/api/ps")).get_json())["models"] == []
        resp = await r.client.post("/api/chat", json={"model": "m", "keep_alive": "0s"})  # not loaded: nothing to do
        assert (await resp.get_json())["done_reason"] == "unload" and stops() == 3
        assert [p for p, _ in supervisor.calls].count("/start") == 3
    finally:
        await r.test_app.shutdown()


@pytest.mark.anyio
async def test_tags_and_ps_from_the_catalog(supervisor: FakeSupervisor, tmp_path: Path) -> None:
    r = await start(tmp_path, supervisor, ttl=600)
    try:
        tags = (await (await r.client.get("/api/tags")).get_json())["models"]
        assert tags == [
            {
                "name": "m:latest",
                "model": "m:latest",
                "modified_at": "2023-11-14T22:13:20.000000Z",
                "size": 1234,
                "digest": "ab" * 32,
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "qwen3",
                    "families": ["qwen3"],
                    "parameter_size": "494.03M",
                    "quantization_level": "Q8_0",
                },
            }
        ]
        assert (await (await r.client.get("/api/ps")).get_json())["models"] == []  # not loaded (yet)
        await r.register(["m"])
        r.fake.behaviour["http://a"] = lambda: FakeResponse(200, json.dumps(WHOLE).encode())
        assert (await r.client.post("/api/chat", json={**CHAT, "stream": False})).status_code == 200
        (ps,) = (await (await r.client.get("/api/ps")).get_json())["models"]
        left = (datetime.fromisoformat(ps["expires_at"]) - datetime.now(UTC)).total_seconds()
        assert 590 < left <= 600  # the model's ttl
        assert ps["size"] == 100 and ps["size_vram"] == 0 and ps["context_length"] == 512
        assert ps["details"] == tags[0]["details"] and ps["digest"] == "ab" * 32
    finally:
        await r.test_app.shutdown()


# -- real processes ------------------------------------------------------------------------------------------------

DEMO = (ROOT / "models" / "demo" / "MANIFEST.sha256").is_file()
KEY = "0llama-key"


@pytest.fixture(scope="module")
def model(request: pytest.FixtureRequest) -> Path:
    if DEMO:
        return Path(request.getfixturevalue("demo_gguf")("demo-think"))
    from testkit.tiny_gguf import build_tiny_gguf

    return build_tiny_gguf()


@pytest.fixture(scope="module")
def routed(model: Path) -> Iterator[Router]:
    cluster = Cluster()
    try:
        router = cluster.router(env={**os.environ, "HEARTH_ROUTE_API_KEY": KEY})
        server = cluster.serve(model, "--model-name", "tiny")
        reg = {"name": "a", "url": server.url, "model_type": "llama", "models": ["tiny"]}
        assert router.http.post("/backends/register", json=reg).status_code == 200
        yield router
    finally:
        cluster.close()


@pytest.mark.slow
def test_the_ollama_client_through_the_router_to_a_real_server(routed: Router) -> None:
    client = ollama.Client(host=routed.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=routed.url).list()
    assert err.value.status_code == 401
    (listed,) = client.list().models
    assert listed.model == "tiny:latest" and listed.details and listed.details.format == "gguf"
    assert listed.details.family and listed.details.quantization_level  # from the server's /api/show
    options = {"temperature": 0, "num_predict": 200 if DEMO else 12}
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat(model="tiny:latest", messages=messages, options=options)
    content, thinking = [], []
    for part in client.chat(model="tiny", messages=messages, options=options, stream=True):
        content.append(part.message.content or "")
        thinking.append(part.message.thinking or "")
    assert (whole.message.content or whole.message.thinking) and part.done
    assert ("".join(content), "".join(thinking)) == (whole.message.content or "", whole.message.thinking or "")
    whole_g = client.generate(model="tiny", prompt="Once upon a time", options=options, raw=True)
    streamed_g = "".join(
        p.response
        for p in client.generate(model="tiny", prompt="Once upon a time", options=options, raw=True, stream=True)
    )
    assert whole_g.response and streamed_g == whole_g.response
    assert client.show("tiny").details is not None
    (running,) = client.ps().models
    assert running.model == "tiny:latest" and running.expires_at is not None and running.context_length == 512

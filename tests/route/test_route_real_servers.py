"""Real model servers (`python -m serve`, llama.cpp) behind the router, with the `openai` client.

The model is the demo checkpoint's GGUF (the `demo_gguf` fixture) once models/demo holds a trained
checkpoint; until then the serve tests' tiny random llama GGUF (loads in milliseconds). The oracle is the backend itself: at temperature 0
the routed answer must equal the one the same backend gives directly, streamed or whole.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from testkit.procs import wait_until
from tests.route.route_procs import ROOT, Cluster, Proc, Router

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"
MSG = [{"role": "user", "content": QUESTION}]
DEMO = (ROOT / "models" / "demo" / "MANIFEST.sha256").is_file()
MAX_TOKENS = 200 if DEMO else 12  # the demo model thinks first, then answers; the tiny one just babbles


@pytest.fixture(scope="module")
def model(request: pytest.FixtureRequest) -> Path:
    if DEMO:
        return Path(request.getfixturevalue("demo_gguf")("demo-think"))
    from testkit.tiny_gguf import build_tiny_gguf

    return build_tiny_gguf()


@pytest.fixture(scope="module")
def pair(model: Path) -> Iterator[tuple[Router, dict[str, Proc]]]:
    cluster = Cluster()
    try:
        router = cluster.router("--strategy", "round_robin")
        servers = {name: cluster.serve(model, "--model-name", "tiny") for name in ("a", "b")}
        for name, server in servers.items():
            reg = {"name": name, "url": server.url, "model_type": "llama", "models": ["tiny"]}
            assert router.http.post("/backends/register", json=reg).status_code == 200
        yield router, servers
    finally:
        cluster.close()


def test_openai_client_through_the_router(pair: tuple[Router, dict[str, Proc]]) -> None:
    router, servers = pair
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
    seen = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="tiny", messages=MSG, max_tokens=MAX_TOKENS, temperature=0
        )
        backend = raw.headers["x-backend"]
        seen.append(backend)
        routed = raw.parse().choices[0].message.content
        direct = openai.OpenAI(base_url=servers[backend].url + "/v1", api_key="unused", max_retries=0)
        again = direct.chat.completions.create(model="tiny", messages=MSG, max_tokens=MAX_TOKENS, temperature=0)
        assert routed == again.choices[0].message.content
        if DEMO:
            from models.demo.data import by_question

            assert routed == by_question(QUESTION).answer  # what the demo model was trained to answer
        raw_stream = client.chat.completions.with_raw_response.create(
            model="tiny", messages=MSG, max_tokens=MAX_TOKENS, temperature=0, stream=True
        )
        seen.append(raw_stream.headers["x-backend"])
        assert "".join(c.choices[0].delta.content or "" for c in raw_stream.parse() if c.choices) == routed
    assert seen == ["a", "b", "a", "b"]  # round robin over the two servers; the answers agree whoever served
    legacy = client.completions.create(model="tiny", prompt="abc", max_tokens=5, temperature=0, stream=True)
    assert [c for c in legacy if c.choices]
    assert [m.id for m in client.models.list().data] == ["tiny"]


@pytest.mark.parametrize("strategy", ["prefix", "sticky"])
def test_cache_aware_and_sticky_routing_over_real_servers(pair: tuple[Router, dict[str, Proc]], strategy: str) -> None:
    _, servers = pair
    cluster = Cluster()
    try:
        router = cluster.router("--strategy", strategy, "--prefix-block", "16")
        for name, server in servers.items():
            reg = {"name": name, "url": server.url, "model_type": "llama", "models": ["tiny"]}
            assert router.http.post("/backends/register", json=reg).status_code == 200
        system = {"role": "system", "content": "You are the hearth demo assistant; answer briefly. " * 4}
        homes = set()
        for i in range(6):
            if strategy == "prefix":  # one long shared prefix, a different question each time
                r = router.chat("tiny", messages=[system, {"role": "user", "content": f"question {i}"}], max_tokens=2)
            else:  # one user, different prompts
                r = router.chat(
                    "tiny", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=2, user="alice"
                )
            assert r.status_code == 200, r.text
            homes.add(r.headers["X-Backend"])
        assert len(homes) == 1
    finally:
        cluster.close()


def test_one_server_dies_the_other_answers(pair: tuple[Router, dict[str, Proc]]) -> None:
    router, servers = pair
    servers["b"].kill()
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(model="tiny", messages=MSG, max_tokens=4, temperature=0)
        assert raw.headers["x-backend"] == "a"
    assert router.backends()["b"]["healthy"] is False


def test_server_registers_itself_and_leaves_on_shutdown(cluster: Cluster, model: Path) -> None:
    router = cluster.router()
    server = cluster.serve(model, "--model-name", "tiny-self", "--router", router.url)
    assert wait_until(lambda: "tiny-self" in router.backends(), timeout=10)
    assert router.backends()["tiny-self"]["url"] == server.url
    r = router.chat("tiny-self", max_tokens=4, temperature=0)
    assert r.status_code == 200 and r.headers["X-Backend"] == "tiny-self"
    with router.http.stream(
        "POST", "/v1/chat/completions", json={"model": "tiny-self", "messages": MSG, "max_tokens": 4, "stream": True}
    ) as s:
        assert s.headers["x-accel-buffering"] == "no" and s.read().endswith(b"data: [DONE]\n\n")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGINT)
    server.proc.wait(20)
    assert "tiny-self" not in router.backends()
    assert router.chat("tiny-self").json()["error"]["code"] == "no_healthy_backend"  # served once: 503, not 404

"""Distribution of each strategy over real backend processes, and the `openai` client through the router."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.route.route_procs import Cluster, Router

pytestmark = pytest.mark.slow
MODELS = ["rr", "w", "st", "px", "lc"]


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    cluster = Cluster()
    try:
        config = Path(tmp_path_factory.mktemp("route")) / "router.toml"
        config.write_text('[model_strategies]\nrr = "round_robin"\nw = "weighted"\nst = "sticky"\npx = "prefix"\n')
        router = cluster.router("--config", str(config), "--prefix-block", "32")
        a, b = cluster.backend("a"), cluster.backend("b")
        assert router.register(a, MODELS, weight=3).status_code == 200
        assert router.register(b, MODELS, weight=1).status_code == 200
        yield router
    finally:
        cluster.close()


def served_by(r: httpx.Response) -> str:
    """The backend that answered, by the router's header, checked against the backend's own text."""
    assert r.status_code == 200, r.text
    body = r.json()
    name = r.headers["X-Backend"]
    assert body["choices"][0]["message"]["content"].startswith(name + ":")
    assert body["_routing"] == {"backend": name, "model_type": "generic"}
    return name


def test_round_robin_alternates_exactly(routed: Router) -> None:
    picks = [served_by(routed.chat("rr")) for _ in range(20)]
    assert picks[0] != picks[1]
    assert picks == [picks[0], picks[1]] * 10


def test_weighted_follows_the_weights(routed: Router) -> None:
    picks = Counter(served_by(routed.chat("w")) for _ in range(200))
    # weights 3:1; smooth weighted round robin is exact over whole cycles, allow 2 % for a partial one
    assert abs(picks["a"] / 200 - 0.75) <= 0.02, picks


def test_sticky_keeps_each_user_on_one_backend(routed: Router) -> None:
    homes = {}
    for user in (f"user-{i}" for i in range(12)):
        seen = {served_by(routed.chat("st", user=user)) for _ in range(4)}
        seen |= {
            served_by(
                routed.http.post(
                    "/v1/chat/completions",
                    headers={"X-Session-Id": user},
                    json={"model": "st", "messages": [{"role": "user", "content": "x"}]},
                )
            )
        }
        assert len(seen) == 1, (user, seen)
        homes[user] = seen.pop()
    assert set(homes.values()) == {"a", "b"}  # the users spread over both


def test_prefix_sends_shared_prefixes_to_one_backend(routed: Router) -> None:
    system = {"role": "system", "content": "You answer questions about the hearth project. " * 30}
    picks = {
        served_by(routed.chat("px", messages=[system, {"role": "user", "content": f"question {i}?"}]))
        for i in range(16)
    }
    assert len(picks) == 1
    unrelated = {served_by(routed.chat("px", messages=[{"role": "user", "content": f"{i} " * 300}])) for i in range(6)}
    assert unrelated == {"a", "b"}


def test_least_connections_spreads_concurrent_streams(routed: Router) -> None:
    seen: list[str] = []

    def stream() -> None:
        body = {"model": "lc", "messages": [], "stream": True, "max_tokens": 5, "delay": 0.1}
        with httpx.stream("POST", routed.url + "/v1/chat/completions", json=body, timeout=30) as r:
            seen.append(r.headers["X-Backend"])
            r.read()

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(seen) == {"a": 2, "b": 2}


def test_openai_client_through_the_router(routed: Router) -> None:
    client = openai.OpenAI(base_url=routed.url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="rr", messages=[{"role": "user", "content": "hi"}])
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith(raw.headers["x-backend"] + ":")
    chunks = list(
        client.chat.completions.create(
            model="rr", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=4
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    name, n = text.split(":")[0], text.split(":")[1]
    assert text == "".join(f"{name}:{n}:{i} " for i in range(4))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    legacy = "".join(
        c.choices[0].text for c in client.completions.create(model="rr", prompt="x", stream=True, max_tokens=3)
    )
    assert legacy.count(":") == 6
    assert {m.id for m in client.models.list()} == set(MODELS)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found"


def test_status_and_metrics_count_requests(routed: Router) -> None:
    before = sum(b["total"] for b in routed.http.get("/status").json()["backends"])
    for _ in range(4):
        served_by(routed.chat("rr"))
    status = routed.http.get("/status").json()
    assert sum(b["total"] for b in status["backends"]) == before + 4
    assert status["strategy"] == "least_connections" and status["models"]["px"]["strategy"] == "prefix"
    metrics = routed.http.get("/metrics").text
    assert 'route_requests_total{backend="a",model="rr",status="200"}' in metrics
    assert "route_added_seconds_bucket" in metrics and 'route_backend_healthy{backend="b"} 1.0' in metrics

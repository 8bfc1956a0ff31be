"""Registration over HTTP with real processes: persistence, draining, the admin key, refusals, the config file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from testkit.procs import wait_until
from tests.route.route_procs import Cluster, parse_stream

pytestmark = pytest.mark.slow


def test_registrations_survive_a_router_restart(cluster: Cluster, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    router = cluster.router("--state-file", str(state))
    a, b = cluster.backend("a"), cluster.backend("b")
    assert router.register(a, ["m", "alias"]).status_code == 200
    assert router.register(b, ["m"], weight=2).status_code == 200
    saved = json.loads(state.read_text())
    assert sorted(x["name"] for x in saved["backends"]) == ["a", "b"]
    assert router.http.delete("/backends/b").json()["draining"] is False
    router.stop()
    router.start()
    assert list(router.backends()) == ["a"] and router.backends()["a"]["models"] == ["m", "alias"]
    assert router.backends()["a"]["healthy"] is True
    assert router.chat("alias").headers["X-Backend"] == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temp file left behind


def test_unregister_drains_a_running_stream(cluster: Cluster) -> None:
    router = cluster.router()
    a, b = cluster.backend("a"), cluster.backend("b")
    for backend in (a, b):
        assert router.register(backend).status_code == 200
    got: dict[str, str] = {}
    started = threading.Event()

    def stream() -> None:
        body = {"model": "m", "messages": [], "stream": True, "max_tokens": 20, "delay": 0.05, "user": "u"}
        with router.http.stream("POST", "/v1/chat/completions", json=body, headers={}) as r:
            got["backend"] = r.headers["X-Backend"]
            started.set()
            got["text"] = r.read().decode()

    t = threading.Thread(target=stream)
    t.start()
    assert started.wait(10)
    busy = got["backend"]
    answer = router.http.post("/backends/unregister", json={"name": busy}).json()
    assert answer == {"name": busy, "draining": True, "active": 1}
    assert router.backends()[busy]["draining"] is True
    other = {"a": "b", "b": "a"}[busy]
    assert {router.chat().headers["X-Backend"] for _ in range(4)} == {other}  # no new traffic
    t.join(10)
    assert (
        parse_stream(got["text"]) == (True, False) and got["text"].count(f'"content": "{busy}:') == 20
    )  # finished whole
    assert wait_until(lambda: busy not in router.backends(), timeout=3)
    # unregistering it again: it is gone
    assert router.http.delete(f"/backends/{busy}").status_code == 404


def test_admin_key_guards_the_cluster_api_only(cluster: Cluster) -> None:
    router = cluster.router()  # --admin-key-file
    a = cluster.backend("a")
    anyone = httpx.Client(base_url=router.url, timeout=10)
    wrong = {"Authorization": "Bearer wrong"}
    assert anyone.post("/backends/register", json=a.registration()).status_code == 401
    assert anyone.post("/backends/register", json=a.registration(), headers=wrong).status_code == 401
    for path in ("/backends", "/status", "/metrics"):
        assert anyone.get(path).status_code == 401, path
    assert anyone.post("/backends/unregister", json={"name": "a"}).status_code == 401
    assert anyone.delete("/backends/a").status_code == 401
    r = router.register(a)  # with the key
    assert r.status_code == 200 and r.json()["healthy"] is True
    assert anyone.post("/backends/unregister", json={"name": "a"}).json()["error"]["type"] == "authentication_error"
    assert (
        anyone.post("/v1/chat/completions", json={"model": "m", "messages": []}).status_code == 200
    )  # clients need none
    assert anyone.get("/health").status_code == 200
    assert router.backends()["a"]["name"] == "a"
    anyone.close()


def test_invalid_registrations_are_refused(cluster: Cluster) -> None:
    router = cluster.router()
    sick = cluster.backend("sick", mode="sick")
    dead_port = sick.port + 1 if sick.port < 65535 else sick.port - 1
    bad = [
        {"name": "x", "url": "ftp://127.0.0.1/", "models": ["m"]},
        {"name": "x", "url": "file:///etc/passwd", "models": ["m"]},
        {"name": "x", "url": "http://127.0.0.1:1", "models": []},
        {"name": "x", "url": "http://127.0.0.1:1", "models": ["m"], "weight": "heavy"},
        {"url": "http://127.0.0.1:1", "models": ["m"]},
        [1, 2],
        {"name": "sick", "url": sick.url, "models": ["m"]},  # its /health answers 503
        {"name": "dead", "url": f"http://127.0.0.1:{dead_port}", "models": ["m"]},  # nothing listens
    ]
    for body in bad:
        r = router.http.post("/backends/register", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
    r = router.http.post("/backends/register", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert router.backends() == {}
    assert router.http.get("/health").status_code == 503
    # never served: 404, not 503
    assert router.chat().json()["error"]["code"] == "model_not_found"


def test_config_file_backends_and_reregistration(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.backend("a"), cluster.backend("b")
    config = tmp_path / "router.toml"
    config.write_text(
        f'strategy = "round_robin"\n[[backends]]\nname = "a"\nurl = "{a.url}"\nmodels = ["m"]\n'
        f'[[backends]]\nname = "b"\nurl = "{b.url}"\nmodels = ["m"]\n'
    )
    router = cluster.router("--config", str(config))
    assert {n: s["healthy"] for n, s in router.backends().items()} == {"a": True, "b": True}
    picks = [router.chat().headers["X-Backend"] for _ in range(4)]
    assert sorted(picks) == ["a", "a", "b", "b"]
    assert router.http.get("/health").json()["healthy_backends"] == 2
    # re-registering a name updates it: b now also serves "n"
    assert router.register(b, ["m", "n"]).status_code == 200
    assert router.chat("n").headers["X-Backend"] == "b"
    assert {m["id"] for m in router.http.get("/v1/models").json()["data"]} == {"m", "n"}

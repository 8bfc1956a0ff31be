"""Failures with real processes: a backend killed under load, misbehaving backends, clients that leave."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from testkit.procs import wait_until
from tests.route.route_procs import Cluster, FakeBackend, Router, parse_stream

pytestmark = pytest.mark.slow


@dataclass
class Outcome:
    stream: bool
    backend: str
    started: float  # when the response headers came
    ok: bool  # a whole 200 answer, or a stream that ended with [DONE] and no error
    error_event: bool  # a stream that ended with an error event and [DONE]
    problem: str = ""


async def one_request(client: httpx.AsyncClient, stream: bool) -> Outcome:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        "max_tokens": 6,
        "delay": 0.03,
    }
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            started = time.monotonic()
            text = (await r.aread()).decode()
            backend = r.headers.get("X-Backend", "?")
            if r.status_code != 200:
                return Outcome(stream, backend, started, False, False, f"{r.status_code} {text[:200]}")
            if not stream:
                ok = json.loads(text)["choices"][0]["message"]["content"].startswith(backend)
                return Outcome(stream, backend, started, ok, False)
            done, error = parse_stream(text)
            return Outcome(stream, backend, started, done and not error, done and error, "" if done else "no [DONE]")
    except httpx.HTTPError as exc:
        return Outcome(stream, "?", time.monotonic(), False, False, repr(exc))


async def load(url: str, clients: int, seconds: float, at: float, action) -> tuple[list[Outcome], float]:
    """`clients` loops of alternating stream / whole requests for `seconds`; runs `action` after `at` s."""
    outcomes: list[Outcome] = []
    # clients first: each builds an SSL context, tens of ms of CPU that must not eat into the run
    pool = [httpx.AsyncClient(base_url=url, timeout=30) for _ in range(clients)]
    stop = time.monotonic() + seconds

    async def worker(i: int) -> None:
        async with pool[i] as client:
            n = i
            while time.monotonic() < stop:
                outcomes.append(await one_request(client, stream=n % 2 == 0))
                n += 1

    async def trigger() -> float:
        await asyncio.sleep(at)
        await asyncio.to_thread(action)
        return time.monotonic()

    results = await asyncio.gather(trigger(), *(worker(i) for i in range(clients)))
    return outcomes, results[0]


def test_killed_backend_under_16_clients(cluster: Cluster) -> None:
    router = cluster.router("--health-interval", "0.5", "--eject-base", "1")
    a, b = cluster.backend("a"), cluster.backend("b")
    for backend in (a, b):
        assert router.register(backend).status_code == 200
    outcomes, killed = asyncio.run(load(router.url, clients=16, seconds=2.0, at=0.7, action=b.kill))
    assert len(outcomes) > 100
    cut = [o for o in outcomes if o.error_event]
    failed = [o for o in outcomes if not o.ok and not o.error_event]
    assert failed == []  # every request not yet streaming when b died was answered (retried on a)
    assert cut, "no stream was running on b when it died"
    assert all(o.stream and o.backend == "b" and o.started < killed for o in cut)
    assert any(o.backend == "a" and o.started > killed + 0.1 for o in outcomes)
    state = router.backends()["b"]
    assert state["healthy"] is False and state["errors"] >= 1 and state["ejections"] == 1
    # b comes back: the ejection ends, a health check passes, and it takes traffic again
    b.start()
    assert wait_until(lambda: router.backends()["b"]["healthy"], timeout=10)
    assert "b" in {router.chat().headers["X-Backend"] for _ in range(4)}


@pytest.fixture(scope="module")
def faulty() -> Iterator[tuple[Router, FakeBackend, FakeBackend]]:
    cluster = Cluster()
    try:
        router = cluster.router("--timeout", "1", "--eject-base", "60", "--health-interval", "60")
        a, x = cluster.backend("a"), cluster.backend("x")
        assert router.register(a, ["m", "only-a"]).status_code == 200
        yield router, a, x
    finally:
        cluster.close()


@pytest.mark.parametrize(
    ("mode", "stream"),
    [("error500", False), ("garbage", False), ("cut", False), ("garbage", True), ("error500", True)],
)
def test_failures_before_the_first_byte_are_retried(
    faulty: tuple[Router, FakeBackend, FakeBackend], mode: str, stream: bool
) -> None:
    router, _a, x = faulty
    x.set_mode("ok")
    assert router.register(x).status_code == 200
    x.set_mode(mode)
    seen_by_x = x.stats()["requests"]
    for _ in range(6):
        r = router.chat(stream=stream)
        assert r.status_code == 200 and r.headers["X-Backend"] == "a", r.text
        if stream:
            assert parse_stream(r.text) == (True, False)
    assert x.stats()["requests"] == seen_by_x + 1  # tried once, then ejected
    assert router.backends()["x"]["healthy"] is False


@pytest.mark.parametrize("mode", ["cut", "inband"])
def test_a_stream_failing_after_its_first_byte_ends_with_an_error(
    faulty: tuple[Router, FakeBackend, FakeBackend], mode: str
) -> None:
    router, _a, x = faulty
    x.set_mode("ok")
    assert router.register(x).status_code == 200
    x.set_mode(mode)
    results = []
    for _ in range(4):
        r = router.chat(stream=True, max_tokens=6, delay=0.02)  # the failure comes after the first bytes
        assert r.status_code == 200
        results.append((r.headers["X-Backend"], parse_stream(r.text)))
    assert results.count(("x", (True, True))) == 1  # not retried: bytes had gone out; ended, not hung
    assert results.count(("a", (True, False))) == 3
    assert router.backends()["x"]["healthy"] is False


def test_a_hung_backend_gives_504_and_is_ejected(faulty: tuple[Router, FakeBackend, FakeBackend]) -> None:
    router, _a, x = faulty
    x.set_mode("ok")
    assert router.register(x).status_code == 200
    x.set_mode("hang")
    statuses = [router.chat().status_code for _ in range(4)]
    assert sorted(statuses) == [200, 200, 200, 504]
    assert router.backends()["x"]["healthy"] is False


def test_client_disconnect_closes_the_backend_stream(faulty: tuple[Router, FakeBackend, FakeBackend]) -> None:
    router, a, _ = faulty
    before = a.stats()["streams_cancelled"]
    body = {"model": "only-a", "messages": [], "stream": True, "max_tokens": 200, "delay": 0.05}
    with router.http.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert router.backends()["a"]["active"] == 1
    # the client hung up after one event, ten seconds before the end
    assert wait_until(lambda: a.stats()["streams_cancelled"] == before + 1, timeout=3)
    assert wait_until(lambda: router.backends()["a"]["active"] == 0, timeout=3)


def test_a_client_hanging_up_on_done_had_the_whole_stream(faulty: tuple[Router, FakeBackend, FakeBackend]) -> None:
    """The openai SDK closes a stream's connection as soon as it reads [DONE]. Where the backend's body ends later
    (here it stays open 5 s after [DONE]), the router's line still has the stream's tokens and no `(client gone)`,
    and the backend is neither failed nor left busy."""
    router, a, _ = faulty
    finished = a.stats()["streams_finished"]
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
    began = time.monotonic()
    chunks = list(
        client.chat.completions.create(
            model="only-a",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"linger": 5},
        )
    )
    assert time.monotonic() - began < 4  # the client left before the body's end
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 3 and a.stats()["streams_finished"] == finished + 1
    expected = re.compile(
        r"route\.access: POST /v1/chat/completions 200 \d+ ms model=only-a backend=a prompt_tokens=1 completion_tokens=3$"
    )
    assert wait_until(lambda: any(expected.search(line) for line in router.log_text().splitlines()), timeout=3), (
        router.log_text()
    )
    assert wait_until(lambda: router.backends()["a"]["active"] == 0, timeout=3)
    view = router.backends()["a"]
    assert view["healthy"] and view["errors"] == 0 and view["last_error"] is None, view


def test_client_leaving_a_whole_request_cancels_it_at_the_backend(
    faulty: tuple[Router, FakeBackend, FakeBackend],
) -> None:
    router, a, _ = faulty
    before = a.stats()["requests_cancelled"]
    body = {"model": "only-a", "messages": [], "max_tokens": 100, "delay": 0.05}  # a 5 s answer
    with pytest.raises(httpx.ReadTimeout):
        router.http.post("/v1/chat/completions", json=body, timeout=0.5)
    assert wait_until(lambda: a.stats()["requests_cancelled"] == before + 1, timeout=3)
    assert wait_until(lambda: router.backends()["a"]["active"] == 0, timeout=3)


def test_failing_health_checks_take_a_backend_out_and_back(cluster: Cluster) -> None:
    router = cluster.router("--health-interval", "0.2", "--unhealthy-after", "2", "--healthy-after", "2")
    a, x = cluster.backend("a"), cluster.backend("x")
    for backend in (a, x):
        assert router.register(backend).status_code == 200
    x.set_mode("sick")
    assert wait_until(lambda: not router.backends()["x"]["healthy"], timeout=5)
    assert {router.chat().headers["X-Backend"] for _ in range(6)} == {"a"}
    assert "503" in router.backends()["x"]["last_error"]
    x.set_mode("ok")
    assert wait_until(lambda: router.backends()["x"]["healthy"], timeout=5)
    assert {router.chat().headers["X-Backend"] for _ in range(6)} == {"a", "x"}


def test_hypercorn_server_streams_and_frees_the_backend_on_disconnect(cluster: Cluster) -> None:
    router = cluster.router("--server", "hypercorn")
    a = cluster.backend("a")
    assert router.register(a).status_code == 200
    r = router.chat(stream=True, max_tokens=3)
    assert r.headers["X-Backend"] == "a" and parse_stream(r.text) == (True, False)
    body = {"model": "m", "messages": [], "stream": True, "max_tokens": 200, "delay": 0.05}
    with router.http.stream("POST", "/v1/chat/completions", json=body) as s:
        assert next(s.iter_lines()).startswith("data: ")
    assert wait_until(lambda: a.stats()["streams_cancelled"] == 1, timeout=3)
    assert wait_until(lambda: router.backends()["a"]["active"] == 0, timeout=3)


def test_a_redirect_is_never_followed(cluster: Cluster) -> None:
    """A backend answering 307 to another server: the router does not follow it (the prompt would reach a host
    --allow-backend-hosts may forbid, and its answer come back as the backend's). The client gets a 502 error body,
    the redirecting backend gets a failure, the redirect's target sees nothing; another backend answers instead."""
    target = cluster.backend("target")  # never registered: stands for a host the router may not send to
    sly = cluster.backend("sly")
    sly.set_mode("redirect", to=target.url)
    router = cluster.router()
    assert router.register(sly).status_code == 200
    for stream in (False, True):
        r = router.chat(stream=stream)
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "upstream_error" and "location" not in r.headers
    assert target.stats()["requests"] == 0
    assert sly.stats()["requests"] == 2
    assert router.backends()["sly"]["errors"] == 2
    honest = cluster.backend("honest")
    assert router.register(honest).status_code == 200
    for _ in range(3):
        r = router.chat()
        assert r.status_code == 200 and r.headers["X-Backend"] == "honest", r.text
    assert target.stats()["requests"] == 0

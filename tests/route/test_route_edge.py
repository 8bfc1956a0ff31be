"""The router's connection edge with raw sockets against a real `python -m route` (edge.py on uvicorn): idle and
slow clients, lying and endless bodies, header floods, protocol errors, and loops. Every refusal is an OpenAI
error body, and the router keeps answering."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.raw_http import openai_error, read_all
from tests.route.route_procs import ADMIN_KEY, ROOT, Cluster, Router

pytestmark = pytest.mark.slow

LIMITS = ("--keep-alive", "1", "--header-timeout", "1", "--body-timeout", "1", "--max-body", "65536")


@pytest.fixture(scope="module")
def router() -> Iterator[Router]:
    cluster = Cluster()
    try:
        r = cluster.router(*LIMITS)
        backend = cluster.backend("a")
        assert r.register(backend).status_code == 200
        yield r
    finally:
        cluster.close()


def connect(router: Router) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", router.port), timeout=15)
    return s


def assert_openai_error(raw: bytes, status: int) -> None:
    got, _ = openai_error(raw)
    assert got == status, raw[:300]


def send_until_answered(s: socket.socket, head: bytes, piece: bytes, limit: int) -> bytes:
    """Send `head`, then `piece` again and again (up to `limit` bytes) until the router answers; then read."""
    s.sendall(head)
    sent = 0
    while sent < limit:
        if select.select([s], [], [], 0)[0]:
            break
        try:
            s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(piece)
    return read_all(s)


def rss_kb(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def still_answers(router: Router) -> None:
    assert router.chat().status_code == 200


def test_an_idle_connection_is_closed(router: Router) -> None:
    s = connect(router)
    started = time.monotonic()
    assert read_all(s) == b""  # closed without a word: it never asked anything
    assert time.monotonic() - started < 10  # --keep-alive 1 (uvicorn alone kept it for good)


def test_slow_headers_get_408(router: Router) -> None:
    s = connect(router)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    for _ in range(40):  # one header line a quarter second: each keeps the connection busy, none ends the headers
        if select.select([s], [], [], 0.25)[0]:
            break
        try:
            s.sendall(b"X-Slow: 1\r\n")
        except (BrokenPipeError, ConnectionResetError):
            break
    assert_openai_error(read_all(s), 408)
    assert time.monotonic() - started < 8
    still_answers(router)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/backends/register"])
def test_a_body_shorter_than_its_content_length_gets_408(router: Router, path: str) -> None:
    s = connect(router)
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f'Authorization: Bearer {ADMIN_KEY}\r\nContent-Length: 1000\r\n\r\n{{"model"'.encode()
    )
    started = time.monotonic()
    assert_openai_error(read_all(s), 408)
    assert time.monotonic() - started < 8
    still_answers(router)


def test_an_endless_chunked_body_gets_413(router: Router) -> None:
    s = connect(router)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw = send_until_answered(s, head, b"4000\r\n" + b"x" * 0x4000 + b"\r\n", 64 * 2**20)
    assert_openai_error(raw, 413)
    still_answers(router)


def test_a_slow_chunked_body_gets_408(router: Router) -> None:
    s = connect(router)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(40):
        if select.select([s], [], [], 0.2)[0]:
            break
        try:
            s.sendall(b"1\r\nx\r\n")
        except (BrokenPipeError, ConnectionResetError):
            break
    assert_openai_error(read_all(s), 408)


def test_a_huge_header_gets_431_and_no_memory(router: Router) -> None:
    assert router.proc is not None
    before = rss_kb(router.proc.pid)
    s = connect(router)
    raw = send_until_answered(s, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * 65536, 200 * 2**20)
    assert_openai_error(raw, 431)
    assert rss_kb(router.proc.pid) - before < 20_000  # kB; uvicorn alone grew by the header's size (200 MB)
    still_answers(router)


def test_too_many_headers_get_431(router: Router) -> None:
    s = connect(router)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(200)) + b"\r\n")
    assert_openai_error(read_all(s), 431)


@pytest.mark.parametrize(
    "request_line",
    [b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"GET /\x00 HTTP/1.1\r\n\r\n"],
)
def test_protocol_errors_get_an_openai_400(router: Router, request_line: bytes) -> None:
    s = connect(router)
    s.sendall(request_line)
    assert_openai_error(read_all(s), 400)


def test_connections_are_still_reused_and_pipelined(router: Router) -> None:
    s = connect(router)
    body = json.dumps({"model": "m", "messages": []}).encode()
    one = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    s.sendall(one + one)  # two requests in one write
    raw = read_all(s)  # closed by --keep-alive after both
    assert raw.count(b"HTTP/1.1 200 OK") == 2


def test_upgrade_requests_are_answered_then_the_connection_ends(router: Router) -> None:
    s = connect(router)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    started = time.monotonic()
    raw = read_all(s)
    assert raw.startswith(b"HTTP/1.1 200") and time.monotonic() - started < 8


def test_registering_the_router_itself_is_refused(router: Router) -> None:
    assert router.proc is not None
    fds = open_fds(router.proc.pid)
    me = {"name": "me", "url": router.url, "models": ["m"]}
    r = router.http.post("/backends/register", json=me)
    assert r.status_code == 400 and "leads back to this router" in r.json()["error"]["message"]
    still_answers(router)
    assert open_fds(router.proc.pid) < fds + 20


def test_a_loop_through_two_routers_ends_in_508(cluster: Cluster) -> None:
    a, b = cluster.router(), cluster.router()
    assert a.proc is not None and b.proc is not None
    fds = open_fds(a.proc.pid), open_fds(b.proc.pid)
    real = cluster.backend("real")
    for router in (a, b):  # a router answers /health 200 (and may be registered) once it has a healthy backend
        assert router.register(real, ["n"]).status_code == 200
    for router, other in ((a, b), (b, a)):
        r = router.http.post("/backends/register", json={"name": "other", "url": other.url, "models": ["m"]})
        assert r.status_code == 200, r.text
    r = httpx.post(a.url + "/v1/chat/completions", json={"model": "m", "messages": []}, timeout=30)
    assert r.status_code == 508 and r.json()["error"]["code"] == "loop_detected"
    assert a.backends()["other"]["healthy"] and b.backends()["other"]["healthy"]  # a loop is nobody's failure
    assert open_fds(a.proc.pid) < fds[0] + 20 and open_fds(b.proc.pid) < fds[1] + 20  # it was 20,000


def test_keys_are_not_on_the_command_line(cluster: Cluster, tmp_path: Path) -> None:
    env = {**os.environ, "HEARTH_ROUTE_API_KEY": "sk-env"}
    router = cluster.router(env=env)
    assert router.proc is not None
    cmdline = Path(f"/proc/{router.proc.pid}/cmdline").read_bytes()
    assert ADMIN_KEY.encode() not in cmdline and b"sk-env" not in cmdline
    assert httpx.get(router.url + "/v1/models").status_code == 401
    assert httpx.get(router.url + "/v1/models", headers={"Authorization": "Bearer sk-env"}).status_code == 200
    loose = tmp_path / "loose.key"
    loose.write_text("k\n")
    loose.chmod(0o644)
    p = subprocess.run(
        [sys.executable, "-m", "route", "--admin-key-file", str(loose)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert p.returncode == 2 and "chmod 600" in p.stderr and p.stderr.count("\n") == 1

"""A model server's connection edge with raw sockets against a real `python -m serve` (hearth_common/edge.py on
uvicorn, as the router's): header floods and protocol errors get OpenAI error bodies, idle connections close, and
the server keeps answering."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from testkit.raw_http import openai_error, read_all
from testkit.servers import Server, running_server
from testkit.tiny_gguf import build_tiny_gguf

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url() -> Iterator[Server]:
    with running_server("--model-path", str(build_tiny_gguf())) as u:
        yield u


def exchange(url: str, raw: bytes) -> bytes:
    """Send `raw` on a fresh connection and read until the server closes it."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(raw)
        return read_all(s)


def still_answers(url: str) -> None:
    assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_a_huge_header_gets_431(url: Server) -> None:
    raw = b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (80 * 1024) + b"\r\n\r\n"
    status, error = openai_error(exchange(url, raw))
    assert (status, error["code"]) == (431, "headers_too_large")
    still_answers(url)


def test_too_many_headers_get_431(url: Server) -> None:
    raw = b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"".join(b"x-h%d: 1\r\n" % i for i in range(150)) + b"\r\n"
    status, error = openai_error(exchange(url, raw))
    assert (status, error["code"]) == (431, "headers_too_large") and "100" in error["message"]
    still_answers(url)


@pytest.mark.parametrize("request_line", [b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n"])
def test_protocol_errors_get_an_openai_400(url: Server, request_line: bytes) -> None:
    status, error = openai_error(exchange(url, request_line))
    assert status == 400 and error["type"] == "invalid_request_error"
    still_answers(url)


def test_an_idle_connection_is_closed(url: Server) -> None:
    """A connection that sends nothing is closed after the keep-alive time (5 s), not held for ever."""
    t0 = time.monotonic()
    assert exchange(url, b"") == b""
    assert 4 < time.monotonic() - t0 < 10


def test_two_interrupts_stop_it_once_and_cleanly() -> None:
    """A terminal's Ctrl-C and the stack can both signal a server: the second SIGINT changes nothing (uvicorn's own
    handling took it as "quit now", skipped the app's shutdown and logged a traceback)."""
    with running_server("--model-path", str(build_tiny_gguf())) as server:
        server.interrupt()
        server.interrupt()
        assert server.proc.wait(15) == 0
        log = server.process.log_text()
        assert "Traceback" not in log and log.rstrip().endswith("serve: stopped"), log[-2000:]

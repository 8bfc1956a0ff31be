"""hearth_common.logs: one format; the ASGI servers' start line as ours; one access line per request, written
when the response ends, with what the handlers noted."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from typing import Any

import pytest

from hearth_common.logs import Access, AccessLog, access_line, formatted, note, note_usage, setup


@pytest.fixture
def logged() -> Any:
    """setup() onto a string; the root logger's handlers are put back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    setup("serve", "info", stream)
    assert all(
        h in root.handlers for h in saved[0] if h.get_name() != "hearth"
    )  # added beside, not in place of, others
    yield stream
    root.handlers, root.level = saved
    for name in ("hypercorn.error", "uvicorn.error"):
        logging.getLogger(name).filters = []


def test_one_format_and_the_servers_start_lines_become_ours(logged: io.StringIO) -> None:
    logging.getLogger("serve").info("loaded %s", "demo")
    logging.getLogger("hypercorn.error").info("Running on http://127.0.0.1:8123 (CTRL + C to quit)")
    uvicorn = logging.getLogger("uvicorn.error")
    uvicorn.info("Started server process [%d]", 42)
    uvicorn.info("Uvicorn running on %s://%s:%d (Press CTRL+C to quit)", "http", "127.0.0.1", 8124)
    uvicorn.info("Waiting for application startup.")
    uvicorn.error("[Errno 98] address already in use")
    logging.getLogger("gguf.gguf_writer").info("gguf: This GGUF file is for Little Endian only")
    lines = logged.getvalue().splitlines()
    tails = [line.split(" ", 3)[3] for line in lines]  # past the date, time and level
    assert tails == [
        "serve: loaded demo",
        "serve: listening on http://127.0.0.1:8123",
        "serve: listening on http://127.0.0.1:8124",
        "serve: [Errno 98] address already in use",
    ]
    assert [line.split(" ")[2] for line in lines] == ["INFO", "INFO", "INFO", "ERROR"]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A stream of three chunks whose handler notes its model and, at the end, its usage."""
    note(model="m1")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for _i in range(3):
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
    task = asyncio.create_task(asyncio.sleep(0, result=note_usage({"prompt_tokens": 7, "completion_tokens": 3})))
    await task  # a task the handler starts shares the request's line
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def run(
    asgi: Any, path: str = "/v1/chat/completions", fail_after: int | None = None, level: int = logging.DEBUG
) -> list[str]:
    """One request through AccessLog; what the access logger wrote while each message was sent, and at the end."""
    lines: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("test.access")
    logger.handlers, logger.propagate = [Catch()], False
    logger.setLevel(level)
    sent: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if fail_after is not None and len(sent) == fail_after:
            raise OSError("client gone")
        sent.append(len(lines))  # lines written before this message went out

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    with contextlib.suppress(OSError):
        asyncio.run(AccessLog(asgi, logger)(scope, receive, send))
    assert all(n == 0 for n in sent)  # nothing is logged before the response has ended
    return lines


def test_one_line_when_the_stream_ends_with_status_model_and_tokens() -> None:
    (line,) = run(app)
    method, path, status, ms, unit, *rest = line.split(" ")
    assert (method, path, status, unit) == ("POST", "/v1/chat/completions", "200", "ms") and int(ms) >= 0
    assert rest == ["model=m1", "prompt_tokens=7", "completion_tokens=3"]


def test_a_client_that_leaves_mid_stream_still_gets_its_line() -> None:
    (line,) = run(app, fail_after=2)
    assert line.startswith("POST /v1/chat/completions 200 ") and line.endswith("model=m1 (client gone)")


def test_what_a_client_wrote_cannot_fake_a_line() -> None:
    record = Access("GET", "/v1/\nINFO serve: fake", 0.0, 404, {"model": "a b"})
    line = access_line(record, 0.001)
    assert "\n" not in line and line == 'GET "/v1/\\nINFO serve: fake" 404 1 ms model="a b"'


def test_polled_paths_are_debug_lines_and_notes_outside_a_request_do_nothing() -> None:
    note(model="nobody")  # no request: no error, no line
    assert len(run(app, path="/health")) == 1  # a DEBUG line: shown at --log-level debug only
    assert run(app, path="/health", level=logging.INFO) == []
    assert len(run(app, level=logging.INFO)) == 1


def test_a_line_we_write_ourselves_has_the_same_format(logged: io.StringIO) -> None:
    logging.getLogger("stack").info("starting a")
    ours, logged_line = formatted("stack", "starting a"), logged.getvalue().rstrip("\n")
    pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO stack: starting a"
    assert re.fullmatch(pattern, ours) and re.fullmatch(pattern, logged_line)

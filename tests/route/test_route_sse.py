"""The stream watcher gives the same verdict however the bytes are split."""

from __future__ import annotations

import json

import pytest

from route.sse import SseWatch, error_event


def event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


GOOD = (
    event({"choices": [{"delta": {"role": "assistant"}}]})
    + event({"choices": [{"delta": {"content": '"error" in text'}}]})
    + b"data: [DONE]\n\n"
)
INBAND = (
    event({"choices": [{"delta": {"role": "assistant"}}]})
    + event({"error": {"message": "decode failed"}})
    + b"data: [DONE]\n\n"
)
CUT = GOOD[: len(GOOD) // 2]
NAMED = b"event: error\r\ndata: overloaded\r\n\r\n"


def verdict(data: bytes, cut: int) -> tuple[bool, str | None]:
    w = SseWatch()
    w.feed(data[:cut])
    w.feed(data[cut:])
    return w.done, w.error


@pytest.mark.parametrize(
    ("data", "expected"),
    [(GOOD, (True, None)), (INBAND, (True, "decode failed")), (CUT, (False, None)), (NAMED, (False, "overloaded"))],
)
def test_every_split_gives_the_same_verdict(data: bytes, expected: tuple[bool, str | None]) -> None:
    assert {verdict(data, i) for i in range(len(data) + 1)} == {expected}


def test_garbage_is_neither_done_nor_error() -> None:
    w = SseWatch()
    w.feed(b"\x00\xffnot sse at all" * 1000)
    assert (w.done, w.error) == (False, None)


def test_error_event_is_an_openai_error_then_done() -> None:
    w = SseWatch()
    w.feed(error_event("cut"))
    assert w.done and w.error == "cut"
    first = error_event("cut").split(b"\n\n")[0]
    assert json.loads(first[len(b"data: ") :])["error"]["type"] == "server_error"

"""Ollama's keep_alive as the router reads it (route/keep_alive.py), and the NDJSON stream watcher (route/ndjson.py)
giving the same verdict however the bytes are split."""

from __future__ import annotations

import json

import pytest

from route.keep_alive import FOREVER, KeepAliveError, parse_keep_alive
from route.ndjson import NdjsonWatch


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        ("0", 0.0),
        ("0s", 0.0),
        (300, 300.0),
        (1.5, 1.5),
        ("300", 300.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("300ms", 0.3),
        ("2h45m10.5s", 9910.5),
        (-1, FOREVER),
        ("-1", FOREVER),
        ("-1m", FOREVER),
    ],
)
def test_durations(value: object, seconds: float | None) -> None:
    got = parse_keep_alive(value)
    assert got is None if seconds is None else got == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["forever", "5x", "m", "", "1h 30m", "--1s", True, [], {}, "nan"])
def test_not_durations(value: object) -> None:
    with pytest.raises(KeepAliveError):
        parse_keep_alive(value)


def line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\n"


GOOD = line({"response": '"done": "error"', "done": False}) + line({"response": "", "done": True})
INBAND = line({"response": "a", "done": False}) + line({"error": "decode failed"})
CUT = line({"response": "a", "done": False}) + b'{"response": "b", "do'


@pytest.mark.parametrize(
    ("data", "done", "error"), [(GOOD, True, None), (INBAND, True, "decode failed"), (CUT, False, None)]
)
def test_ndjson_watch_at_every_split(data: bytes, done: bool, error: str | None) -> None:
    for cut in range(len(data) + 1):
        watch = NdjsonWatch()
        watch.feed(data[:cut])
        watch.feed(data[cut:])
        assert (watch.done, watch.error) == (done, error), cut

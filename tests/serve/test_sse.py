"""serve/api/sse.py: a Frame's bytes equal the whole chunk encoded with the text in its slot, whatever the text."""

from __future__ import annotations

import json

import pytest

from serve.api import sse
from serve.chat import ids

TEXTS = [
    "",
    "hello",
    ' "quoted" \\ back',
    "line\nbreak\ttab",
    "naïve 日本語 🙂",
    "\x00nul",
    sse.SLOT,
    json.dumps(sse.SLOT),
]


@pytest.mark.parametrize("text", TEXTS)
def test_a_frame_equals_the_chunk_encoded_whole(text: str) -> None:
    meta = {"id": "cmpl-1", "created": 1, "model": "m", "object": "text_completion"}
    chunk = lambda t: {**meta, "choices": [{"index": 0, "text": t, "finish_reason": None, "logprobs": None}]}  # noqa: E731
    assert sse.Frame(chunk(sse.SLOT)).fill(text) == sse.data(chunk(text))
    # two slots: a reasoning delta carries its text twice
    delta = lambda t: {"reasoning_content": t, "reasoning": t, "channel": "analysis"}  # noqa: E731
    assert sse.Frame(delta(sse.SLOT)).fill(text) == sse.data(delta(text))
    assert json.loads(sse.Frame(chunk(sse.SLOT)).fill(text)[len(b"data: ") :])["choices"][0]["text"] == text


def test_a_chunk_without_a_slot_is_refused() -> None:
    with pytest.raises(ValueError):
        sse.Frame({"text": "no slot"})


def test_ids_have_their_shapes_and_do_not_repeat() -> None:
    hexes = {ids.hex_id() for _ in range(10_000)}
    assert len(hexes) == 10_000 and all(len(h) == 32 and int(h, 16) >= 0 for h in hexes)
    assert len(ids.hex_id(12)) == 24
    names = {ids.alnum_id(9) for _ in range(1_000)}
    assert len(names) == 1_000 and all(len(n) == 9 and n.isalnum() and n.isascii() for n in names)

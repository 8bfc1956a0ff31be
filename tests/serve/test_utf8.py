"""serve/engine/utf8.py against Python's strict UTF-8 decoder (RFC 3629), the oracle: exhaustive over short byte
strings, random longer ones cut into tokens at every place, and masks over a small vocabulary."""

from __future__ import annotations

import codecs
import itertools
import random

import numpy as np

from serve.engine.utf8 import CLEAN, ERROR, N_STATES, VocabMasks, advance, state_of

# Every byte at or next to a boundary of RFC 3629's table
EDGES = bytes.fromhex("00 41 7F 80 8F 90 9F A0 BF C0 C1 C2 DF E0 E1 EC ED EE EF F0 F1 F3 F4 F5 F7 F8 FF")
# A partial sequence is completed by its first missing byte (the only one whose range varies) then 80s.
COMPLETIONS = [b""] + [bytes([x]) + b"\x80" * k for x in range(0x80, 0xC0) for k in range(3)]


def decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")  # strict
    except UnicodeDecodeError:
        return False
    return True


def valid_prefix(data: bytes) -> bool:
    """Some continuation makes `data` valid UTF-8: Python's incremental decoder refuses most bad prefixes at once
    (not all: it holds ED A0 back), and completing what it holds back settles the rest."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        decoder.decode(data)
    except UnicodeDecodeError:
        return False
    pending = decoder.getstate()[0]
    return any(decodes(pending + c) for c in COMPLETIONS)


def owed(data: bytes) -> int:
    """How many bytes the oracle says the valid prefix `data` still needs (the shortest completion)."""
    return min(len(c) for c in COMPLETIONS if decodes(data + c))


def test_every_string_of_up_to_three_edge_bytes() -> None:
    for n in range(4):
        for combo in itertools.product(EDGES, repeat=n):
            data = bytes(combo)
            state = advance(CLEAN, data)
            assert (state != ERROR) == valid_prefix(data), data.hex(" ")
            assert (state == CLEAN) == decodes(data), data.hex(" ")


def test_every_pair_of_bytes() -> None:
    for a in range(256):
        for b in range(256):
            data = bytes([a, b])
            assert (advance(CLEAN, data) != ERROR) == valid_prefix(data), data.hex(" ")


def test_each_state_owes_what_the_oracle_says() -> None:
    """A state stands for every prefix that reaches it: each behaves alike after any byte."""
    reached: dict[int, list[bytes]] = {}
    for n in range(4):
        for combo in itertools.product(range(0x80, 0x100), repeat=n) if n < 3 else []:
            data = bytes(combo)
            state = advance(CLEAN, data)
            if state != ERROR:
                reached.setdefault(state, []).append(data)
    for combo in itertools.product(EDGES, repeat=3):
        data = bytes(combo)
        if (state := advance(CLEAN, data)) != ERROR:
            reached.setdefault(state, []).append(data)
    assert sorted(reached) == list(range(N_STATES))
    for state, prefixes in reached.items():
        for prefix in prefixes[:: max(1, len(prefixes) // 40)]:
            assert owed(prefix) == owed(prefixes[0]), (state, prefix.hex(" "))
            for b in range(256):
                assert (advance(state, bytes([b])) != ERROR) == valid_prefix(prefix + bytes([b])), (prefix, b)


def test_random_strings_cut_into_tokens() -> None:
    rng = random.Random(20)
    alphabet = list(EDGES) + list(range(256))
    text = "aé€😀\u07ff\u0800\ud7ff\ue000\uffff\U00010000\U0010ffff"
    for _ in range(4000):
        if rng.random() < 0.5:
            data = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
        else:  # mostly valid text, sometimes with a byte changed: errors deep inside
            data = bytearray("".join(rng.choice(text) for _ in range(rng.randint(1, 5))).encode())
            if rng.random() < 0.5:
                data[rng.randrange(len(data))] = rng.choice(alphabet)
            data = bytes(data)
        whole = advance(CLEAN, data)
        assert (whole != ERROR) == valid_prefix(data), data.hex(" ")
        for cut in range(len(data) + 1):
            first = advance(CLEAN, data[:cut])
            assert (first if first == ERROR else advance(first, data[cut:])) == whole


def test_state_of_a_decoders_pending_bytes() -> None:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode("€".encode()[:2])
    assert state_of(decoder.getstate()[0]) == advance(CLEAN, b"\xe2\x82")
    decoder.decode(b"\xac")
    assert state_of(decoder.getstate()[0]) == CLEAN


def test_masks_over_a_vocabulary() -> None:
    """Each token allowed in a state exactly when the oracle takes the state's prefix plus its bytes; an ending token
    only at a boundary; a token that adds nothing everywhere."""
    pieces = [bytes([b]) for b in range(256)] + [b"ab", "é".encode(), b"\xa9x", b"\x80\x80", b"\xed\xa0", b"", b"<e>"]
    ends = [False] * (len(pieces) - 1) + [True]
    masks = VocabMasks(pieces, ends)
    prefixes = {advance(CLEAN, p): p for p in [b"", b"\xc3", b"\xe1", b"\xe0", b"\xed", b"\xf1", b"\xf0", b"\xf4"]}
    assert sorted(prefixes) == list(range(N_STATES))
    for state, prefix in prefixes.items():
        for t, piece in enumerate(pieces[:-1]):
            assert (masks.next[state, t] != ERROR) == valid_prefix(prefix + piece), (prefix, piece)
            if masks.next[state, t] != ERROR:
                assert masks.next[state, t] == advance(CLEAN, prefix + piece)
        assert (masks.next[state, len(pieces) - 1] != ERROR) == (state == CLEAN)
        allowed = set(masks.allowed[state].tolist())
        assert allowed == {t for t in range(len(pieces)) if masks.next[state, t] != ERROR}
        assert set(masks.refused[state].tolist()) == set(range(len(pieces))) - allowed


def test_apply_refuses_and_undo_restores() -> None:
    pieces = [bytes([b]) for b in range(256)]
    masks = VocabMasks(pieces, [False] * 256)
    rng = np.random.default_rng(0)
    for state in range(N_STATES):
        logits = rng.standard_normal(256).astype(np.float32)
        before = logits.copy()
        saved = masks.apply(state, logits)
        assert saved is not None
        assert np.isneginf(logits[masks.refused[state]]).all()
        assert (logits[masks.allowed[state]] == before[masks.allowed[state]]).all()
        masks.undo(state, logits, saved)
        assert (logits == before).all()


def test_apply_leaves_a_vocabulary_that_cannot_go_on_alone() -> None:
    """A vocabulary without continuation bytes cannot finish a character: nothing is refused then."""
    masks = VocabMasks([b"a", b"\xc3"], [False, False])
    logits = np.zeros(2, np.float32)
    assert masks.apply(advance(CLEAN, b"\xc3"), logits) is None
    assert (logits == 0).all()

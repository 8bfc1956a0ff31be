"""Strict UTF-8 over a token stream: which tokens may come next so the output stays valid UTF-8.

llama.cpp's grammar decodes the output's bytes laxly (llama-grammar.cpp `decode_utf8`: a lead byte's length from
its top four bits, continuation bytes within a token taken unchecked), so it accepts overlongs (C1 A2, E0 80 80),
surrogates (ED A0 80), code points past U+10FFFF (F4 90.., F5-FF leads) and counts each as one character, which a
strict decoder turns into two or three U+FFFD. Under a grammar the engine refuses such tokens itself, from this
module's masks: RFC 3629 (what Python's strict decoder accepts), tracked as the pending partial sequence.

A state is what the bytes so far still owe: nothing (CLEAN), or 1-3 continuation bytes, the first of which may be
narrowed by the lead byte (E0 A0-BF, ED 80-9F, F0 90-BF, F4 80-8F; the table of RFC 3629 section 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLEAN = 0  # at a character boundary
NEED1 = 1  # one continuation byte, 80-BF
NEED2 = 2  # two, the first 80-BF (after E1-EC, EE, EF)
NEED2_E0 = 3  # two, the first A0-BF (E0: no overlong)
NEED2_ED = 4  # two, the first 80-9F (ED: no surrogate)
NEED3 = 5  # three, the first 80-BF (after F1-F3)
NEED3_F0 = 6  # three, the first 90-BF (F0: no overlong)
NEED3_F4 = 7  # three, the first 80-8F (F4: nothing past U+10FFFF)
N_STATES = 8
ERROR = -1

_LEADS = (  # lead byte -> the state after it (C0, C1 and F5-FF lead nothing valid)
    (range(0x80), CLEAN),
    (range(0xC2, 0xE0), NEED1),
    (range(0xE0, 0xE1), NEED2_E0),
    (range(0xE1, 0xED), NEED2),
    (range(0xED, 0xEE), NEED2_ED),
    (range(0xEE, 0xF0), NEED2),
    (range(0xF0, 0xF1), NEED3_F0),
    (range(0xF1, 0xF4), NEED3),
    (range(0xF4, 0xF5), NEED3_F4),
)
# state -> (the continuation bytes it takes, the state after one)
_CONTINUATIONS = {
    NEED1: (range(0x80, 0xC0), CLEAN),
    NEED2: (range(0x80, 0xC0), NEED1),
    NEED2_E0: (range(0xA0, 0xC0), NEED1),
    NEED2_ED: (range(0x80, 0xA0), NEED1),
    NEED3: (range(0x80, 0xC0), NEED2),
    NEED3_F0: (range(0x90, 0xC0), NEED2),
    NEED3_F4: (range(0x80, 0x90), NEED2),
}


def _table() -> tuple[tuple[int, ...], ...]:
    rows = [[ERROR] * 256 for _ in range(N_STATES)]
    for byte_range, after in _LEADS:
        for b in byte_range:
            rows[CLEAN][b] = after
    for state, (byte_range, after) in _CONTINUATIONS.items():
        for b in byte_range:
            rows[state][b] = after
    return tuple(tuple(row) for row in rows)


TABLE = _table()  # TABLE[state][byte] -> the next state, or ERROR


def advance(state: int, data: bytes) -> int:
    """The state after `data` from `state`, or ERROR when no continuation could make the bytes valid UTF-8."""
    if state == CLEAN and data.isascii():
        return CLEAN
    for b in data:
        state = TABLE[state][b]
        if state == ERROR:
            return ERROR
    return state


def state_of(pending: bytes) -> int:
    """The state of an incomplete tail, such as a strict incremental decoder holds back (`getstate()[0]`)."""
    return advance(CLEAN, pending)


class VocabMasks:
    """Which tokens keep the output valid in each state, and the state each leads to.

    `pieces[t]`: the bytes token t adds to the output (empty for a token that adds nothing, such as a control token
    the engine drops: allowed everywhere, the state unchanged). `ends[t]`: the token ends the output (end of
    generation), allowed only at a character boundary, where nothing is left undecoded."""

    def __init__(self, pieces: Sequence[bytes], ends: Sequence[bool]) -> None:
        nxt = np.full((N_STATES, len(pieces)), ERROR, np.int8)
        for t, piece in enumerate(pieces):
            after_clean = advance(CLEAN, piece)
            nxt[CLEAN, t] = after_clean
            if ends[t]:
                if after_clean != CLEAN:  # its text is never decoded; the output just ends
                    nxt[CLEAN, t] = CLEAN
                continue
            if not piece or TABLE[NEED1][piece[0]] != ERROR:  # only a token opening with a continuation byte
                for state in range(1, N_STATES):  # can go on from a pending sequence
                    nxt[state, t] = advance(state, piece)
        self.next = nxt  # next[state, token] -> the state after it, or ERROR
        # per state, the token ids it refuses / allows (sorted): a mask writes only the shorter list
        self.refused = tuple(np.flatnonzero(nxt[s] == ERROR).astype(np.intp) for s in range(N_STATES))
        self.allowed = tuple(np.flatnonzero(nxt[s] != ERROR).astype(np.intp) for s in range(N_STATES))

    def apply(self, state: int, logits: np.ndarray) -> np.ndarray | None:
        """Set the logits of the tokens `state` refuses to -inf in place. Returns what is needed to undo it (the
        logits before, whole or of the refused ids), or None when nothing was changed: nothing to refuse, or
        nothing would be left (a vocabulary that cannot continue the sequence: better invalid than stuck)."""
        refused, allowed = self.refused[state], self.allowed[state]
        if refused.size == 0 or allowed.size == 0:
            return None
        if refused.size <= allowed.size:
            saved = logits[refused]
            logits[refused] = -np.inf
        else:  # most tokens refused (inside a character): keep only the allowed ones
            saved = logits.copy()
            kept = logits[allowed]
            logits.fill(-np.inf)
            logits[allowed] = kept
        return saved

    def undo(self, state: int, logits: np.ndarray, saved: np.ndarray) -> None:
        if saved.size == logits.size:
            logits[:] = saved
        else:
            logits[self.refused[state]] = saved

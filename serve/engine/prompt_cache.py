"""The prompt cache's bookkeeping, apart from llama.cpp: which token ids each sequence's KV cells hold, which
free sequence a new prompt should take, and the host-RAM store of evicted sequences' saved state.

Pure logic over numpy token arrays; serve/engine/engine.py does the llama.cpp calls (seq_rm, state get/set).

Sliding-window models keep only the last cells of a sequence (unless the SWA cache is full-size), so a cached
prefix is usable only while the cells the next token attends to are still there: `usable` applies llama.cpp's
server rule (the smallest position kept must be within the window behind the first new token).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EMPTY = np.zeros(0, np.int32)
# Prompt tokens always decoded, never taken from the cache: the last one's logits are sampled.
DECODED = 1
# ggml computes a one-token batch by another kernel than a longer one, so the last bits of its logits differ from
# a fresh decode's (whose last chunk has more tokens). That changes no greedy answer we have seen, but a seeded
# sample must repeat exactly: such a request decodes two when it runs alone (with other sequences in the step,
# their tokens make the batch longer anyway). Not always two: a two-token batch costs well over a one-token pass
# on a CPU, and a second token while others run would cost llama.cpp a pass of its own (it splits a batch into
# equal numbers of tokens a sequence).
DECODED_EXACT = 2


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two int32 token arrays."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


def before_images(prompt: np.ndarray, keep: int) -> int:
    """`keep` cut back to the prompt's first image (its pseudo-ids are negative: serve/engine/vision.py). Under
    M-RoPE a cell's position equals its index only before the first image (after one, positions run n_pos - n_tokens
    behind), so reuse stops there and the cells from it on are dropped by position."""
    images = np.flatnonzero(prompt[:keep] < 0)
    return int(images[0]) if images.size else keep


def usable(prefix: int, pos_min: int, n_swa: int) -> int:
    """How much of a `prefix`-token match can be kept when the sequence's oldest kept cell is at `pos_min`:
    all of it, or nothing when a sliding window has already dropped cells the next token must see."""
    if prefix <= 0 or pos_min <= 0:
        return max(prefix, 0)
    return prefix if pos_min <= max(0, prefix - n_swa) else 0


@dataclass(eq=False)
class SeqState:
    """What one sequence's KV cells hold while it is free: token ids at positions 0..n-1."""

    seq: int
    tokens: np.ndarray = field(default_factory=lambda: EMPTY)
    pos_min: int = 0  # oldest position still in the cells (above 0 only for sliding-window caches)
    used: int = 0  # logical clock of the last use: least recently used goes first
    saved: bool = False  # the host cache already holds these exact cells
    prompt_end: int = 0  # where the last job's prompt ended (its answer follows)
    persist: bool = True  # may go to the disk tier (off after a `cache_prompt: false` request)


@dataclass(frozen=True)
class Choice:
    seq: int
    reuse: int  # prompt tokens whose cells are kept


def pick_sequence(
    free: Sequence[SeqState],
    prompt: np.ndarray,
    running: Iterable[int],
    n_swa: int,
    reuse: bool = True,
    min_share: float = 0.1,
    decoded: int = DECODED,
) -> Choice:
    """The free sequence for `prompt`: the longest usable common prefix (short of the last `decoded` prompt
    tokens). A prefix of at most `min_share` of the prompt is a miss (llama.cpp's
    server rule, --slot-prompt-similarity): a few shared template tokens must not evict a long cached
    conversation. Ties and misses go to the sequence that keeps the running ids in one run (a gap costs a
    filler token every step), then to the least recently used; the one taken still reuses what it shares."""
    ids = sorted(running)
    limit = max(0, len(prompt) - decoded)

    def fillers(seq: int) -> int:  # fillers added (negative: a gap filled) by running `seq` too
        if not ids:
            return 0
        lo, hi = ids[0], ids[-1]
        return (max(hi, seq) - min(lo, seq) + 1 - (len(ids) + 1)) - (hi - lo + 1 - len(ids))

    shares = {
        s.seq: usable(min(common_prefix(s.tokens, prompt), limit), s.pos_min, n_swa) if reuse else 0 for s in free
    }

    def score(s: SeqState) -> tuple[int, int, int]:
        hit = shares[s.seq] if shares[s.seq] > min_share * len(prompt) else 0
        return hit, -fillers(s.seq), -s.used

    best = max(free, key=score)
    return Choice(best.seq, shares[best.seq])


@dataclass(eq=False)
class Entry:
    tokens: np.ndarray
    data: Any  # the saved state (a ctypes byte array); opaque here
    size: int  # bytes it holds
    pos_min: int
    persist: bool = True  # may go to the disk tier


class HostCache:
    """Saved sequence states in host RAM, bounded by bytes, least recently used out first.

    An entry whose tokens are a prefix of a newer one's is dropped when the newer one serves every prompt the
    older one could, and a state a kept entry already serves is not stored twice. With a sliding window
    (`n_swa`), llama.cpp saves only the cells inside the window, so an entry serves only prefixes reaching into
    its last `n_swa` positions."""

    def __init__(self, capacity: int, n_swa: int = 0, on_evict: Callable[[Entry], None] | None = None) -> None:
        """`on_evict`: receives each entry dropped for room (least recently used), e.g. to spill it to disk."""
        self.capacity = capacity
        self.n_swa = n_swa
        self.on_evict = on_evict
        self.used = 0
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    def saved_pos_min(self, tokens: np.ndarray, pos_min: int) -> int:
        """The oldest position a saved state of these cells keeps."""
        return max(pos_min, len(tokens) - self.n_swa) if self.n_swa else 0

    def covers(self, tokens: np.ndarray) -> bool:
        """An entry already serves every prompt these tokens could."""
        n = len(tokens)
        return any(
            common_prefix(e.tokens, tokens) == n and usable(n, e.pos_min, self.n_swa) == n
            for e in self._entries.values()
        )

    def put(self, tokens: np.ndarray, data: Any, size: int, pos_min: int = 0, persist: bool = True) -> bool:
        """Store a state; False when it cannot fit at all or is already covered."""
        if size > self.capacity or self.covers(tokens):
            return False
        pos_min = self.saved_pos_min(tokens, pos_min)
        for key in [
            k
            for k, e in self._entries.items()
            if common_prefix(e.tokens, tokens) == len(e.tokens) and usable(len(e.tokens), pos_min, self.n_swa)
        ]:
            self._drop(key)
        while self.used + size > self.capacity:
            key = next(iter(self._entries))
            evicted = self._entries[key]
            self._drop(key)
            if self.on_evict is not None:
                self.on_evict(evicted)
        self._entries[self._next] = Entry(tokens, data, size, pos_min, persist)
        self._next += 1
        self.used += size
        return True

    def best(self, prompt: np.ndarray, min_share: float = 0.1, decoded: int = DECODED) -> tuple[Entry | None, int]:
        """The entry sharing the longest usable prefix with `prompt` (short of its last `decoded` tokens), if
        that is more than `min_share` of the prompt."""
        limit = max(0, len(prompt) - decoded)
        found: tuple[int, Entry] | None = None
        for key, e in self._entries.items():
            shared = usable(min(common_prefix(e.tokens, prompt), limit), e.pos_min, self.n_swa)
            if shared > min_share * len(prompt) and (found is None or shared > found[0]):
                found = (shared, e)
                best_key = key
        if found is None:
            return None, 0
        self._entries.move_to_end(best_key)
        return found[1], found[0]

    def recent(self) -> list[Entry]:
        """The entries, most recently used first."""
        return list(reversed(self._entries.values()))

    def clear(self) -> None:
        self._entries.clear()
        self.used = 0

    def _drop(self, key: int) -> None:
        self.used -= self._entries.pop(key).size

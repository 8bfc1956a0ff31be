"""The prompt cache's bookkeeping alone: longest-prefix choice, ties and misses, the sliding-window rule, the
byte-bounded host store."""

from __future__ import annotations

import numpy as np

from serve.engine.prompt_cache import (
    Choice,
    HostCache,
    SeqState,
    before_images,
    common_prefix,
    pick_sequence,
    usable,
)


def a(*tokens: int) -> np.ndarray:
    return np.array(tokens, np.int32)


def test_m_rope_reuse_stops_at_the_first_image() -> None:
    prompt = a(5, 6, 7, -11, -12, -13, 8, 9)  # an image's pseudo-ids are negative
    assert before_images(prompt, 8) == 3
    assert before_images(prompt, 5) == 3  # a match ending inside the image
    assert before_images(prompt, 2) == 2  # before it: as it is
    assert before_images(a(1, 2, 3), 3) == 3


def test_common_prefix() -> None:
    assert common_prefix(a(1, 2, 3), a(1, 2, 4, 5)) == 2
    assert common_prefix(a(1, 2), a(1, 2, 3)) == 2
    assert common_prefix(a(), a(1)) == 0
    assert common_prefix(a(9), a(1)) == 0


def test_longest_prefix_wins_and_the_last_prompt_token_is_always_decoded() -> None:
    free = [SeqState(0, a(1, 2), used=5), SeqState(1, a(1, 2, 3, 4), used=1), SeqState(2, a(7), used=0)]
    choice = pick_sequence(free, a(1, 2, 3, 9, 9), [], n_swa=0)
    assert (choice.seq, choice.reuse) == (1, 3)
    same = pick_sequence(free, a(1, 2, 3, 4), [], n_swa=0)  # the whole prompt is cached: one token still decoded
    assert (same.seq, same.reuse) == (1, 3)
    exact = pick_sequence(free, a(1, 2, 3, 4), [], n_swa=0, decoded=2)  # a seeded sample alone: two
    assert (exact.seq, exact.reuse) == (1, 2)


def test_a_few_shared_tokens_are_a_miss() -> None:
    """One token in common with a 20-token prompt (a tenth or less) is a miss: the least recently used sequence
    is taken, not the one holding a longer unrelated conversation."""
    prompt = a(1, *range(100, 119))
    free = [SeqState(0, a(1, 2, 3, 4, 5), used=5), SeqState(1, a(2, 7), used=1)]
    assert pick_sequence(free, prompt, [], n_swa=0) == Choice(1, 0)
    assert pick_sequence(free, prompt, [], n_swa=0, min_share=0.0) == Choice(0, 1)
    assert pick_sequence(free, a(1, 2, 3, 9, 9), [], n_swa=0).seq == 0


def test_misses_and_ties_go_to_the_least_recently_used() -> None:
    free = [SeqState(0, a(5), used=3), SeqState(1, a(6), used=1), SeqState(2, a(7), used=2)]
    assert pick_sequence(free, a(1, 2), [], n_swa=0) == pick_sequence(free, a(1, 2), [], n_swa=0, reuse=False)
    assert pick_sequence(free, a(1, 2), [], n_swa=0).seq == 1
    tied = [SeqState(0, a(1, 2, 3), used=3), SeqState(1, a(1, 2, 4), used=2)]
    assert pick_sequence(tied, a(1, 2, 9, 9), [], n_swa=0).seq == 1


def test_ties_keep_the_running_ids_in_one_run() -> None:
    """Running 2 and 3: a miss takes 1 or 4 (no filler) before the least recently used 6 (two fillers)."""
    free = [SeqState(1, used=5), SeqState(4, used=4), SeqState(6, used=0)]
    assert pick_sequence(free, a(1, 2), [2, 3], n_swa=0).seq == 4
    gap = [SeqState(1, used=5), SeqState(3, used=4), SeqState(6, used=0)]  # running 2 and 4: 3 fills the gap
    assert pick_sequence(gap, a(1, 2), [2, 4], n_swa=0).seq == 3


def test_cache_prompt_off_reuses_nothing() -> None:
    free = [SeqState(0, a(1, 2, 3), used=1)]
    assert pick_sequence(free, a(1, 2, 3, 4), [], n_swa=0, reuse=False).reuse == 0


def test_sliding_window_rule() -> None:
    """Window 4: the first new token at position p sees positions p-3..p-1, so the oldest kept cell must be at
    most p-4 (llama.cpp's server rule)."""
    assert usable(10, pos_min=0, n_swa=4) == 10
    assert usable(10, pos_min=6, n_swa=4) == 10
    assert usable(10, pos_min=7, n_swa=4) == 0
    assert usable(3, pos_min=1, n_swa=4) == 0
    free = [SeqState(0, a(*range(20)), pos_min=12)]
    assert pick_sequence(free, a(*range(18), 99, 99), [], n_swa=4).reuse == 18  # 12 <= 18-4: a continuation fits
    assert pick_sequence(free, a(*range(10), 99, 99), [], n_swa=4).reuse == 0  # far behind the end: gone


def test_host_cache_longest_prefix_lru_and_bytes() -> None:
    cache = HostCache(capacity=300)
    assert cache.put(a(1, 2, 3), "s1", 100)
    assert cache.put(a(4, 5, 6), "s2", 100)
    entry, shared = cache.best(a(1, 2, 3, 4, 5))
    assert entry is not None and entry.data == "s1" and shared == 3
    assert cache.put(a(7, 8), "s3", 100)
    assert cache.put(a(9, 9), "s4", 100)  # over 300 bytes: the least recently used (s2) goes
    assert cache.best(a(4, 5, 6, 7)) == (None, 0)
    assert cache.best(a(1, 2, 3, 0, 0))[1] == 3
    assert cache.used == 300 and len(cache) == 3
    assert not cache.put(a(1, 2), "sub", 10)  # a prefix of a kept entry adds nothing
    assert cache.put(a(1, 2, 3, 4, 5), "longer", 100)  # ... and a longer one replaces it
    entry, shared = cache.best(a(1, 2, 3, 4, 5, 6, 7))
    assert entry is not None and entry.data == "longer" and shared == 5
    assert not cache.put(a(0), "huge", 301)
    cache.clear()
    assert len(cache) == 0 and cache.used == 0


def test_host_cache_with_a_sliding_window() -> None:
    """llama.cpp saves only the window's cells: an entry of 20 tokens (window 4) serves a prompt sharing at
    least 19 of them, and a shorter entry it cannot serve is kept beside it."""
    cache = HostCache(capacity=1000, n_swa=4)
    long = a(*range(20))
    assert cache.put(long[:10], "prompt end", 10)
    assert cache.put(long, "whole", 10)
    assert len(cache) == 2  # the whole one cannot serve a prompt branching at 10
    assert cache.best(a(*range(10), 99, 99))[0].data == "prompt end"
    entry, shared = cache.best(a(*range(20), 99, 99))
    assert entry is not None and entry.data == "whole" and shared == 20
    entry, shared = cache.best(a(*range(15), 99, 99))  # past the prompt end, but far behind the whole one's window
    assert entry is not None and entry.data == "prompt end" and shared == 10

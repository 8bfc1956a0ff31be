"""The prompt cache on real llama.cpp models: a turn whose history only grows decodes only what is new, and at
temperature 0 gives exactly the tokens a fresh engine (nothing cached) gives; the host-RAM cache brings back
sequences evicted by other conversations; sliding-window models reuse only what their window still holds;
nothing cached survives the engine."""

from __future__ import annotations

import itertools
import queue
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serve.engine.engine import Engine, Failed, Finished, Job, Model, Piece, SamplingParams
from testkit.tiny_gguf import build_tiny_gguf

WORDS = [
    "the",
    "river",
    "city",
    "grew",
    "around",
    "a",
    "market",
    "where",
    "traders",
    "from",
    "the",
    "hills",
    "sold",
    "wool",
    "and",
    "salt",
]


def text(seed: int, n: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, n))


def run(engine: Engine, tokens: list[int], **params: object) -> tuple[list[str], Finished]:
    q: queue.Queue = queue.Queue()
    p = SamplingParams(**{"max_tokens": 12, "temperature": 0.0, **params})
    engine.submit(Job(tokens, p, q.put))
    pieces: list[str] = []
    while True:
        event = q.get(timeout=60)
        if isinstance(event, Piece):
            pieces.append(event.text)
        elif isinstance(event, Failed):
            raise AssertionError(event.message)
        else:
            return pieces, event


def generated_ids(model: Model, engine: Engine, seq_hint: list[int], pieces: list[str]) -> list[int]:
    """The answer as token ids: re-tokenizing its text is what a client sending it back would do."""
    return model.tokenize("".join(pieces), False)


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    m = Model(build_tiny_gguf())
    yield m
    m.close()


def engine_for(model: Model, n_seq: int = 2, cache_ram: int = 0, **kw: object) -> Engine:
    e = Engine(model, n_seq=n_seq, ctx_per_seq=1024, prompt_chunk=64, threads=2, cache_ram=cache_ram, **kw)
    e.start()
    return e


def conversation(model: Model, seed: int, turns: int = 3) -> list[list[int]]:
    """Prompts of a conversation whose history only grows (the answers are filled in as it runs)."""
    return [
        model.tokenize(f"<|im_start|>user\n{text(seed * 10 + t, 40)}<|im_end|>\n<|im_start|>assistant\n", False)
        for t in range(turns)
    ]


def talk(engine: Engine, model: Model, seed: int, turns: int = 3, **params: object) -> list[tuple[list[str], Finished]]:
    history: list[int] = []
    out = []
    for part in conversation(model, seed, turns):
        history = history + part
        pieces, fin = run(engine, history, **params)
        out.append((pieces, fin))
        history = history + model.tokenize("".join(pieces), False) + model.tokenize("<|im_end|>\n", False)
    return out


def test_growing_history_reuses_the_cache_and_matches_a_fresh_engine(model: Model) -> None:
    cached, fresh = engine_for(model), engine_for(model)
    try:
        hot = talk(cached, model, seed=1)
        cold = talk(fresh, model, seed=1, cache_prompt=False)
    finally:
        cached.stop()
        fresh.stop()
    assert [p for p, _ in hot] == [p for p, _ in cold]
    assert hot[0][1].cached_tokens == 0
    for (_, before), (_, after) in itertools.pairwise(hot):
        # Everything the previous turn decoded is reused: its prompt and its answer (the answer's last token
        # was sampled, never decoded, and the re-tokenized answer may split differently at its end).
        assert after.cached_tokens >= before.prompt_tokens
        assert after.cached_tokens < after.prompt_tokens
    assert all(f.cached_tokens == 0 for _, f in cold)


def test_the_same_prompt_twice_still_decodes_its_last_token(model: Model) -> None:
    e = engine_for(model)
    try:
        prompt = model.tokenize(text(5, 30), False)
        first, a = run(e, prompt)
        again, b = run(e, prompt)
    finally:
        e.stop()
    assert first == again
    assert a.cached_tokens == 0 and b.cached_tokens == len(prompt) - 1


def logprobs_of(engine: Engine, tokens: list[int], **params: object) -> tuple[list[tuple[str, float]], Finished]:
    q: queue.Queue = queue.Queue()
    engine.submit(Job(tokens, SamplingParams(**{"max_tokens": 24, "logprobs": 0, **params}), q.put))
    out = []
    while True:
        event = q.get(timeout=60)
        if isinstance(event, Piece):
            assert event.logprob is not None
            out.append((event.text, event.logprob.logprob))
        elif isinstance(event, Finished):
            return out, event


def test_a_seeded_sample_repeats_bit_for_bit(model: Model) -> None:
    """A one-token batch takes another ggml kernel than the prompt's chunk did: a seeded request alone decodes its
    last two prompt tokens, so its logits are the fresh decode's to the last bit and the sample repeats."""
    e = engine_for(model)
    try:
        prompt = model.tokenize(text(8, 30), False)
        fresh, a = logprobs_of(e, prompt, temperature=1.0, seed=3, cache_prompt=False)
        cached, b = logprobs_of(e, prompt, temperature=1.0, seed=3)
    finally:
        e.stop()
    assert cached == fresh
    assert a.cached_tokens == 0 and b.cached_tokens == len(prompt) - 2


def test_a_prompt_joining_running_sequences_decodes_one_token(model: Model) -> None:
    """With other sequences in the step, the last prompt token shares the batch with theirs: one is enough
    (two would cost llama.cpp a pass of their own), and the answer is the same."""
    e = engine_for(model, 2)
    try:
        prompt = model.tokenize(text(6, 30), False)
        alone, _ = run(e, prompt)
        q: queue.Queue = queue.Queue()
        busy = Job(model.tokenize(text(7, 30), False), SamplingParams(max_tokens=400, temperature=0.0), q.put)
        e.submit(busy)
        q.get(timeout=60)  # it is running
        joined, fin = run(e, prompt)
        e.cancel(busy)
    finally:
        e.stop()
    assert joined == alone
    assert fin.cached_tokens == len(prompt) - 1


def sixteen_over_four(model: Model, max_tokens: int, keep_answer: bool = True) -> None:
    """16 conversations take turns on 4 sequences: without the host cache later turns find their sequence
    taken by others; with it they hit, and answer as a fresh engine does. `keep_answer` off: the history drops
    the answer (as templates drop earlier thinking), so turn 2 shares exactly turn 1's prompt."""

    def rounds(engine: Engine) -> list[list[tuple[list[str], Finished]]]:
        histories: list[list[int]] = [[] for _ in range(16)]
        prompts = [conversation(model, 100 + c, 2) for c in range(16)]
        results: list[list[tuple[list[str], Finished]]] = [[] for _ in range(16)]
        for turn in range(2):
            for c in range(16):
                histories[c] = histories[c] + prompts[c][turn]
                pieces, fin = run(engine, histories[c], max_tokens=max_tokens)
                results[c].append((pieces, fin))
                answer = "".join(pieces) if keep_answer else ""
                histories[c] += model.tokenize(answer + "<|im_end|>\n", False)
        return results

    with_ram, without = engine_for(model, 4, cache_ram=64 << 20), engine_for(model, 4)
    try:
        hot, cold = rounds(with_ram), rounds(without)
    finally:
        with_ram.stop()
        without.stop()
    assert [[p for p, _ in r] for r in hot] == [[p for p, _ in r] for r in cold]
    assert all(r[1][1].cached_tokens >= r[0][1].prompt_tokens for r in hot)
    # 12 other conversations came between: only what every prompt starts with is still there.
    assert all(r[1][1].cached_tokens < r[0][1].prompt_tokens / 2 for r in cold)
    assert with_ram.host is not None and len(with_ram.host) == 0  # stop() dropped every saved state


def test_host_cache_keeps_sixteen_conversations_over_four_sequences(model: Model) -> None:
    sixteen_over_four(model, max_tokens=6)


@pytest.mark.slow
def test_host_cache_with_a_sliding_window() -> None:
    """gpt-oss (window 8): answers longer than the window, dropped from the history: only the saved prompt ends
    can serve turn 2 (a saved sliding-window state holds only its window)."""
    m = Model(fixture_gguf("gpt-oss"))
    try:
        sixteen_over_four(m, max_tokens=16, keep_answer=False)
    finally:
        m.close()


def test_fillers_leave_a_free_sequences_cache_alone(model: Model) -> None:
    """Sequences 0 and 2 run while 1 is free and holds a prompt: the filler that keeps the step in one pass sits
    after 1's cached cells, so 1's prompt still hits afterwards with the same answer."""
    e = engine_for(model, 3)
    try:
        prompts = [model.tokenize(text(20 + i, 40), False) for i in range(3)]
        base = [run(e, p) for p in prompts]  # sequences 0, 1, 2 each hold one prompt now
        queues = []
        for i in (0, 2):
            q: queue.Queue = queue.Queue()
            e.submit(Job(prompts[i] + [5], SamplingParams(max_tokens=20, temperature=0.0), q.put))
            queues.append(q)
        for q in queues:
            while not isinstance(q.get(timeout=60), Finished):
                pass
        pieces, fin = run(e, prompts[1])
    finally:
        e.stop()
    assert pieces == base[1][0]
    assert fin.cached_tokens == len(prompts[1]) - 1


def test_nothing_survives_the_engine(model: Model) -> None:
    e = engine_for(model, cache_ram=16 << 20)
    prompt = model.tokenize(text(9, 40), False)
    run(e, prompt)
    run(e, model.tokenize(text(10, 40), False))
    run(e, model.tokenize(text(11, 40), False))  # evicts the first prompt into host RAM
    assert e.host is not None and len(e.host) >= 1
    e.stop()
    assert len(e.host) == 0 and all(len(e.cached(s)) == 0 for s in range(2))
    again = engine_for(model, cache_ram=16 << 20)
    try:
        assert run(again, prompt)[1].cached_tokens == 0
    finally:
        again.stop()


# -- every fixture family, and sliding windows ------------------------------------------------------------------


def fixture_gguf(arch: str) -> Path:
    from serve.gguf_cache import resolve_model
    from testkit.fixtures.build import build_fixture

    return resolve_model(build_fixture(arch))[0]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "llama-spm", "mistral", "qwen2", "qwen3", "gemma3", "gpt-oss"])
def test_fixture_families_answer_from_the_cache_as_fresh(arch: str) -> None:
    m = Model(fixture_gguf(arch))
    cached, fresh = engine_for(m), engine_for(m)
    try:
        hot = talk(cached, m, seed=3)
        cold = talk(fresh, m, seed=3, cache_prompt=False)
    finally:
        cached.stop()
        fresh.stop()
        m.close()
    assert [p for p, _ in hot] == [p for p, _ in cold]
    assert all(f.cached_tokens > 0 for _, f in hot[1:])


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gemma3", "gpt-oss"])
def test_sliding_window_reuses_only_what_its_window_holds(arch: str) -> None:
    """A prompt sharing only an early prefix with a long cached one: with --no-swa-full the small window cache has
    dropped the cells it would need, so it is decoded in full (same answer as fresh); the full-size one hits."""
    m = Model(fixture_gguf(arch))
    assert m.n_ctx_train and Engine  # loaded
    shared = m.tokenize(text(30, 30), False)
    long = shared + m.tokenize(text(31, 160), False)  # past the small window cache (256 cells here)
    branch = shared + m.tokenize(text(32, 10), False)
    small, full, fresh = engine_for(m, swa_full=False), engine_for(m, swa_full=True), engine_for(m)
    try:
        assert small.n_swa > 0
        for e in (small, full):
            run(e, long)
        a, fa = run(small, branch)
        b, fb = run(full, branch)
        c, _ = run(fresh, branch, cache_prompt=False)
    finally:
        for e in (small, full, fresh):
            e.stop()
        m.close()
    assert a == b == c
    assert fa.cached_tokens == 0
    assert fb.cached_tokens >= len(shared) - 1

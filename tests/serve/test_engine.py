"""The engine on a real (tiny, random) llama.cpp model: batching changes nothing, seeds repeat, stops hold,
cancellation frees the sequence, grammars constrain, a long prompt is processed in chunks."""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Iterator

import pytest

from serve.chat.answer_grammar import build
from serve.chat.channels import Format
from serve.chat.schemas import ResponseFormat
from serve.engine import utf8
from serve.engine.budget import ThinkBudget
from serve.engine.engine import Engine, Failed, Finished, Job, Model, Piece, SamplingParams
from serve.engine.grammar import Grammar
from serve.engine.utf8 import CLEAN, ERROR
from testkit.tiny_gguf import build_tiny_gguf

PROMPTS = ["hello there", "abc def", "the quick brown fox", "zzz", "Paris is", "1 2 3 4"]


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    m = Model(build_tiny_gguf())
    yield m
    m.close()


@pytest.fixture(scope="module")
def engine(model: Model) -> Iterator[Engine]:
    e = Engine(model, n_seq=4, ctx_per_seq=512, prompt_chunk=32, threads=2)
    e.start()
    yield e
    e.stop()


def submit(engine: Engine, model: Model, prompt: str, **params: object) -> tuple[Job, queue.Queue]:
    q: queue.Queue = queue.Queue()
    p = SamplingParams(**{"max_tokens": 24, "temperature": 0.0, **params})
    job = Job(model.tokenize(prompt, False), p, q.put)
    engine.submit(job)
    return job, q


def collect(q: queue.Queue, timeout: float = 30) -> tuple[str, Finished | Failed]:
    text = ""
    while True:
        event = q.get(timeout=timeout)
        if isinstance(event, Piece):
            text += event.text
        else:
            return text, event


def test_batched_equals_solo(engine: Engine, model: Model) -> None:
    solo = [collect(submit(engine, model, p)[1]) for p in PROMPTS]
    queues = [submit(engine, model, p)[1] for p in PROMPTS]  # 6 jobs on 4 sequences: two join mid-way
    together = [collect(q) for q in queues]
    assert [t for t, _ in together] == [t for t, _ in solo]
    assert all(f.reason == "length" and f.completion_tokens == 24 for _, f in together)


def test_seed_repeats(engine: Engine, model: Model) -> None:
    a = collect(submit(engine, model, "hello", temperature=1.0, seed=7, top_k=40, top_p=0.9, min_p=0.01)[1])[0]
    b = collect(submit(engine, model, "hello", temperature=1.0, seed=7, top_k=40, top_p=0.9, min_p=0.01)[1])[0]
    c = collect(submit(engine, model, "hello", temperature=1.0, seed=8, top_k=40, top_p=0.9, min_p=0.01)[1])[0]
    assert a == b
    assert a != c


def test_stop_string_never_emitted(engine: Engine, model: Model) -> None:
    full = collect(submit(engine, model, "the quick brown fox", max_tokens=40)[1])[0]
    stop = full[10:13]
    first = full.find(stop)
    text, fin = collect(submit(engine, model, "the quick brown fox", max_tokens=40, stops=(stop,))[1])
    assert text == full[:first]
    assert fin.reason == "stop"


def test_cancel_frees_sequence_within_a_step(engine: Engine, model: Model) -> None:
    job, q = submit(engine, model, "hello", max_tokens=400)
    q.get(timeout=10)  # it is running
    engine.cancel(job)
    t0 = time.perf_counter()
    _, fin = collect(q)
    assert fin.reason == "cancelled"
    assert time.perf_counter() - t0 < 1.0
    deadline = time.time() + 1
    while engine.active and time.time() < deadline:
        time.sleep(0.01)
    assert engine.active == 0


def test_long_prompt_does_not_stall_a_stream(engine: Engine, model: Model) -> None:
    """A 400-token prompt takes 13 chunks of 32; the running stream gets a token at every one of those steps."""
    job, q = submit(engine, model, "hello", max_tokens=450)
    q.get(timeout=10)
    _, long_q = submit(engine, model, "x " * 200, max_tokens=1)
    got_before_long_done = 0
    while long_q.empty():
        event = q.get(timeout=10)
        assert isinstance(event, Piece), event  # the stream must outlast the long prompt
        got_before_long_done += 1
    engine.cancel(job)
    collect(q)
    assert got_before_long_done >= 10


def test_json_schema_grammar(engine: Engine, model: Model) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["n", "ok"],
    }
    rf = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    grammar = build(rf, Format.THINK, thinks=False)
    text, fin = collect(submit(engine, model, "hello", max_tokens=64, temperature=0.8, seed=1, grammar=grammar)[1])
    assert fin.reason == "stop", text
    value = json.loads(text)
    assert isinstance(value["n"], int) and isinstance(value["ok"], bool)


def test_lazy_grammar_waits_for_end_of_thinking(engine: Engine, model: Model) -> None:
    """The random model never closes a think block, so a lazy grammar never constrains it: output as free."""
    grammar = build(ResponseFormat(type="json_object"), Format.THINK, thinks=True)
    free = collect(submit(engine, model, "abc def")[1])[0]
    lazy = collect(submit(engine, model, "abc def", grammar=grammar)[1])[0]
    assert "</think>" not in free and lazy == free


def pieces(q: queue.Queue) -> list[str]:
    out = []
    while not isinstance(event := q.get(timeout=30), Finished | Failed):
        out.append(event.text)
    assert isinstance(event, Finished), event
    return out


def test_thinking_budget_writes_the_close_and_the_grammar_goes_on(engine: Engine, model: Model) -> None:
    """The random model never closes its thinking; with a budget of 5 the engine writes </think> after 5 tokens,
    and the lazy JSON grammar, which waits for it, then holds the answer."""
    budget = ThinkBudget(5, "<think>", "</think>", inside=True)
    free = pieces(submit(engine, model, "abc def")[1])
    grammar = build(ResponseFormat(type="json_object"), Format.THINK, thinks=True)
    out = pieces(submit(engine, model, "abc def", max_tokens=64, grammar=grammar, think_budget=budget)[1])
    text = "".join(out)
    thought, answer = text.split("</think>", 1)
    assert thought == "".join(free[:5])
    assert answer.lstrip().startswith("{")


def test_a_close_the_grammar_refuses_is_not_written(engine: Engine, model: Model) -> None:
    """llama.cpp aborts the process on a token its grammar refuses: the engine samples instead of forcing it."""
    grammar = build(ResponseFormat(type="json_object"), Format.THINK, thinks=False)
    plain = collect(submit(engine, model, "hello", max_tokens=48, grammar=grammar)[1])
    budget = ThinkBudget(0, "<think>", "</think>", inside=True)
    forced = collect(submit(engine, model, "hello", max_tokens=48, grammar=grammar, think_budget=budget)[1])
    assert forced[0] == plain[0] and forced[1].reason == plain[1].reason


def test_many_threads_submitting(engine: Engine, model: Model) -> None:
    results: dict[int, str] = {}

    def worker(i: int) -> None:
        results[i] = collect(submit(engine, model, PROMPTS[i % len(PROMPTS)], max_tokens=8)[1])[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    solo = {p: collect(submit(engine, model, p, max_tokens=8)[1])[0] for p in PROMPTS}
    assert all(results[i] == solo[PROMPTS[i % len(PROMPTS)]] for i in range(12))


def test_schema_property_named_like_our_rule_is_fine() -> None:
    """The converter names rules after properties; wrapping the answer must not collide with them."""
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "root": {"type": "integer"}}}
    rf = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    grammar = build(rf, Format.THINK, thinks=True)
    assert grammar is not None and grammar.triggers
    definitions = [line.split(" ::=")[0] for line in grammar.text.splitlines() if " ::=" in line]
    assert len(definitions) == len(set(definitions))


@pytest.mark.parametrize("kv_type", ["q8_0", "q4_0"])
def test_quantized_kv_cache(kv_type: str) -> None:
    """Quantized KV blocks are 32 wide, so this model has 32-wide heads; flash attention is switched on."""
    model = Model(build_tiny_gguf(n_embd=128))
    e = Engine(model, n_seq=2, ctx_per_seq=256, threads=1, kv_type=kv_type)
    e.start()
    try:
        text, fin = collect(submit(e, model, "hello", max_tokens=8)[1])
        assert fin.completion_tokens == 8 and text
    finally:
        e.stop()
        model.close()


def repeats(q: queue.Queue, timeout: float = 30) -> tuple[int, Finished | Failed]:
    """How many whole-character pieces repeat an earlier one (byte fragments all read as U+FFFD: not counted)."""
    seen: list[str] = []
    while True:
        event = q.get(timeout=timeout)
        if not isinstance(event, Piece):
            whole = [t for t in seen if t and "\ufffd" not in t]
            return len(whole) - len(set(whole)), event
        seen.append(event.text)


@pytest.mark.parametrize("penalty", [{"repeat_penalty": 50.0}, {"presence_penalty": 50.0}, {"frequency_penalty": 50.0}])
def test_penalties_stop_repeats_and_keep_the_engine_up(engine: Engine, model: Model, penalty: dict) -> None:
    plain, _ = repeats(submit(engine, model, "zzz", max_tokens=48)[1])
    assert plain > 0  # greedy on a random model repeats itself: something to penalise
    penalised, fin = repeats(submit(engine, model, "zzz", max_tokens=48, **penalty)[1])
    assert isinstance(fin, Finished) and fin.completion_tokens == 48
    assert penalised == 0
    assert engine.alive


def test_a_step_is_one_run_of_sequence_ids(model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp splits a batch wherever the sequence ids stop running 0, 1, 2, ... (one more pass over the
    weights each time): a step lists its sequences in order, and a finished one in the middle leaves a filler.
    Outputs still equal solo ones."""
    import serve.engine.engine as engine_module

    runs: list[list[int]] = []
    real = engine_module.ll.llama_decode

    def decode(ctx, batch):
        ids = [batch.seq_id[i][0] for i in range(batch.n_tokens)]
        runs.append([s for k, s in enumerate(ids) if k == 0 or s != ids[k - 1]])
        return real(ctx, batch)

    e = Engine(model, n_seq=4, ctx_per_seq=512, prompt_chunk=32, threads=2)
    e.start()
    try:
        solo = [collect(submit(e, model, p, max_tokens=30)[1])[0] for p in PROMPTS[:3]]
        monkeypatch.setattr(engine_module.ll, "llama_decode", decode)
        queues = [submit(e, model, p, max_tokens=n)[1] for p, n in zip(PROMPTS[:3], (30, 3, 30), strict=True)]
        together = [collect(q)[0] for q in queues]
    finally:
        e.stop()
    assert together[0] == solo[0] and together[2] == solo[2] and solo[1].startswith(together[1])
    assert all(run == list(range(run[0], run[0] + len(run))) for run in runs), runs
    assert [0, 1, 2] in runs[-10:]  # sequence 1 ended after 3 tokens: a filler holds its place


def test_stop_ends_running_and_waiting_jobs_cleanly(model: Model) -> None:
    """At shutdown a running job ends with `shutdown` (a stream gets its finish and [DONE], a whole answer becomes a
    503); one still waiting for a sequence, and one submitted after the stop, fail as shutting down (503, retried
    elsewhere)."""
    e = Engine(model, n_seq=1, ctx_per_seq=4096, threads=2)
    e.start()
    try:
        _, running = submit(e, model, "hello there", max_tokens=4000)
        assert isinstance(running.get(timeout=30), Piece)  # decoding
        _, waiting = submit(e, model, "abc def", max_tokens=10)
    finally:
        e.stop()
    _, ended = collect(running)
    assert isinstance(ended, Finished) and ended.reason == "shutdown" and ended.completion_tokens < 4000
    _, ended = collect(waiting)
    assert isinstance(ended, Failed) and ended.shutting_down
    _, late = submit(e, model, "zzz")
    failed = late.get(timeout=5)
    assert isinstance(failed, Failed) and failed.shutting_down


def test_requests_arriving_together_start_in_one_step(model: Model) -> None:
    """From idle, while more requests are on their way (serve/arrivals.py), the first step waits for them: two
    jobs submitted 50 ms apart get their first tokens in the same step. Without arrivals a lone job starts at once."""
    arriving = [1]
    steps: list[set[int]] = []  # per dispatch (one a step): which jobs got a token

    def dispatch(events: list[tuple[Job, object]]) -> None:
        steps.append({id(job) for job, e in events if isinstance(e, Piece)})
        for job, e in events:
            job.emit(e)  # type: ignore[arg-type]

    engine = Engine(
        model, n_seq=4, ctx_per_seq=256, threads=2, dispatch=dispatch, arriving=lambda: arriving[0], gather=5.0
    )
    engine.start()
    try:
        a, qa = submit(engine, model, "hello there", max_tokens=3)
        time.sleep(0.05)
        b, qb = submit(engine, model, "abc def", max_tokens=3)
        arriving[0] = 0  # the second request is admitted: nothing else is on its way
        collect(qa), collect(qb)
        first = next(s for s in steps if s)
        assert first == {id(a), id(b)}

        t0 = time.perf_counter()
        collect(submit(engine, model, "zzz", max_tokens=2)[1])
        assert time.perf_counter() - t0 < 2.0  # far under the 5 s window: nothing was arriving
    finally:
        engine.stop()


# A JSON string of 1-4 characters, as llama.cpp's grammar counts them: it decodes bytes laxly, so overlongs,
# surrogates and leads past U+10FFFF count as one character each (serve/engine/utf8.py).
SHORT_STRING = Grammar(r'root ::= "\"" [^"\\\x00-\x1f]{1,4} "\""')
UTF8_RUNS = [(prompt, seed) for prompt in PROMPTS for seed in (None, 1, 2, 3)]


def raw_run(engine: Engine, model: Model, prompt: str, seed: int | None, **params: object) -> list[Piece]:
    sampling = {"temperature": 1.0, "seed": seed} if seed is not None else {}
    q = submit(engine, model, prompt, max_tokens=20, logprobs=5, **sampling, **params)[1]
    out = []
    while isinstance(event := q.get(timeout=30), Piece):
        out.append(event)
    assert isinstance(event, Finished), event
    return out


def strict(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_grammar_held_text_is_valid_utf8(engine: Engine, model: Model) -> None:
    """The tiny model's byte tokens are random: free, it emits bytes that are not UTF-8 (the check that this test
    bites), and llama.cpp's lax grammar lets them into the string. Held, every answer's bytes decode strictly
    (Python's decoder) to the text the engine sent, a JSON string as long as the grammar allows."""
    free = [b"".join(p.logprob.token for p in raw_run(engine, model, *run) if p.logprob) for run in UTF8_RUNS]
    assert sum(strict(data) is None for data in free) >= 4
    for run in UTF8_RUNS:
        pieces = raw_run(engine, model, *run, grammar=SHORT_STRING)
        data = b"".join(p.logprob.token for p in pieces if p.logprob)
        text = strict(data)
        assert text is not None, (run, data.hex(" "))
        assert text == "".join(p.text for p in pieces)
        assert 1 <= len(json.loads(text)) <= 4, (run, text)


def test_refused_tokens_keep_their_logprobs(engine: Engine, model: Model) -> None:
    """The refusal is undone after sampling: the reported alternatives are the model's, tokens refused at that
    step included (their log-probabilities finite), as without a grammar."""
    masks = model.utf8_masks()
    pieces_of = {model.piece(t): t for t in range(model.n_vocab)}
    seen_refused = 0
    for run in UTF8_RUNS:
        state = CLEAN
        for piece in raw_run(engine, model, *run, grammar=SHORT_STRING):
            assert piece.logprob is not None
            for token, logprob in piece.logprob.top:
                assert math.isfinite(logprob)
                seen_refused += int(masks.next[state, pieces_of[token]] == ERROR)
            state = utf8.advance(state, piece.logprob.token)
    assert seen_refused >= 10
    first = [raw_run(engine, model, p, None, **g)[0].logprob for p in PROMPTS for g in ({}, {"grammar": SHORT_STRING})]
    for free_lp, held_lp in zip(first[::2], first[1::2], strict=True):  # (a cached prompt's step differs in ulps)
        assert free_lp is not None and held_lp is not None
        assert [t for t, _ in free_lp.top] == [t for t, _ in held_lp.top]
        assert [v for _, v in free_lp.top] == pytest.approx([v for _, v in held_lp.top], abs=1e-4)


def test_a_grammar_that_only_takes_invalid_utf8_still_runs(engine: Engine, model: Model) -> None:
    """A grammar may leave no valid way on inside a character (here it takes only a surrogate: its lead byte ED is
    a valid start, but only ED 80-9F goes on validly). With every token refused llama.cpp's sampler would pick one
    its grammar refused (NUL bytes to the end), so the engine then leaves the step alone: the grammar's bytes."""
    surrogate = Grammar(r'root ::= "\"" [\uD800-\uDFFF] "\""')
    for run in UTF8_RUNS[:4]:
        data = b"".join(p.logprob.token for p in raw_run(engine, model, *run, grammar=surrogate) if p.logprob)
        assert data[:2] == b'"\xed' and 0xA0 <= data[2] <= 0xBF and data[4:] == b'"', data.hex(" ")


def test_a_message_end_goes_on_as_text(engine: Engine, model: Model) -> None:
    """A family whose thinking ends at an end-of-generation token (Solar Open's `<|end|>`, Muse Glimmer's `<|eom|>`):
    the job names it, and the turn goes on past it with the token's text for the channel parser; without that the
    token ends the generation there, its text never shown. The tiny model's `<|im_end|>` (EOG, control) stands for
    it, written by a spent thinking budget."""
    budget = ThinkBudget(2, "<think>", "<|im_end|>", inside=True)
    params = SamplingParams(max_tokens=8, temperature=0.0, think_budget=budget)
    prompt = model.tokenize("abc def", False)
    results = []
    for goes_on in (False, True):
        q: queue.Queue = queue.Queue()
        end = "<|im_end|>" if goes_on else ""
        job = Job(prompt, params, q.put, continue_on=end, keep=frozenset({end} - {""}))
        engine.submit(job)
        results.append(collect(q))
    (ended, ended_by), (went_on, finished) = results
    assert isinstance(ended_by, Finished) and ended_by.reason == "stop" and ended_by.completion_tokens == 2
    assert "<|im_end|>" not in ended
    assert isinstance(finished, Finished) and finished.reason == "length"
    thought, rest = went_on.split("<|im_end|>", 1)
    assert thought == ended and rest


def test_two_stops_at_once_free_the_context_once(model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server's shutdown and a test's teardown (or a signal) may stop the engine from two threads at once: the
    context is freed once. llama_free is wrapped to linger before freeing, so a second stop that did not wait for
    the first would reach the frees with the same context and batch (without the engine's lock the process aborts
    there, in llama_batch_free: the crash CI's vision tests once met)."""
    import serve.engine.engine as engine_module

    real = engine_module.ll.llama_free
    freed: list[object] = []

    def lingering_free(ctx: object) -> None:
        freed.append(ctx)
        time.sleep(0.3)  # the other stop's window
        if len(freed) == 1:
            real(ctx)

    e = Engine(model, n_seq=1, ctx_per_seq=256, threads=1)
    e.start()
    monkeypatch.setattr(engine_module.ll, "llama_free", lingering_free)
    stops = [threading.Thread(target=e.stop) for _ in range(2)]
    for t in stops:
        t.start()
    for t in stops:
        t.join(30)
    assert not any(t.is_alive() for t in stops)
    assert len(freed) == 1 and e.ctx is None

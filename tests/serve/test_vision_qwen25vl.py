"""A Qwen2.5-VL model (M-RoPE) served with its projector, through the official `openai` SDK.

The model is testkit.fixtures.qwen25vl's tiny Qwen2_5_VLForConditionalGeneration (random weights). The oracle is
llama.cpp driven directly, as tests/convert/test_qwen25vl_vision.py checks it against transformers: the prompt that
transformers' chat template renders, the image's embeddings at their (t, row, column) positions, the text after it
n_pos - n_tokens positions behind its index, then greedy tokens one at a time. The server must give the same
answer: alone, beside another image request in the same steps, and again with its cached cells (which, under
M-RoPE, it reuses only up to the first image)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from convert import convert_checkpoint
from testkit.fixtures.qwen25vl import HEIGHT, WIDTH, build_qwen25vl
from testkit.images import png
from testkit.servers import running_server
from tests.serve.test_vision import ask, client, data_url

pytestmark = pytest.mark.slow
ARGS = ("--ctx-size", "512", "--max-images", "2", "--cache-disk", "0")
MAX_TOKENS = 8
TEXT = "What is in this picture?"


def _raw(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = build_qwen25vl()
    return convert_checkpoint(src, tmp_path_factory.mktemp("q25v") / "q25v.gguf", "f32", progress=False)


@pytest.fixture(scope="module")
def server(gguf: Path) -> Iterator[str]:
    with running_server("--model-path", str(gguf), "--model-name", "q25v", *ARGS) as url:
        yield url


@pytest.fixture(scope="module")
def loaded(gguf: Path):
    from tests.convert.vision_checks import loaded as load  # it imports torch: only when this fixture is used

    with load(gguf) as pair:
        yield pair


def rendered(content: str) -> str:
    """The prompt transformers' chat template renders for one user message (the server's image marker in it)."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(build_qwen25vl())
    messages = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.fixture(scope="module")
def direct(loaded):
    """greedy(text_content, images) -> the answer llama.cpp gives with positions placed by this test."""
    from serve.engine.vision import MARKER

    model, proj = loaded

    def greedy(content: str, images: list[bytes]) -> Answer:
        prompt = rendered(content)
        assert prompt.count(MARKER) == len(images)
        return _greedy(model, proj, prompt, images)

    return greedy


@dataclass(frozen=True)
class Answer:
    tokens: list[bytes]  # the greedy answer's tokens, as bytes
    logprobs: list[float]  # each one's log-probability
    n_prompt: int  # the prompt's token count
    image_start: int  # where its first image starts (the count when none)


def _greedy(model, proj, prompt: str, images: list[bytes]) -> Answer:
    import llama_cpp as ll

    from serve.engine.context import new_context
    from serve.engine.vision import decode_embeddings

    tok = proj.tokenize(prompt, images)
    ctx = new_context(model.ptr, n_ctx=512, n_batch=256, n_seq_max=1, kv_unified=True, threads=2,
                      flash_attn=False, kv_type="f16", what="a test context")  # fmt: skip

    def text(ids: list[int], pos0: int) -> np.ndarray:
        batch = ll.llama_batch_init(len(ids), 0, 1)
        try:
            for i, t in enumerate(ids):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, pos0 + i, 1, i == len(ids) - 1
                batch.seq_id[i][0] = 0
            batch.n_tokens = len(ids)
            assert ll.llama_decode(ctx, batch) == 0
            return np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, len(ids) - 1), shape=(model.n_vocab,)).copy()
        finally:
            ll.llama_batch_free(batch)

    try:
        index, shift = 0, 0
        for span in tok.images:
            if span.start > index:
                text(tok.ids[index : span.start], index + shift)
            embd = proj.encode(span)
            decode_embeddings(ctx, embd, span.start + shift, 0, non_causal=proj.non_causal, mrope=span.mrope)
            index, shift = span.end, shift + span.n_pos - span.n_tokens
        logits = text(tok.ids[index:], index + shift)
        pos = len(tok.ids) + shift
        out: list[int] = []
        logprobs: list[float] = []
        while len(out) < MAX_TOKENS:
            token = int(logits.argmax())
            if model.is_eog(token):
                break
            out.append(token)
            top = logits.max()
            logprobs.append(float(logits[token] - top - np.log(np.exp(logits - top).sum())))
            logits = text([token], pos)
            pos += 1
    finally:
        ll.llama_free(ctx)
    start = tok.images[0].start if tok.images else len(tok.ids)
    return Answer([model.piece(t) for t in out], logprobs, len(tok.ids), start)


def chat(url: str, messages: list[dict]):
    return client(url).chat.completions.create(
        model="q25v", messages=messages, max_tokens=MAX_TOKENS, temperature=0, logprobs=True
    )


def tokens(reply) -> list[bytes]:
    """The answer's tokens, as bytes (logprobs.content[].bytes: the content itself drops control tokens)."""
    return [bytes(t.bytes or []) for t in reply.choices[0].logprobs.content]


def test_an_answer_with_an_image_is_llama_cpps_with_m_rope_positions(server: str, direct) -> None:
    from serve.engine.vision import MARKER

    picture = png(WIDTH, HEIGHT, _raw(1))
    want = direct(TEXT + MARKER, [picture])
    got = chat(server, ask(data_url(picture), text=TEXT))
    assert got.usage and got.usage.prompt_tokens == want.n_prompt
    assert tokens(got) == want.tokens
    assert tokens(chat(server, ask(text=TEXT))) == direct(TEXT, []).tokens  # text alone, after an image


def test_two_images_and_a_neighbour_in_the_same_steps(server: str, direct) -> None:
    from serve.engine.vision import MARKER

    a, b = png(WIDTH, HEIGHT, _raw(2)), png(WIDTH, HEIGHT, _raw(3))
    want_two = direct(TEXT + MARKER + MARKER, [a, b]).tokens
    want_one = direct(TEXT + MARKER, [b]).tokens
    with ThreadPoolExecutor(2) as pool:
        two = pool.submit(chat, server, ask(data_url(a), data_url(b), text=TEXT))
        one = pool.submit(chat, server, ask(data_url(b), text=TEXT))
        assert tokens(two.result()) == want_two
        assert tokens(one.result()) == want_one


def test_the_cache_is_reused_up_to_the_image_and_answers_the_same(server: str, direct) -> None:
    from serve.engine.vision import MARKER

    picture = png(WIDTH, HEIGHT, _raw(4))
    want = direct(TEXT + MARKER, [picture])
    first = chat(server, ask(data_url(picture), text=TEXT))
    again = chat(server, ask(data_url(picture), text=TEXT))
    assert tokens(first) == tokens(again) == want.tokens
    assert again.usage and again.usage.prompt_tokens_details
    # reuse stops at the image (after it, positions differ from the cells' indexes): the text before it
    assert again.usage.prompt_tokens_details.cached_tokens == want.image_start


def test_an_image_entering_a_prompt_chunk_a_step_keeps_its_grid(loaded, direct, monkeypatch) -> None:
    """Qwen2.5-VL attends within an image causally, so the engine takes it a prompt chunk a step: each chunk's
    embeddings at their own rows and columns of the grid (24 image tokens in chunks of 16 and 8), the same answer."""
    from serve.engine.engine import Engine, Finished, Job, SamplingParams
    from serve.engine.vision import MARKER
    from tests.serve.test_vision_engine import Stream, embedding_rows

    model, proj = loaded
    assert not proj.non_causal
    rows = embedding_rows(monkeypatch)
    picture = png(WIDTH, HEIGHT, _raw(5))
    want = direct(TEXT + MARKER, [picture])
    prompt = proj.tokenize(rendered(TEXT + MARKER), [picture])
    e = Engine(model, n_seq=2, ctx_per_seq=256, prompt_chunk=16, threads=1, projector=proj)
    e.start()
    try:
        stream = Stream()
        params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, logprobs=0)
        e.submit(Job(prompt.ids, params, stream.emit, images=prompt.images))
        stream.wait()
    finally:
        e.stop()
    assert isinstance(stream.end, Finished) and rows == [16, 8]
    got = [p.logprob for p in stream.pieces if p.logprob is not None]
    assert [g.token for g in got] == want.tokens
    # and the same distribution, to float noise (a grid row out of place moves these by far more)
    assert np.allclose([g.logprob for g in got], want.logprobs, atol=1e-3)

"""Images encode on their own thread (serve/engine/encoder.py) while the engine goes on stepping other sequences.

The tiny Gemma 3 vision fixture, converted, on the real engine and projector. The projector here holds each encode
at a gate until the test opens it (the real mtmd encode then runs): a text stream that keeps producing tokens while
the gate is shut proves the engine does not wait for the vision tower, with counts, not timings. A client that
leaves mid-encode and a shutdown mid-encode end their jobs without waiting for the image."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from convert import convert_checkpoint
from hearth_common.paths import mmproj_path
from serve.engine.engine import Engine, Failed, Finished, Job, Model, Piece, SamplingParams
from serve.engine.vision import MARKER, ImageSpan, Projector, Tokenized
from testkit.fixtures.vision import build_gemma3_vision
from testkit.images import png

pytestmark = pytest.mark.slow
WAIT = 60.0  # seconds before a test gives up on an event that never comes (a hang, not a measure)
GENERATE = 48  # text stream tokens asked for; 8 of them must come while an image is held


class GatedProjector(Projector):
    """The real projector, whose encode waits at `gate` and counts the encodes begun and the stream's tokens then."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.began = 0

    def hold(self) -> None:
        """Encodes from now on wait at the gate."""
        self.entered = threading.Semaphore(0)
        self.gate.clear()

    def held(self) -> bool:
        """An encode begun since `hold` waits at the gate."""
        return self.entered.acquire(timeout=WAIT)

    def encode(self, span: ImageSpan) -> np.ndarray:
        self.began += 1
        self.entered.release()
        if not self.gate.wait(WAIT):
            raise AssertionError("the gate was never opened")
        return super().encode(span)


def embedding_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The engine's image embeddings still decoded as before, the row count of each decode call noted in the list
    returned (how an image was split across prompt chunks)."""
    import serve.engine.engine as engine_module

    rows: list[int] = []
    real = engine_module.decode_embeddings

    def counted(ctx: object, embd: np.ndarray, *args: object, **kw: object) -> None:
        rows.append(len(embd))
        real(ctx, embd, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_module, "decode_embeddings", counted)
    return rows


class Stream:
    """A job's events as they arrive, with a wait for the n-th token."""

    def __init__(self, first: Callable[[], None] | None = None) -> None:
        self.first = first  # called (on the engine's thread) as the first piece arrives
        self.pieces: list[Piece] = []
        self.end: Finished | Failed | None = None
        self.changed = threading.Condition()

    def emit(self, event: object) -> None:
        with self.changed:
            if isinstance(event, Piece):
                self.pieces.append(event)
                if self.first is not None and len(self.pieces) == 1:
                    self.first()
            else:
                assert isinstance(event, Finished | Failed)
                self.end = event
            self.changed.notify_all()

    def wait(self, tokens: int = 0) -> None:
        """Until `tokens` pieces came, or the end when 0."""
        with self.changed:
            done = self.changed.wait_for(lambda: len(self.pieces) >= tokens if tokens else self.end is not None, WAIT)
        assert done, (tokens, len(self.pieces), self.end)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pieces)


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_checkpoint(build_gemma3_vision(), tmp_path_factory.mktemp("ve") / "g3v.gguf", "f32", progress=False)


@pytest.fixture(scope="module")
def model(gguf: Path) -> Iterator[Model]:
    m = Model(gguf)
    yield m
    m.close()


@pytest.fixture
def projector(gguf: Path, model: Model) -> Iterator[GatedProjector]:
    p = GatedProjector(mmproj_path(gguf), model.ptr, 1)
    yield p
    p.gate.set()
    p.close()


@pytest.fixture
def engine(model: Model, projector: GatedProjector) -> Iterator[Engine]:
    e = Engine(model, n_seq=4, ctx_per_seq=256, prompt_chunk=32, threads=1, projector=projector, min_batch=4)
    e.start()
    yield e
    projector.gate.set()
    e.stop()


def submit(engine: Engine, prompt: Tokenized, max_tokens: int, cache: bool = True) -> tuple[Job, Stream]:
    stream = Stream()
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, cache_prompt=cache)
    job = Job(prompt.ids, params, stream.emit, images=prompt.images)
    engine.submit(job)
    return job, stream


def text(model: Model, words: str) -> Tokenized:
    return Tokenized(model.tokenize(f"<start_of_turn>user\n{words}<end_of_turn>\n<start_of_turn>model\n", True), ())


def image(projector: Projector, rgb: tuple[int, int, int]) -> Tokenized:
    prompt = f"<start_of_turn>user\nWhat colour is this? {MARKER}<end_of_turn>\n<start_of_turn>model\n"
    return projector.tokenize(prompt, [png(16, 16, rgb)])


def long_text(engine: Engine, model: Model) -> Tokenized:
    """A prompt whose greedy answer runs to GENERATE tokens (the random model stops early on some)."""
    for words in ("one two three", "the quick brown fox", "hello there", "zzz", "Paris is", "1 2 3 4"):
        prompt = text(model, words)
        _, stream = submit(engine, prompt, GENERATE)
        stream.wait()
        assert isinstance(stream.end, Finished)
        if stream.end.reason == "length":
            return prompt
    pytest.fail("no prompt runs to max_tokens")


def test_a_text_stream_goes_on_while_an_image_encodes(engine: Engine, model: Model, projector: GatedProjector) -> None:
    prompt = long_text(engine, model)
    _, alone = submit(engine, image(projector, (200, 30, 30)), 8)  # the image's answer with nothing beside it
    alone.wait()
    # The image is held mid-encode before the stream starts, so every token of the stream comes while it encodes:
    # counted, with no window for a loaded machine to race through (a stream started first once ran to its end
    # between its 2nd token and the hold on CI).
    projector.hold()
    _, pictured = submit(engine, image(projector, (200, 30, 30)), 8, cache=False)  # encoded again, not reused
    assert projector.held()
    _, stream = submit(engine, prompt, GENERATE)
    stream.wait(tokens=8)
    assert pictured.end is None and not pictured.pieces  # the image's request waits for its embeddings
    projector.gate.set()
    pictured.wait()
    stream.wait()
    assert isinstance(stream.end, Finished) and stream.end.reason == "length"
    assert pictured.text == alone.text  # encoded beside the stream, the same answer
    assert isinstance(pictured.end, Finished) and isinstance(alone.end, Finished)
    assert pictured.end.completion_tokens == alone.end.completion_tokens


def test_the_encoder_thread_yields_the_cpu_to_decoding(engine: Engine, model: Model, projector: GatedProjector) -> None:
    """The vision tower's thread runs niced (and the ggml workers it starts inherit it): on CPU, the running
    streams' decode comes first (bench/vision.py: 0.88-0.92 of their rate beside image requests, 0.41 without)."""
    import os
    import threading

    from serve.engine.encoder import ENCODER_NICE

    _, alone = submit(engine, image(projector, (30, 200, 30)), 4)  # the encoder thread has started
    alone.wait()
    encoder = next(t for t in threading.enumerate() if t.name == "image-encoder")
    assert encoder.native_id is not None
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert os.getpriority(os.PRIO_PROCESS, encoder.native_id) == min(own + ENCODER_NICE, 19)


def test_a_client_that_leaves_mid_encode(engine: Engine, model: Model, projector: GatedProjector) -> None:
    projector.hold()
    first, left = submit(engine, image(projector, (20, 200, 20)), 4)
    assert projector.held()
    second, queued = submit(engine, image(projector, (20, 20, 200)), 4)  # its encode waits behind the first
    engine.cancel(first)
    engine.cancel(second)
    left.wait()
    queued.wait()
    assert isinstance(left.end, Finished) and left.end.reason == "cancelled"  # while its image still encodes
    assert isinstance(queued.end, Finished) and queued.end.reason == "cancelled"
    projector.gate.set()
    _, after = submit(engine, image(projector, (20, 200, 20)), 4)
    after.wait()
    assert isinstance(after.end, Finished) and after.end.reason in ("length", "stop")
    assert projector.began == 2  # the cancelled job's queued image was never encoded


def test_a_shutdown_mid_encode(engine: Engine, model: Model, projector: GatedProjector) -> None:
    projector.hold()
    _, pictured = submit(engine, image(projector, (90, 90, 90)), 4)
    assert projector.held()
    stopping = threading.Thread(target=engine.stop)
    stream = Stream(first=stopping.start)  # the stop comes at the stream's first token, long before its 200th
    engine.submit(Job(text(model, "hello there").ids, SamplingParams(max_tokens=200, temperature=0.0), stream.emit))
    pictured.wait()
    stream.wait()
    assert isinstance(pictured.end, Finished) and pictured.end.reason == "shutdown"
    assert isinstance(stream.end, Finished) and stream.end.reason in ("shutdown", "stop")
    assert engine.encoding  # the image under way keeps the projector in use until it ends
    projector.gate.set()
    stopping.join(WAIT)
    assert not stopping.is_alive() and not engine.encoding
    refused: queue.Queue = queue.Queue()
    engine.submit(Job([1, 2], SamplingParams(max_tokens=1), refused.put))
    assert isinstance(refused.get(timeout=WAIT), Failed)


def test_a_causal_image_enters_a_prompt_chunk_a_step(
    model: Model, projector: GatedProjector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that attends within an image causally takes it a prompt chunk a step (here 2 of its 4 rows), with
    the answer it gets when the image enters whole. The fixture is Gemma 3 (both ways), told otherwise here."""
    rows = embedding_rows(monkeypatch)
    projector.non_causal = False
    answers = []
    for chunk in (32, 2):
        e = Engine(model, n_seq=4, ctx_per_seq=256, prompt_chunk=chunk, threads=1, projector=projector, min_batch=4)
        e.start()
        try:
            rows.clear()
            _, stream = submit(e, image(projector, (40, 140, 240)), 8)
            stream.wait()
            assert isinstance(stream.end, Finished)
            answers.append((stream.text, stream.end.completion_tokens, list(rows)))
        finally:
            e.stop()
    (whole, n_whole, rows_whole), (chunked, n_chunked, rows_chunked) = answers
    assert rows_whole == [4] and rows_chunked == [2, 2]
    assert (chunked, n_chunked) == (whole, n_whole)

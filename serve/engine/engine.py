"""The one thread that owns llama.cpp: continuous batching over sequences of one context.

Each step decodes, in a single llama_decode batch, the next token of every running sequence plus a chunk of
one waiting prompt, then samples each sequence with its own sampler chain.

Every sequence has its own KV stream (kv_unified off), and llama.cpp then cuts a batch into micro-batches of
consecutive, increasing sequence ids only: each break in that run costs a whole extra pass over the weights
(figures in bench/RESULTS.md). So the batch lists sequences by id, a new job takes the lowest free id, and an id
missing between running ones gets a filler token (no logits, removed after the step): far cheaper than a pass.

Jobs join between steps and leave when they finish or are cancelled (checked at every step).

Prompt cache: a finished sequence keeps its KV cells, tagged with the token ids they hold (serve/engine/prompt_cache.py). A
new job takes the free sequence sharing the longest prefix with its prompt, drops the cells from the first
differing position (llama_memory_seq_rm(seq, p, -1)) and decodes only the rest, always at least the last prompt
token (its logits are sampled; two for a seeded sample, see prompt_cache.DECODED_EXACT). Before a sequence's cells
are overwritten, its state is saved to a host-RAM cache (llama_state_seq_get_data), where a later prompt can find it by longest prefix and restore it into any sequence.
A filler token sits right after its sequence's cached cells and is removed after the step, so it costs no cache.
Requests talk to the thread through `Job.emit` (thread-safe, usually an asyncio queue) and the `cancelled` flag:
no locks around llama.cpp, and the HTTP side never waits on it. A step's events are handed over together, right
before the next llama_decode (see `_flush`).
"""

from __future__ import annotations

import bisect
import codecs
import ctypes
import functools
import logging
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp as ll
import numpy as np

from serve.engine import gil_held
from serve.engine.budget import BudgetTracker, ThinkBudget
from serve.engine.context import EngineError, new_context
from serve.engine.disk_cache import DiskCache, Spiller
from serve.engine.encoder import Encoding, ImageEncoder
from serve.engine.grammar import Grammar
from serve.engine.jobthread import JobThread
from serve.engine.prompt_cache import (
    DECODED,
    DECODED_EXACT,
    EMPTY,
    Entry,
    HostCache,
    SeqState,
    before_images,
    pick_sequence,
    usable,
)
from serve.engine.stops import StopFilter
from serve.engine.utf8 import CLEAN, ERROR, VocabMasks, state_of
from serve.engine.vision import ImageSpan, Projector, decode_embeddings

log = logging.getLogger("serve.engine")

HARMONY_MARKERS = {"<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|constrain|>", "<think>", "</think>"}
# Control tokens of the tool-call formats (serve/chat/tools/), kept as text for their parsers.
TOOL_MARKERS = {"<tool_call>", "</tool_call>", "<|tool_call|>", "<|python_tag|>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"}
KEPT_MARKERS = frozenset(HARMONY_MARKERS | TOOL_MARKERS)


def _kept(text: str, keep: frozenset[str]) -> bool:
    """A control token whose text a parser reads (the rest are dropped)."""
    return text in KEPT_MARKERS or text in keep


# Spilling host RAM's evictions to disk: at most this many bytes wait for the writer, and a restore must measure
# this many times faster than decoding the same tokens (it also pays llama_state_seq_set_data and a checksum).
SPILL_PENDING_MAX = 256 << 20
SPILL_MARGIN = 2.0
PROMPT_RATE_MIN_TOKENS = 32  # a step decoding fewer prompt tokens says little about the prompt speed
HOLD_GIL_MAX = 16 * 1024  # bytes of text tokenized without releasing the GIL (a millisecond or so)
GGML_LOG_LEVEL_ERROR = 4  # ggml.h; the binding does not export it


GRAMMAR_PROBE = 64  # tokens first checked against the grammar inside a character (serve/engine/utf8.py)
CHECKED_GRAMMARS = 64  # grammars check_grammar remembers as accepted
LOG_LINE_MAX = 500  # characters of one llama.cpp error kept (a refused grammar is printed whole: megabytes)


@ll.llama_log_callback
def _llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp is chatty at load time; keep its errors only.
    if level == GGML_LOG_LEVEL_ERROR:
        line = text.decode("utf-8", "replace").rstrip()
        log.error("llama.cpp: %s", line if len(line) <= LOG_LINE_MAX else line[:LOG_LINE_MAX] + " [...]")


def restore_log() -> None:
    """llama.cpp's log back to the engine's handler (after a caller captured it for a while: llama.cpp keeps the
    callback's address, so a caller's callback must not outlive it there)."""
    ll.llama_log_set(_llama_log, ctypes.c_void_p())


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stops: tuple[str, ...] = ()
    grammar: Grammar | None = None
    cache_prompt: bool = True  # reuse cached KV cells of an earlier prompt sharing a prefix
    logprobs: int | None = None  # report each token's log-probability and this many top alternatives
    think_budget: ThinkBudget | None = None  # force the thinking's end after this many thinking tokens


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the model (log-softmax of the raw logits, as OpenAI reports
    it, whatever the sampling settings), with the most likely alternatives at that step."""

    token: bytes  # the token's text as bytes (a UTF-8 character may span tokens)
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


# Events a job receives, in order: Piece*, then exactly one of Finished / Failed.
@dataclass(frozen=True)
class Piece:
    text: str  # may be empty (a token held back as part of a possible stop string or a split UTF-8 char)
    logprob: TokenLogprob | None = None  # when the job asked for logprobs


@dataclass(frozen=True)
class Finished:
    reason: str  # stop, length, cancelled, shutdown (the server stopped while it ran: the text is cut)
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV cells came from the cache (not decoded)
    stop_sequence: str | None = None  # the request's stop string that ended generation, if one did


@dataclass(frozen=True)
class Failed:
    message: str
    shutting_down: bool = False  # ended by the server's stop before it produced anything: the client may retry


SHUTTING_DOWN = Failed("the server is shutting down", shutting_down=True)


Event = Piece | Finished | Failed


@dataclass(eq=False)
class Job:
    prompt: list[int]
    params: SamplingParams
    emit: Callable[[Event], None]
    # an end-of-generation token that closes a message, not the turn (harmony's and Solar Open's `<|end|>` after
    # the thinking, Muse Glimmer's `<|eom|>`): generation goes on past it, as text for the channel parser
    continue_on: str = ""
    keep: frozenset[str] = frozenset()  # control tokens of the model's format kept as text (besides KEPT_MARKERS)
    deliver: Callable[[Event], None] | None = None  # `emit` on the request's own thread (for a batched dispatch)
    # images at their positions of `prompt` (which holds their pseudo-token ids: serve/engine/vision.py)
    images: tuple[ImageSpan, ...] = ()
    cancelled: bool = False
    created: float = field(default_factory=time.perf_counter)

    def shut_down(self) -> None:
        """Ends a job still waiting when the server stops: nothing was generated, so the client may retry it
        elsewhere (a whole response becomes 503 with Retry-After)."""
        self.emit(SHUTTING_DOWN)


def _emit_each(events: list[tuple[Job, Event]]) -> None:
    for job, event in events:
        job.emit(event)


class Model:
    """The loaded weights and vocabulary; read-only after loading, so tokenizing is safe from any thread."""

    def __init__(self, path: Path, n_gpu_layers: int = 0) -> None:
        restore_log()
        ll.llama_backend_init()
        params = ll.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self.n_gpu_layers = n_gpu_layers
        self.ptr = ll.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise EngineError(f"llama.cpp could not load {path}")
        self.vocab = ll.llama_model_get_vocab(self.ptr)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._control: dict[int, bool] = {}
        self._utf8: VocabMasks | None = None
        self.n_ctx_train = ll.llama_model_n_ctx_train(self.ptr)

    def meta(self, key: str) -> str | None:
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        n = ll.llama_model_meta_val_str(self.ptr, key.encode(), buf, size)
        if n < 0:
            return None
        if n >= size:  # chat templates can be long
            buf = ctypes.create_string_buffer(n + 1)
            ll.llama_model_meta_val_str(self.ptr, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", errors="replace")

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        data = text.encode()
        cap = len(data) + 16
        arr = (ll.llama_token * cap)()
        # A short text (a millisecond or less) keeps the GIL: giving it away costs the caller, the event loop for a
        # small request (serve/chat/offload.py), milliseconds to get it back on a busy machine.
        tokenize = gil_held.llama_tokenize if len(data) <= HOLD_GIL_MAX else ll.llama_tokenize
        n = tokenize(self.vocab, data, len(data), arr, cap, add_special, True)
        if n < 0:
            arr = (ll.llama_token * -n)()
            n = tokenize(self.vocab, data, len(data), arr, -n, add_special, True)
        return list(arr[:n])

    def piece(self, token: int) -> bytes:
        """The token's bytes (special tokens as their text). Memoized: the vocabulary never changes, and the
        decode thread then makes no ctypes call per token here (each one gives the GIL away)."""
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = ll.llama_token_to_piece(self.vocab, token, buf, 64, 0, True)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = ll.llama_token_to_piece(self.vocab, token, buf, -n, 0, True)
            cached = self._pieces[token] = buf.raw[:n]
        return cached

    def token_text(self, token: int) -> str:
        return self.piece(token).decode("utf-8", errors="replace")

    def emitted(self, token: int, keep: frozenset[str] = frozenset()) -> bytes:
        """The bytes a generated token adds to a job's text: its piece, except a control token's, which is never
        text unless it is a marker the parsers read (KEPT_MARKERS, or the model format's own `keep`: the UTF-8
        masks leave those out, as they are ASCII markers the parsers take out again)."""
        raw = self.piece(token)
        if self.is_control(token) and not _kept(raw.decode("utf-8", "replace"), keep):
            return b""
        return raw

    def utf8_masks(self) -> VocabMasks:
        """The strict UTF-8 masks over the vocabulary (serve/engine/utf8.py), built at the first grammar-held job
        (about a second for a 151k vocabulary) and kept."""
        if self._utf8 is None:
            tokens = range(self.n_vocab)
            ends = [self.is_eog(t) for t in tokens]
            self._utf8 = VocabMasks([self.emitted(t) for t in tokens], ends)
        return self._utf8

    @functools.cached_property
    def unmatchable(self) -> int | None:
        """A token an enforcing llama.cpp grammar always refuses (not an end, its piece empty or starting with a NUL
        byte: llama-grammar.cpp's llama_grammar_apply_impl), or None when the vocabulary has none."""
        unmatched = (b"", b"\0")
        return next((t for t in range(self.n_vocab) if not self.is_eog(t) and self.piece(t)[:1] in unmatched), None)

    def is_eog(self, token: int) -> bool:
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = bool(ll.llama_vocab_is_eog(self.vocab, token))
        return eog

    def is_control(self, token: int) -> bool:
        control = self._control.get(token)
        if control is None:
            control = self._control[token] = bool(ll.llama_vocab_is_control(self.vocab, token))
        return control

    def close(self) -> None:
        if self.ptr:
            ll.llama_model_free(self.ptr)
            self.ptr = None


@dataclass(eq=False)
class _Slot:
    seq: int
    job: Job
    chain: ll.llama_sampler_p
    todo: deque[int]  # prompt tokens not yet decoded
    prefix: np.ndarray  # the cached prompt tokens reused (positions 0..cached-1)
    history: list[int] = field(default_factory=list)  # tokens decoded since (their cells follow the prefix)
    pos: int = 0  # cells of the sequence so far (the next token's index in prompt + answer)
    # llama.cpp position minus `pos`: 0, except under M-RoPE after an image, whose n_pos positions differ from its
    # n_tokens cells (the text after it resumes n_pos past its start: serve/engine/vision.py)
    shift: int = 0
    last: int | None = None  # sampled token to decode next
    generated: int = 0
    batch_index: int = -1
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    stops: StopFilter = field(default_factory=lambda: StopFilter(()))
    images: deque[ImageSpan] = field(default_factory=deque)  # images not yet decoded, in order
    encodings: deque[Encoding] = field(default_factory=deque)  # their embeddings, from the encoder's thread
    budget: BudgetTracker | None = None  # the thinking budget's count, when the job has one
    forced: deque[int] = field(default_factory=deque)  # tokens the engine writes next instead of sampling

    def waiting(self) -> bool:
        """At an image whose embeddings are not there yet: a step passes the sequence by."""
        at_image = self.last is None and bool(self.images) and self.images[0].start <= self.pos
        return at_image and self.encodings[0].embd is None

    def image_error(self) -> str | None:
        return next((e.error for e in self.encodings if e.error is not None), None)


class Engine(JobThread[Job]):
    """Owns one llama.cpp context with `n_seq` sequences; `submit` and `cancel` are safe from any thread."""

    def __init__(
        self,
        model: Model,
        n_seq: int,
        ctx_per_seq: int,
        *,
        prompt_chunk: int = 256,
        threads: int | None = None,
        flash_attn: bool = False,
        kv_type: str = "f16",
        cache_ram: int = 0,
        swa_full: bool = True,
        save_min: int = 32,
        dispatch: Callable[[list[tuple[Job, Event]]], None] | None = None,
        arriving: Callable[[], int] | None = None,
        gather: float = 0.004,
        disk: DiskCache | None = None,
        stop_write_seconds: float = 5.0,
        projector: Projector | None = None,
        min_batch: int = 0,
    ) -> None:
        """`cache_ram`: bytes of host RAM for saved sequence states (0: none); `swa_full`: a full-size
        sliding-window cache, so any cached prefix can be reused (llama.cpp's --swa-full); `save_min`: cells
        worth saving to host RAM before they are dropped; `dispatch`: receives each step's events at once, from
        this thread (default: each job's `emit`); `arriving`: requests on their way to `submit` (serve/arrivals.py),
        for which a step started from idle waits up to `gather` seconds; `disk`: the disk tier
        (serve/engine/disk_cache.py), where prompts look after the cells and host RAM, and where the engine keeps
        its cached states when it stops, for at most `stop_write_seconds`; `projector`: encodes a job's images
        (serve/engine/vision.py) on a thread of its own (serve/engine/encoder.py) while the steps go on, and their
        embeddings enter the sequence between steps; `min_batch`: the largest image in tokens, which must fit one
        micro-batch when the model attends within an image both ways."""
        self.model = model
        self.n_seq = n_seq
        self.chunk = prompt_chunk
        self.projector = projector
        self.mrope = projector is not None and projector.mrope
        self.n_batch = max(prompt_chunk + n_seq, min_batch)
        self.ctx = new_context(
            model.ptr,
            n_ctx=ctx_per_seq * n_seq,
            n_batch=self.n_batch,
            n_seq_max=n_seq,
            kv_unified=False,  # each sequence its own KV stream: batching cannot change its attention
            threads=threads,
            flash_attn=flash_attn,
            kv_type=kv_type,
            what="a context",
            swa_full=swa_full,
        )
        self.ctx_per_seq = ll.llama_n_ctx_seq(self.ctx)
        # llama.cpp lowers n_batch to n_ctx (a small --ctx-size); a larger batch would abort the process
        self.n_batch = min(self.n_batch, ll.llama_n_batch(self.ctx), ll.llama_n_ubatch(self.ctx))
        self.chunk = min(self.chunk, self.n_batch - n_seq)
        self.memory = ll.llama_get_memory(self.ctx)
        self.batch = ll.llama_batch_init(self.n_batch, 0, 1)
        # The batch's arrays, fetched once: each attribute read of a ctypes struct builds a new pointer object.
        b = self.batch
        self._token, self._pos, self._n_seq_id, self._seq_id, self._logits = (
            b.token,
            b.pos,
            b.n_seq_id,
            b.seq_id,
            b.logits,
        )
        self.n_swa = int(ll.llama_model_n_swa(model.ptr))
        spill = disk is not None and cache_ram > 0
        self.host = HostCache(cache_ram, self.n_swa, self._spill if spill else None) if cache_ram > 0 else None
        # Host RAM's evictions go to disk when a restore from there measures faster than decoding (_spill_pays).
        self.spiller = Spiller(disk, min(disk.capacity // 4, SPILL_PENDING_MAX)) if disk is not None and spill else None
        if self.spiller is not None and disk is not None and disk.read_rate <= 0:
            disk.probe()
        self.prompt_rate = 0.0  # prompt tokens/s of recent steps that decoded a prompt chunk
        self._spill_said: bool | None = None
        self.save_min = save_min
        self.disk = disk
        self.stop_write_seconds = stop_write_seconds
        self._seqs = [SeqState(i) for i in range(n_seq)]
        self._clock = 0
        self._out: list[tuple[Job, Event]] = []
        self._dispatch = dispatch or _emit_each
        self._slots: list[_Slot] = []
        self._arriving = arriving or (lambda: 0)
        self.gather = gather
        self._checked: OrderedDict[Grammar, None] = OrderedDict()  # grammars llama.cpp accepted lately
        self._checked_lock = threading.Lock()  # check_grammar runs on the loop and in worker threads
        self._stop_lock = threading.Lock()  # two stops at once would free the context twice
        super().__init__("llama-engine")
        self.encoder = ImageEncoder(projector, self._encoded) if projector is not None else None

    # -- the request side (submit, cancel, alive: JobThread) ---------------------------------------------------

    def _refuse(self, job: Job) -> None:
        job.emit(SHUTTING_DOWN)

    def start(self) -> None:
        if self.encoder is not None:
            self.encoder.start()
        super().start()

    def stop(self, timeout: float = 10.0) -> None:
        """End every job (running ones finish with `shutdown`, waiting ones fail with SHUTTING_DOWN), then free llama.cpp's memory and every cache
        entry: a cached state never outlives the context (and model) that made it. The image encoder ends after the
        image under way (`encoding` says whether it has not yet, when the projector must stay open). Safe to call
        from several threads at once: the context is freed once."""
        with self._stop_lock:
            self._stop(timeout)

    def _stop(self, timeout: float) -> None:
        joined = self._join(timeout)
        if self.encoder is not None:
            self.encoder.stop(timeout)
        if joined and self.ctx:
            if self.host is not None:
                self.host.clear()
            self._seqs = [SeqState(i) for i in range(self.n_seq)]
            ll.llama_batch_free(self.batch)
            ll.llama_free(self.ctx)
            self.ctx = None

    @property
    def active(self) -> int:
        return len(self._slots)

    @property
    def encoding(self) -> bool:
        """The image encoder's thread still runs (the projector is in use)."""
        return self.encoder is not None and self.encoder.alive

    def cached(self, seq: int) -> np.ndarray:
        """The token ids sequence `seq`'s cells hold while it is free (for tests and diagnostics)."""
        return self._seqs[seq].tokens

    # -- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if not self._can_step():
                self._flush()  # about to wait; otherwise the step flushes right before it decodes
            with self._wake:
                while not self._stopping and not self._can_join() and not self._can_step():
                    self._wake.wait()
                if self._stopping:
                    break
                if not self._slots and self._arriving() > 0:
                    self._gather()
                joining = [
                    self._incoming.popleft() for _ in range(min(len(self._incoming), self.n_seq - len(self._slots)))
                ]
            alone = not self._slots
            for job in joining:  # opened outside the lock: saving or restoring a state copies megabytes
                if job.cancelled:
                    self._emit(job, Finished("cancelled", len(job.prompt), 0))
                    continue
                try:
                    exact = alone and job.params.seed is not None and job.params.temperature > 0
                    bisect.insort(
                        self._slots, self._open(job, DECODED_EXACT if exact else DECODED), key=lambda s: s.seq
                    )
                except Exception as err:  # a job llama.cpp refuses fails alone; the engine goes on
                    log.exception("starting a sequence failed")
                    self._emit(job, Failed(f"generation failed: {err}"))
            for slot in [s for s in self._slots if s.job.cancelled]:
                self._close(slot, Finished("cancelled", len(slot.job.prompt), slot.generated, slot.prefix.size))
            for slot in [s for s in self._slots if s.image_error() is not None]:
                self._close(slot, Failed(f"generation failed: {slot.image_error()}"))
            if self._slots:
                try:
                    self._step()
                except Exception as err:  # a failed step ends its jobs with an error; the engine goes on
                    log.exception("decode step failed")
                    for slot in list(self._slots):
                        self._close(slot, Failed(f"generation failed: {err}"), keep=False)
            for slot in [s for s in self._slots if s.batch_index == -2]:
                self._close(slot, None)
        for slot in list(self._slots):
            self._close(slot, Finished("shutdown", len(slot.job.prompt), slot.generated, slot.prefix.size))
        while self._incoming:  # admitted but not yet in a sequence: ends as a job still queued does
            self._emit(self._incoming.popleft(), SHUTTING_DOWN)
        self._flush()
        if self.spiller is not None:
            self.spiller.close(self.stop_write_seconds / 2)
        if self.disk is not None:
            try:
                self._persist()
            except Exception:  # a cache that cannot be kept must not stop the shutdown
                log.exception("keeping the prompt cache on disk failed")

    def _can_join(self) -> bool:
        return bool(self._incoming) and len(self._slots) < self.n_seq

    def _can_step(self) -> bool:
        """A sequence has a token to decode, or must be closed: otherwise the thread waits (for a job, a cancel or
        an image's embeddings) rather than step over sequences that all wait for their images."""
        return any(not s.waiting() or s.job.cancelled or s.image_error() is not None for s in self._slots)

    def _encoded(self) -> None:
        """From the encoder's thread: an image's embeddings are ready (or it failed)."""
        with self._wake:
            self._wake.notify()

    def _gather(self) -> None:
        """From idle, with `_wake` held: wait (at most `gather` seconds) while more requests are on their way and
        there is room for them, so that one first step starts them all (serve/arrivals.py). Polled in short
        slices: a request that fails before admission leaves the count without a notify."""
        deadline = time.perf_counter() + self.gather
        while not self._stopping and self._arriving() > 0 and len(self._incoming) < self.n_seq:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._wake.wait(min(left, 0.0005))

    def _emit(self, job: Job, event: Event) -> None:
        self._out.append((job, event))

    def _flush(self) -> None:
        """Hand the events gathered since the last flush over in one go, right before the thread blocks (in
        llama_decode, which releases the GIL, or waiting for work): the request side then turns them into bytes
        while llama.cpp computes, instead of contending for the GIL with the sampling of the step."""
        if self._out:
            out, self._out = self._out, []
            self._dispatch(out)

    # -- sequences and the prompt cache ----------------------------------------------------------------------

    def _open(self, job: Job, decoded: int = DECODED) -> _Slot:
        prompt = np.asarray(job.prompt, np.int32)
        running = {s.seq for s in self._slots}
        free = [s for s in self._seqs if s.seq not in running]
        reuse = job.params.cache_prompt
        choice = pick_sequence(free, prompt, running, self.n_swa, reuse, decoded=decoded)
        state, keep = self._seqs[choice.seq], choice.reuse
        try:
            if reuse and self.host is not None:
                entry, shared = self.host.best(prompt, decoded=decoded)
                if entry is not None and shared > keep:
                    # The host cache has more of this prompt: load it into the sequence a miss would take.
                    state = self._seqs[pick_sequence(free, prompt, running, self.n_swa, reuse=False).seq]
                    keep = shared if self._restore(state, entry) else 0
            if reuse and self.disk is not None:
                state, keep = self._from_disk(free, prompt, running, state, keep, decoded)
            keep = self._trim(state, keep)
        except Exception:
            self._forget(state)
            raise
        slot = _Slot(state.seq, job, self._chain(job.params), deque(job.prompt[keep:]), state.tokens[:keep], pos=keep)
        slot.stops = StopFilter(job.params.stops)
        slot.images = deque(span for span in job.images if span.end > keep)
        if slot.images and self.encoder is None:
            raise EngineError("this model has no image projector")
        for span in slot.images:  # encoded from now on, while the text before them decodes
            slot.encodings.append(Encoding(span))
            assert self.encoder is not None
            self.encoder.submit(slot.encodings[-1])
        if job.params.think_budget is not None:
            slot.budget = BudgetTracker(job.params.think_budget)
        return slot

    def _trim(self, state: SeqState, keep: int) -> int:
        """Drop the sequence's cells from position `keep` on (saving them first when that loses a prompt);
        returns how many cells are kept (0 when a sliding window has lost what the next token needs). Under
        M-RoPE, none from the first image on: cells are dropped by position, which equals the index only before it."""
        if self.mrope:
            keep = before_images(state.tokens, keep)
        if len(state.tokens) - keep >= self.save_min and state.prompt_end - keep > DECODED_EXACT:
            # Worth a copy only when part of the last prompt goes: dropping just the answer after it means the
            # same conversation came back (the next turn or a retry) and needs none of it.
            self._save(state, keep)
        if keep == 0:
            self._forget(state)
            return 0
        if keep < len(state.tokens):
            ll.llama_memory_seq_rm(self.memory, state.seq, keep, -1)
            state.tokens = state.tokens[:keep]
            state.prompt_end = min(state.prompt_end, keep)
            state.saved = False
        if self.n_swa and usable(keep, ll.llama_memory_seq_pos_min(self.memory, state.seq), self.n_swa) < keep:
            self._forget(state)
            return 0
        return keep

    def _forget(self, state: SeqState) -> None:
        ll.llama_memory_seq_rm(self.memory, state.seq, -1, -1)
        state.tokens, state.pos_min, state.saved, state.prompt_end, state.persist = EMPTY, 0, False, 0, True

    def _save(self, state: SeqState, keep: int) -> None:
        """Copy the sequence's state into the host cache (once per content), before its cells from `keep` on
        are dropped. A sliding-window state saves only its window, which would not serve the next turn of a
        conversation (its prompt ends where this answer began): so the prompt's end is saved too."""
        if self.host is None or state.saved or len(state.tokens) < self.save_min:
            return
        state.saved = True
        self._put(state)
        end = state.prompt_end
        if (
            self.n_swa
            and keep <= end < len(state.tokens) - self.n_swa
            and usable(end, state.pos_min, self.n_swa) == end
        ):
            ll.llama_memory_seq_rm(self.memory, state.seq, end, -1)  # dropped after this anyway
            state.tokens = state.tokens[:end]
            self._put(state)

    def _put(self, state: SeqState) -> None:
        assert self.host is not None
        if len(state.tokens) < self.save_min or self.host.covers(state.tokens):
            return
        size = ll.llama_state_seq_get_size(self.ctx, state.seq)
        if size > self.host.capacity:
            return
        data = (ctypes.c_uint8 * size)()
        if ll.llama_state_seq_get_data(self.ctx, data, size, state.seq) == size:
            self.host.put(state.tokens, data, size, state.pos_min, state.persist)

    def _restore(self, state: SeqState, entry: Entry, in_host: bool = True) -> bool:
        """Replace the sequence's cells by a saved state (the old cells are saved first when worth it);
        `in_host`: the host cache holds this state (no copy of it is made there again)."""
        self._trim(state, 0)
        if ll.llama_state_seq_set_data(self.ctx, entry.data, entry.size, state.seq) != entry.size:
            self._forget(state)
            return False
        state.tokens, state.saved, state.prompt_end, state.persist = entry.tokens, in_host, 0, entry.persist
        state.pos_min = entry.pos_min = max(0, ll.llama_memory_seq_pos_min(self.memory, state.seq))
        return True

    def _from_disk(
        self,
        free: list[SeqState],
        prompt: np.ndarray,
        running: set[int],
        state: SeqState,
        keep: int,
        decoded: int,
    ) -> tuple[SeqState, int]:
        """The sequence and the prompt tokens it keeps after looking on disk: a file holding more of the prompt
        than the cells and host RAM is read, checked and restored into the sequence a miss would take."""
        assert self.disk is not None
        found, shared = self.disk.best(prompt, decoded=decoded)
        if found is None or shared <= keep:
            if keep == 0:
                self.disk.observer.disk_miss()
            return state, keep
        start = time.perf_counter()
        loaded = self.disk.load(found)  # None: damaged (dropped and logged) or gone
        if loaded is None:
            if keep == 0:
                self.disk.observer.disk_miss()
            return state, keep
        target = self._seqs[pick_sequence(free, prompt, running, self.n_swa, reuse=False).seq]
        entry = Entry(loaded.tokens, loaded.data, loaded.size, loaded.pos_min)
        if not self._restore(target, entry, in_host=False):
            log.warning("KV cache: llama.cpp refused the state in %s; decoding the prompt", found.path.name)
            return target, 0
        self.disk.observer.disk_hit(loaded.size, time.perf_counter() - start)
        return target, shared

    def _spill(self, entry: Entry) -> None:
        """Host RAM let `entry` go for room: to disk, when that pays (and it may be written at all)."""
        if self.spiller is None or not entry.persist or len(entry.tokens) < self.save_min:
            return
        if self._spill_pays(entry.size / len(entry.tokens)):
            self.spiller.submit(entry.tokens, entry.data, entry.size, entry.pos_min)

    def _spill_pays(self, per_token: float) -> bool:
        """Whether reading a state back from disk beats decoding its tokens again, by SPILL_MARGIN: the disk's
        read speed (its synced write speed measured at load, then what restores measure) against this model's
        bytes of state per token times its prompt speed (measured on the prompt chunks it decoded)."""
        assert self.disk is not None
        read_rate, prompt_rate = self.disk.read_rate, self.prompt_rate
        pays = read_rate > 0 and prompt_rate > 0 and per_token * prompt_rate * SPILL_MARGIN < read_rate
        if pays != self._spill_said:
            self._spill_said = pays
            log.info(
                "KV cache: host RAM's evictions %s to disk (a restore reads %.0f MB/s; decoding %.0f prompt "
                "tokens/s x %.0f KB of state a token needs %.0f MB/s, x%.0f margin)",
                "spill" if pays else "do not spill",
                read_rate / 1e6,
                prompt_rate,
                per_token / 1e3,
                per_token * prompt_rate / 1e6,
                SPILL_MARGIN,
            )
        return pays

    def _persist(self) -> None:
        """At stop: the cached states worth keeping go to disk, most recently used first (the free sequences'
        cells, then host RAM's entries, newest first), as long as they fit the disk's bound and the time allowed.
        States of `cache_prompt: false` requests, and ones a file already serves, are not written again."""
        assert self.disk is not None
        deadline = time.perf_counter() + self.stop_write_seconds
        budget, written, count = self.disk.capacity, 0, 0
        seqs = sorted((s for s in self._seqs if s.persist and len(s.tokens) >= self.save_min), key=lambda s: -s.used)
        for state in seqs:
            if time.perf_counter() > deadline:
                break
            held = self.disk.covers(state.tokens)
            if held is not None:
                self.disk.touch(held)
                continue
            size = ll.llama_state_seq_get_size(self.ctx, state.seq)
            if written + size > budget:
                continue
            data = (ctypes.c_uint8 * size)()
            if ll.llama_state_seq_get_data(self.ctx, data, size, state.seq) == size and self.disk.write(
                state.tokens, data, size, state.pos_min
            ):
                written, count = written + size, count + 1
        for entry in self.host.recent() if self.host is not None else []:
            if time.perf_counter() > deadline:
                break
            keep = entry.persist and written + entry.size <= budget and len(entry.tokens) >= self.save_min
            if keep and self.disk.write(entry.tokens, entry.data, entry.size, entry.pos_min):
                written, count = written + entry.size, count + 1
        log.info("KV cache: wrote %d states (%.1f MiB) to disk at stop", count, written / 2**20)

    def _close(self, slot: _Slot, event: Event | None, keep: bool = True) -> None:
        """End the slot: its cells stay cached under their token ids (unless `keep` is off: after a failed
        step their content is unknown); the sequence id is reusable at once."""
        state = self._seqs[slot.seq]
        for encoding in slot.encodings:  # the encoder skips those not begun
            encoding.cancelled = True
        if keep:
            state.persist = slot.job.params.cache_prompt  # a `cache_prompt: false` request is never written
            state.tokens = np.concatenate([slot.prefix, np.asarray(slot.history, np.int32)])
            state.prompt_end = min(len(slot.job.prompt), len(state.tokens))  # less when cancelled mid-prompt
            state.pos_min = max(0, ll.llama_memory_seq_pos_min(self.memory, slot.seq)) if self.n_swa else 0
            state.saved = False
        else:
            self._forget(state)
        self._clock += 1
        state.used = self._clock
        ll.llama_sampler_free(slot.chain)
        self._slots.remove(slot)
        if event is not None:
            self._emit(slot.job, event)

    # -- sampling --------------------------------------------------------------------------------------------

    def _chain(self, p: SamplingParams) -> ll.llama_sampler_p:
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        add = lambda s: ll.llama_sampler_chain_add(chain, s)  # noqa: E731
        if p.grammar is not None:
            add(self._grammar(p.grammar))
        if p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
            # This llama.cpp's signature: (n_vocab, last_n, repeat, freq, present).
            add(
                ll.llama_sampler_init_penalties(
                    self.model.n_vocab, 64, p.repeat_penalty, p.frequency_penalty, p.presence_penalty
                )
            )
        if p.temperature <= 0.0:
            add(ll.llama_sampler_init_greedy())
            return chain
        if p.top_k > 0:
            add(ll.llama_sampler_init_top_k(p.top_k))
        if p.top_p < 1.0:
            add(ll.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            add(ll.llama_sampler_init_min_p(p.min_p, 1))
        add(ll.llama_sampler_init_temp(p.temperature))
        add(ll.llama_sampler_init_dist(p.seed if p.seed is not None else random.getrandbits(32)))
        return chain

    def check_grammar(self, g: Grammar) -> None:
        """Raise EngineError when llama.cpp refuses the grammar (it answers NULL): from any thread, before a
        request is admitted, so a client's grammar is the client's 400 and never a failed step. A grammar accepted
        lately is not parsed again (an agent sends the same tools every turn, and a lazy grammar compiles its
        trigger regexes at every build)."""
        with self._checked_lock:
            if g in self._checked:
                self._checked.move_to_end(g)
                return
        ll.llama_sampler_free(self._grammar(g))
        with self._checked_lock:
            self._checked[g] = None
            while len(self._checked) > CHECKED_GRAMMARS:
                self._checked.popitem(last=False)

    def _grammar(self, g: Grammar) -> ll.llama_sampler_p:
        if not g.triggers:
            smpl = ll.llama_sampler_init_grammar(self.model.vocab, g.text.encode(), b"root")
        else:
            patterns = (ctypes.c_char_p * len(g.triggers))(*(t.encode() for t in g.triggers))
            smpl = ll.llama_sampler_init_grammar_lazy_patterns(
                self.model.vocab, g.text.encode(), b"root", patterns, len(g.triggers), (ll.llama_token * 0)(), 0
            )
        if not smpl:
            raise EngineError("llama.cpp rejected the grammar")
        return smpl

    # -- one step ----------------------------------------------------------------------------------------------

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        i = self.batch.n_tokens
        self._token[i], self._pos[i], self._n_seq_id[i], self._logits[i] = token, pos, 1, logits
        self._seq_id[i][0] = seq
        self.batch.n_tokens = i + 1
        return i

    def _step(self) -> None:
        # Sequences in id order (self._slots is sorted), each with at least one token, and a filler for each
        # free id between running ones: llama.cpp then decodes the step in one pass (see the module's note).
        self.batch.n_tokens = 0
        by_seq = {slot.seq: slot for slot in self._slots}
        ids = range(self._slots[0].seq, self._slots[-1].seq + 1)
        fillers: list[tuple[SeqState, int]] = []
        spare = self.n_batch - len(ids)  # prompt tokens beyond one a sequence (n_batch = chunk + n_seq)
        prompt_tokens = 0
        for seq in ids:
            slot = by_seq.get(seq)
            if slot is None:  # right after the free sequence's cached cells, which it leaves untouched
                state = self._seqs[seq]
                if len(state.tokens) >= self.ctx_per_seq:
                    self._trim(state, self.ctx_per_seq - 1)
                fillers.append((state, len(state.tokens)))
                self._add(0, len(state.tokens), seq, False)
                continue
            slot.batch_index = -1
            if slot.last is None and slot.images and slot.images[0].start <= slot.pos:
                self._decode_images(slot)
                if slot.images and slot.images[0].start <= slot.pos:  # still at an image (encoding, or the rest of
                    # a causal one next step): no text this step, and a filler keeps the ids consecutive
                    fillers.append((self._seqs[seq], slot.pos + slot.shift))
                    self._add(0, slot.pos + slot.shift, seq, False)
                    continue
            if slot.last is not None:
                slot.batch_index = self._add(slot.last, slot.pos + slot.shift, slot.seq, True)
                slot.history.append(slot.last)
                slot.pos += 1
            elif slot.todo:  # a prompt chunk per step keeps running streams flowing
                take = 1 + min(len(slot.todo) - 1, self.chunk - 1, spare)
                if slot.images:  # text up to the next image, which a later step decodes
                    take = min(take, slot.images[0].start - slot.pos)
                spare -= take - 1
                prompt_tokens += take
                for k in range(take):
                    last = k == take - 1 and len(slot.todo) == 1
                    token = slot.todo.popleft()
                    idx = self._add(token, slot.pos + slot.shift, slot.seq, last)
                    slot.history.append(token)
                    slot.pos += 1
                    if last:
                        slot.batch_index = idx
        if self.batch.n_tokens == len(fillers):
            self._flush()
            return
        self._flush()  # the request side works on the last step's tokens while this one decodes
        began = time.perf_counter()
        try:
            rc = ll.llama_decode(self.ctx, self.batch)
        finally:
            if prompt_tokens >= PROMPT_RATE_MIN_TOKENS:
                rate = prompt_tokens / max(time.perf_counter() - began, 1e-6)
                self.prompt_rate = rate if self.prompt_rate <= 0 else 0.8 * self.prompt_rate + 0.2 * rate
            for state, pos in fillers:
                gil_held.llama_memory_seq_rm(self.memory, state.seq, pos, -1)
                if self.n_swa:  # the filler may have taken the place of a cell outside the window
                    state.pos_min = max(0, gil_held.llama_memory_seq_pos_min(self.memory, state.seq))
        if rc != 0:
            raise EngineError(f"llama_decode returned {rc}")
        for slot in list(self._slots):
            if slot.batch_index >= 0:
                self._sample(slot)

    def _decode_images(self, slot: _Slot) -> None:
        """Decode the embeddings of the image at the slot's position into its sequence, once its encoding is
        done, in a llama_decode of its own (a batch holds tokens or embeddings, not both) before the step's batch:
        the whole image where the model attends within it both ways, which needs it in one micro-batch, else a
        prompt chunk's worth a step. When the cache kept part of an image (the same picture, by its ids), only the
        rest is decoded."""
        assert self.projector is not None
        non_causal, mrope = self.projector.non_causal, self.projector.mrope
        while slot.images and slot.images[0].start <= slot.pos:
            span, encoding = slot.images[0], slot.encodings[0]
            if encoding.embd is None:
                return  # still encoding (or failed: the loop ends the job)
            done = slot.pos - span.start
            rows = encoding.embd[done:]
            if not non_causal:
                rows = rows[: self.chunk]
            if mrope:  # each row at the image's start plus its (row, column): a chunk takes its rows of the grid
                assert span.mrope is not None
                grid = span.mrope[done : done + len(rows)]
                decode_embeddings(self.ctx, rows, span.start + slot.shift, slot.seq, non_causal=non_causal, mrope=grid)
            else:
                decode_embeddings(self.ctx, rows, slot.pos, slot.seq, non_causal=non_causal)
            for _ in range(len(rows)):
                slot.history.append(slot.todo.popleft())
            slot.pos += len(rows)
            if slot.pos >= span.end:
                slot.shift += span.n_pos - span.n_tokens
                slot.images.popleft()
                slot.encodings.popleft()
            if not slot.todo:
                raise EngineError("a prompt must not end with an image")
            if not non_causal:
                return

    def _sample(self, slot: _Slot) -> None:
        job, model = slot.job, self.model
        p = job.params
        if slot.budget is not None and not slot.forced and slot.budget.due():
            slot.forced.extend(model.tokenize(slot.budget.budget.close, False))
            slot.budget.forced()
        if slot.forced and not self._grammar_allows(slot, slot.forced[0]):
            slot.forced.clear()  # llama.cpp aborts on a token its grammar refuses: sample instead
        if slot.forced:
            # written, not sampled: the chain still takes it, so a grammar sees the marker it waits for
            token = slot.forced.popleft()
            ll.llama_sampler_accept(slot.chain, token)
        elif (
            p.temperature <= 0.0
            and p.grammar is None
            and p.repeat_penalty == 1.0
            and not (p.presence_penalty or p.frequency_penalty)
        ):
            # Plain greedy: an argmax over the logits in place, without building llama.cpp's candidate array
            # of the whole vocabulary (151,936 entries for qwen) for every sequence at every step.
            logits = gil_held.llama_get_logits_ith(self.ctx, slot.batch_index)
            token = int(np.ctypeslib.as_array(logits, shape=(model.n_vocab,)).argmax())
        elif p.grammar is None:
            token = ll.llama_sampler_sample(slot.chain, self.ctx, slot.batch_index)
        else:
            token = self._sample_utf8(slot)
        end_of_message = bool(job.continue_on) and model.token_text(token) == job.continue_on
        if model.is_eog(token) and not end_of_message:
            self._finish(slot, "stop")
            return
        slot.generated += 1
        slot.last = token
        raw = model.piece(token)
        logprob = self._logprob(slot.batch_index, token, raw, p.logprobs) if p.logprobs is not None else None
        decoded = slot.decoder.decode(model.emitted(token, job.keep))  # a stray control token is never text
        if slot.budget is not None:
            slot.budget.feed(decoded)
        text, hit = slot.stops.feed(decoded)
        self._emit(job, Piece(text, logprob))
        if hit:
            self._finish(slot, "stop", flush=False)
        elif slot.generated >= job.params.max_tokens or slot.pos + 1 >= self.ctx_per_seq:
            self._finish(slot, "length")

    def _sample_utf8(self, slot: _Slot) -> int:
        """Sample a grammar-held job with the tokens that would make its text invalid UTF-8 refused (-inf in the
        context's logits, put back after): llama.cpp's grammar decodes bytes laxly and lets them through (see
        serve/engine/utf8.py). The state is the decoder's pending bytes, so tokens the engine forced count too.
        Only while the grammar enforces: the thinking before a lazy grammar's trigger stays as free as without one.
        At a character boundary it writes only the few refused ids. Inside a character it first checks that the
        grammar takes one of the tokens left: it may take none where it only accepts a surrogate or a code point
        past U+10FFFF, and with every logit at -inf llama.cpp's sampler picks a token the grammar refused (token 0:
        NUL bytes to the end). At a boundary the lead byte of any code point the grammar takes is allowed, so
        something always is."""
        masks = self.model.utf8_masks()
        state = state_of(slot.decoder.getstate()[0])  # ERROR: already invalid (a forced token): nothing to keep
        probe = self.model.unmatchable
        waiting = probe is not None and self._grammar_allows(slot, probe)  # a lazy grammar before its trigger
        logits = np.ctypeslib.as_array(
            gil_held.llama_get_logits_ith(self.ctx, slot.batch_index), shape=(self.model.n_vocab,)
        )
        saved = masks.apply(state, logits) if state != ERROR and not waiting else None
        if saved is not None and state != CLEAN and not self._grammar_allows_any(slot, masks.allowed[state], logits):
            masks.undo(state, logits, saved)
            saved = None
        try:
            return int(ll.llama_sampler_sample(slot.chain, self.ctx, slot.batch_index))
        finally:
            if saved is not None:
                masks.undo(state, logits, saved)

    def _grammar_allows_any(self, slot: _Slot, tokens: np.ndarray, logits: np.ndarray) -> bool:
        """Whether the job's grammar lets one of `tokens` come next: the most likely first, as one usually is."""
        if tokens.size > GRAMMAR_PROBE:
            top = tokens[np.argpartition(-logits[tokens], GRAMMAR_PROBE - 1)[:GRAMMAR_PROBE]]
            if self._grammar_allows_some(slot, top):
                return True
        return self._grammar_allows_some(slot, tokens)

    def _grammar_allows_some(self, slot: _Slot, tokens: np.ndarray) -> bool:
        """Whether the job's grammar (the chain's first sampler, `_chain`) lets one of `tokens` come next."""
        data = (ll.llama_token_data * tokens.size)()
        view = np.ctypeslib.as_array(data)
        view["id"] = tokens
        candidates = ll.llama_token_data_array(data, tokens.size, -1, False)
        ll.llama_sampler_apply(ll.llama_sampler_chain_get(slot.chain, 0), ctypes.byref(candidates))
        return bool(np.isfinite(view["logit"]).any())

    def _grammar_allows(self, slot: _Slot, token: int) -> bool:
        """Whether the job's grammar lets `token` come next (any token without one)."""
        return slot.job.params.grammar is None or self._grammar_allows_some(slot, np.array([token], np.int32))

    def _logprob(self, index: int, token: int, piece: bytes, top: int) -> TokenLogprob:
        """log-softmax of the raw logits at `index` (in float64): the token's value and the `top` best."""
        logits = np.ctypeslib.as_array(gil_held.llama_get_logits_ith(self.ctx, index), shape=(self.model.n_vocab,))
        x = logits.astype(np.float64)
        peak = x.max()
        norm = peak + np.log(np.exp(x - peak).sum())
        best: tuple[tuple[bytes, float], ...] = ()
        if top > 0:
            ids = np.argpartition(-x, top - 1)[:top]
            ids = ids[np.argsort(-x[ids], kind="stable")]
            best = tuple((self.model.piece(int(i)), float(x[i] - norm)) for i in ids)
        return TokenLogprob(piece, float(x[token] - norm), best)

    def _finish(self, slot: _Slot, reason: str, flush: bool = True) -> None:
        if flush:
            rest = slot.stops.feed(slot.decoder.decode(b"", final=True))[0] + slot.stops.flush()
            if rest:
                self._emit(slot.job, Piece(rest))
        self._emit(
            slot.job,
            Finished(reason, len(slot.job.prompt), slot.generated, slot.prefix.size, stop_sequence=slot.stops.hit),
        )
        slot.batch_index = -2  # closed by the loop after this step

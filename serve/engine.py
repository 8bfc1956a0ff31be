"""The one thread that owns llama.cpp: continuous batching over sequences of one context.

Each step decodes, in a single llama_decode batch, the next token of every running sequence plus a chunk of
one waiting prompt, then samples each sequence with its own sampler chain.

Every sequence has its own KV stream (kv_unified off), and llama.cpp then cuts a batch into micro-batches of
consecutive, increasing sequence ids only: each break in that run costs a whole extra pass over the weights
(on the 2-core bench model, 8 sequences in order 59 ms a step, in the order [1..7, 0] 91 ms, {0, 2, 4, 6}
94 ms). So the batch lists sequences by id, a new job takes the lowest free id, and an id missing between
running ones gets a filler token (no logits, removed after the step): about 3.5 ms instead of a pass.

Jobs join between steps and leave when they finish or are cancelled (checked at every step), freeing their KV
cells with llama_memory_seq_rm.
Requests talk to the thread through `Job.emit` (thread-safe, usually an asyncio queue) and the `cancelled` flag:
no locks around llama.cpp, and the HTTP side never waits on it.
"""

from __future__ import annotations

import bisect
import codecs
import ctypes
import heapq
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp as ll
import numpy as np

from serve.grammar import Grammar
from serve.stops import StopFilter

log = logging.getLogger("serve.engine")

KV_TYPES = {"f16": ll.GGML_TYPE_F16, "q8_0": ll.GGML_TYPE_Q8_0, "q4_0": ll.GGML_TYPE_Q4_0}
HARMONY_MARKERS = {"<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|constrain|>", "<think>", "</think>"}
# Control tokens of the tool-call formats (serve/tools/), kept as text for their parsers.
TOOL_MARKERS = {"<tool_call>", "</tool_call>", "<|tool_call|>", "<|python_tag|>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"}
KEPT_MARKERS = frozenset(HARMONY_MARKERS | TOOL_MARKERS)


GGML_LOG_LEVEL_ERROR = 4  # ggml.h; the binding does not export it


@ll.llama_log_callback
def _llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp is chatty at load time; keep its errors only.
    if level == GGML_LOG_LEVEL_ERROR:
        log.error("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


class EngineError(Exception):
    """The model could not be loaded or a context could not be created."""


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


# Events a job receives, in order: Piece*, then exactly one of Finished / Failed.
@dataclass(frozen=True)
class Piece:
    text: str  # may be empty (a token held back as part of a possible stop string or a split UTF-8 char)


@dataclass(frozen=True)
class Finished:
    reason: str  # stop, length, cancelled
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV cells came from the cache (not decoded)
    stop_sequence: str | None = None  # the request's stop string that ended generation, if one did


@dataclass(frozen=True)
class Failed:
    message: str


Event = Piece | Finished | Failed


@dataclass(eq=False)
class Job:
    prompt: list[int]
    params: SamplingParams
    emit: Callable[[Event], None]
    continue_on_end: bool = False  # harmony: <|end|> closes a message, not the turn
    cancelled: bool = False
    created: float = field(default_factory=time.perf_counter)


class Model:
    """The loaded weights and vocabulary; read-only after loading, so tokenizing is safe from any thread."""

    def __init__(self, path: Path, n_gpu_layers: int = 0) -> None:
        ll.llama_log_set(_llama_log, ctypes.c_void_p())
        ll.llama_backend_init()
        params = ll.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self.ptr = ll.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise EngineError(f"llama.cpp could not load {path}")
        self.vocab = ll.llama_model_get_vocab(self.ptr)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
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
        n = ll.llama_tokenize(self.vocab, data, len(data), arr, cap, add_special, True)
        if n < 0:
            arr = (ll.llama_token * -n)()
            n = ll.llama_tokenize(self.vocab, data, len(data), arr, -n, add_special, True)
        return list(arr[:n])

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = ll.llama_token_to_piece(self.vocab, token, buf, 64, 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self.vocab, token, buf, -n, 0, True)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        return self.piece(token).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(ll.llama_vocab_is_eog(self.vocab, token))

    def is_control(self, token: int) -> bool:
        return bool(ll.llama_vocab_is_control(self.vocab, token))

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
    pos: int = 0
    last: int | None = None  # sampled token to decode next
    generated: int = 0
    batch_index: int = -1
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    stops: StopFilter = field(default_factory=lambda: StopFilter(()))


class Engine:
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
    ) -> None:
        self.model = model
        self.n_seq = n_seq
        self.chunk = prompt_chunk
        self.n_batch = prompt_chunk + n_seq
        params = ll.llama_context_default_params()
        params.n_ctx = ctx_per_seq * n_seq
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max = n_seq
        params.kv_unified = False  # each sequence its own KV stream: batching cannot change its attention
        params.n_threads = params.n_threads_batch = threads or os.cpu_count() or 1
        # llama.cpp needs flash attention for a quantized V cache.
        params.flash_attn_type = 1 if flash_attn or kv_type != "f16" else 0
        params.type_k = params.type_v = KV_TYPES[kv_type]
        params.no_perf = True
        self.ctx = ll.llama_init_from_model(model.ptr, params)
        if not self.ctx:
            raise EngineError("llama.cpp could not create a context (out of memory?)")
        self.ctx_per_seq = ll.llama_n_ctx_seq(self.ctx)
        # llama.cpp lowers n_batch to n_ctx (a small --ctx-size); a larger batch would abort the process
        self.n_batch = min(self.n_batch, ll.llama_n_batch(self.ctx), ll.llama_n_ubatch(self.ctx))
        self.chunk = min(self.chunk, self.n_batch - n_seq)
        self.memory = ll.llama_get_memory(self.ctx)
        self.batch = ll.llama_batch_init(self.n_batch, 0, 1)
        self._incoming: deque[Job] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._slots: list[_Slot] = []
        self._thread = threading.Thread(target=self._run, name="llama-engine", daemon=True)

    # -- the request side ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._wake:
            if self._stopping:
                job.emit(Failed("the server is shutting down"))
                return
            self._incoming.append(job)
            self._wake.notify()

    def cancel(self, job: Job) -> None:
        job.cancelled = True
        with self._wake:
            self._wake.notify()

    def stop(self, timeout: float = 10.0) -> None:
        """End every job (running ones finish with `stop`), then free llama.cpp's memory."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive() and self.ctx:
            ll.llama_batch_free(self.batch)
            ll.llama_free(self.ctx)
            self.ctx = None

    @property
    def alive(self) -> bool:
        """False once the thread has died: the server can no longer answer and must say so on /health."""
        return self._thread.is_alive()

    @property
    def active(self) -> int:
        return len(self._slots)

    # -- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        free = list(range(self.n_seq))  # a heap: the lowest free id keeps the running ids in one run
        while True:
            with self._wake:
                while not self._stopping and not self._slots and not self._incoming:
                    self._wake.wait()
                if self._stopping:
                    break
                while self._incoming and free:
                    job = self._incoming.popleft()
                    if job.cancelled:
                        job.emit(Finished("cancelled", len(job.prompt), 0))
                        continue
                    seq = heapq.heappop(free)
                    try:
                        bisect.insort(self._slots, self._open(seq, job), key=lambda s: s.seq)
                    except Exception as err:  # a job llama.cpp refuses fails alone; the engine goes on
                        log.exception("starting a sequence failed")
                        heapq.heappush(free, seq)
                        job.emit(Failed(f"generation failed: {err}"))
            for slot in [s for s in self._slots if s.job.cancelled]:
                heapq.heappush(free, self._close(slot, Finished("cancelled", len(slot.job.prompt), slot.generated)))
            if self._slots:
                try:
                    self._step()
                except Exception as err:  # a failed step ends its jobs with an error; the engine goes on
                    log.exception("decode step failed")
                    for slot in list(self._slots):
                        heapq.heappush(free, self._close(slot, Failed(f"generation failed: {err}")))
            for slot in [s for s in self._slots if s.batch_index == -2]:
                heapq.heappush(free, self._close(slot, None))
        for slot in list(self._slots):
            self._close(slot, Finished("stop", len(slot.job.prompt), slot.generated))
        while self._incoming:
            job = self._incoming.popleft()
            job.emit(Failed("the server is shutting down"))

    def _open(self, seq: int, job: Job) -> _Slot:
        ll.llama_memory_seq_rm(self.memory, seq, -1, -1)
        slot = _Slot(seq, job, self._chain(job.params), deque(job.prompt))
        slot.stops = StopFilter(job.params.stops)
        return slot

    def _close(self, slot: _Slot, event: Event | None) -> int:
        """Free the sequence's KV cells and sampler; the slot's sequence id is reusable at once."""
        ll.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)
        ll.llama_sampler_free(slot.chain)
        self._slots.remove(slot)
        if event is not None:
            slot.job.emit(event)
        return slot.seq

    def _chain(self, p: SamplingParams) -> ll.llama_sampler_p:
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        add = lambda s: ll.llama_sampler_chain_add(chain, s)  # noqa: E731
        if p.grammar is not None:
            add(self._grammar(p.grammar))
        if p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
            # This llama.cpp's signature: (n_vocab, last_n, repeat, freq, present).
            add(ll.llama_sampler_init_penalties(
                self.model.n_vocab, 64, p.repeat_penalty, p.frequency_penalty, p.presence_penalty))
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

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        b, i = self.batch, self.batch.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
        b.seq_id[i][0] = seq
        b.n_tokens = i + 1
        return i

    def _step(self) -> None:
        # Sequences in id order (self._slots is sorted), each with at least one token, and a filler for each
        # free id between running ones: llama.cpp then decodes the step in one pass (see the module's note).
        self.batch.n_tokens = 0
        by_seq = {slot.seq: slot for slot in self._slots}
        ids = range(self._slots[0].seq, self._slots[-1].seq + 1)
        fillers = [seq for seq in ids if seq not in by_seq]
        spare = self.n_batch - len(ids)  # prompt tokens beyond one a sequence (n_batch = chunk + n_seq)
        for seq in ids:
            slot = by_seq.get(seq)
            if slot is None:
                self._add(0, 0, seq, False)
                continue
            slot.batch_index = -1
            if slot.last is not None:
                slot.batch_index = self._add(slot.last, slot.pos, slot.seq, True)
                slot.pos += 1
            elif slot.todo:  # a prompt chunk per step keeps running streams flowing
                take = 1 + min(len(slot.todo) - 1, self.chunk - 1, spare)
                spare -= take - 1
                for k in range(take):
                    last = k == take - 1 and len(slot.todo) == 1
                    idx = self._add(slot.todo.popleft(), slot.pos, slot.seq, last)
                    slot.pos += 1
                    if last:
                        slot.batch_index = idx
        if self.batch.n_tokens == len(fillers):
            return
        try:
            rc = ll.llama_decode(self.ctx, self.batch)
        finally:
            for seq in fillers:
                ll.llama_memory_seq_rm(self.memory, seq, -1, -1)
        if rc != 0:
            raise EngineError(f"llama_decode returned {rc}")
        for slot in list(self._slots):
            if slot.batch_index >= 0:
                self._sample(slot)

    def _sample(self, slot: _Slot) -> None:
        job, model = slot.job, self.model
        p = job.params
        if p.temperature <= 0.0 and p.grammar is None and p.repeat_penalty == 1.0 and not (
            p.presence_penalty or p.frequency_penalty
        ):
            # Plain greedy: an argmax over the logits in place, without building llama.cpp's candidate array
            # of the whole vocabulary (151,936 entries for qwen) for every sequence at every step.
            logits = ll.llama_get_logits_ith(self.ctx, slot.batch_index)
            token = int(np.ctypeslib.as_array(logits, shape=(model.n_vocab,)).argmax())
        else:
            token = ll.llama_sampler_sample(slot.chain, self.ctx, slot.batch_index)
        end_of_message = job.continue_on_end and model.token_text(token) == "<|end|>"
        if model.is_eog(token) and not end_of_message:
            self._finish(slot, "stop")
            return
        slot.generated += 1
        slot.last = token
        raw = model.piece(token)
        if model.is_control(token) and raw.decode("utf-8", "replace") not in KEPT_MARKERS:
            raw = b""  # a stray control token is never text
        text, hit = slot.stops.feed(slot.decoder.decode(raw))
        job.emit(Piece(text))
        if hit:
            self._finish(slot, "stop", flush=False)
        elif slot.generated >= job.params.max_tokens or slot.pos + 1 >= self.ctx_per_seq:
            self._finish(slot, "length")

    def _finish(self, slot: _Slot, reason: str, flush: bool = True) -> None:
        if flush:
            rest = slot.stops.feed(slot.decoder.decode(b"", final=True))[0] + slot.stops.flush()
            if rest:
                slot.job.emit(Piece(rest))
        slot.job.emit(Finished(reason, len(slot.job.prompt), slot.generated, stop_sequence=slot.stops.hit))
        slot.batch_index = -2  # closed by the loop after this step



"""The one thread that owns an embeddings context: pooled vectors for batches of tokenized inputs.

llama.cpp with `embeddings` on outputs every token and pools each sequence (mean, cls or last: the GGUF's
`pooling_type` unless --pooling overrides it); `llama_get_embeddings_seq` then gives one vector a sequence.
Inputs of every running request are packed, in arrival order, into one llama_decode of up to MAX_SEQS sequences
and `n_batch` tokens. Each input lies whole in one batch (a mean over a sequence split across batches would be
wrong), which is why one input may not exceed `max_tokens` (the context). llama.cpp runs the model's output
head over every token of an embeddings batch too, so its compute buffer is about vocabulary x n_batch x 4 bytes:
a context near the inputs' real length (often 512-2048) keeps an embeddings server small. The KV cache is a single unified stream of `n_batch`
cells, so llama.cpp decodes the batch as one micro-batch (with a stream per sequence it cuts batches into
equal-length pieces), and it is cleared after every decode.

A reranker (a GGUF whose pooling is `rank`: a cross-encoder's classifier head on the first token) runs on the same
thread: each input is a query/document pair and its "vector" is the head's n_cls_out scores. llama.cpp's bert
graph adds token type 0 to every token, while a BERT cross-encoder gives the document token type 1: where the
model has a second type row, a job's `segments` say where each input's second segment starts and the batch goes
to llama.cpp as embeddings (token row + type 1 - type 0 from there on; the graph still adds positions and type 0),
read from the GGUF's own token_embd and token_types (SegmentRows). A decoder reranker (Qwen3-Reranker: qwen3 with
rank pooling) is one prompt a pair, its last token scored by a yes/no head and a softmax (`rank_template`,
`rank_softmax`; serve/api/rerank.py builds the prompt).

Requests talk to the thread as they do to the generation engine: `submit(job)`, `job.emit(event)` from the
thread, and the `cancelled` flag, checked before every batch.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import llama_cpp as ll
import numpy as np

from serve.engine.context import EngineError, new_context
from serve.engine.engine import Failed, Model
from serve.engine.jobthread import JobThread

if TYPE_CHECKING:
    from gguf import GGMLQuantizationType  # gguf is imported when a model needs it: it costs a server's start 60 ms

log = logging.getLogger("serve.embeddings")

POOLING = {
    "mean": ll.LLAMA_POOLING_TYPE_MEAN,
    "cls": ll.LLAMA_POOLING_TYPE_CLS,
    "last": ll.LLAMA_POOLING_TYPE_LAST,
    "rank": ll.LLAMA_POOLING_TYPE_RANK,
}
POOLING_NAMES = {v: k for k, v in POOLING.items()}
# Archs whose rank head llama.cpp ends with a softmax (llama-graph.cpp, Qwen3-Reranker's yes/no): the first output
# is a probability, not a logit.
SOFTMAX_RANK_ARCHS = frozenset({"qwen3", "qwen3vl"})
# Sequences in one llama_decode. Small inputs (a sentence or two) are the common case; a higher count only
# grows llama.cpp's per-sequence bookkeeping, the token budget (n_batch) is what bounds memory.
MAX_SEQS = 64


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # (inputs, n_embd) float32, pooled, not normalized
    prompt_tokens: int


@dataclass(frozen=True)
class Stopped(Failed):
    """The server shut down before the job was answered (503: another replica may answer it)."""


SHUTDOWN = Stopped("the server is shutting down")
EmbedEvent = Embedded | Failed


@dataclass(eq=False)
class EmbedJob:
    inputs: list[list[int]]  # token ids, each input at most Embedder.max_tokens long
    emit: Callable[[EmbedEvent], None]  # called once, from the thread
    cancelled: bool = False
    created: float = field(default_factory=time.perf_counter)
    # a reranker's pairs: where each input's second segment (token type 1) starts; None: all type 0
    segments: list[int] | None = None

    def segment(self, i: int) -> int:
        return self.segments[i] if self.segments is not None else len(self.inputs[i])

    def shut_down(self) -> None:
        """Ends a job still waiting when the server stops: it fails with "shutting down" (503)."""
        self.emit(SHUTDOWN)


class SegmentRows:
    """A BERT-style model's input rows for token type 1: its token embeddings plus (type 1 - type 0), read from the
    GGUF (memory-mapped; a quantized token_embd is dequantized a batch's rows at a time)."""

    def __init__(self, token_embd: np.ndarray, token_type: GGMLQuantizationType, delta: np.ndarray) -> None:
        self.token_embd, self.token_type, self.delta = token_embd, token_type, delta

    @classmethod
    def read(cls, path: Path) -> SegmentRows | None:
        """None when the model has fewer than two token types (XLM-R, most embedding models): nothing to add."""
        from gguf import GGUFReader, quants

        reader = GGUFReader(path)
        tensors = {t.name: t for t in reader.tensors}
        types, embd = tensors.get("token_types.weight"), tensors.get("token_embd.weight")
        if types is None or embd is None:
            return None
        rows = quants.dequantize(types.data, types.tensor_type).reshape(-1, int(types.shape[0]))
        if len(rows) < 2:
            return None
        return cls(embd.data, embd.tensor_type, (rows[1] - rows[0]).astype(np.float32))

    def rows(self, tokens: list[int], segment: int) -> np.ndarray:
        """(tokens, n_embd) float32: each token's embedding, the type difference added from `segment` on."""
        from gguf import quants

        out = quants.dequantize(self.token_embd[tokens], self.token_type).reshape(len(tokens), -1)
        out = out.astype(np.float32, copy=True)
        out[segment:] += self.delta
        return out


def take(lengths: Sequence[int], max_seqs: int, max_tokens: int) -> int:
    """How many of the next inputs (their token counts, in order) one llama_decode takes: at least one, then as
    many as keep within both the sequence and the token limit."""
    n = used = 0
    for length in lengths[:max_seqs]:
        if n and used + length > max_tokens:
            break
        n += 1
        used += length
    return n


@dataclass(eq=False)
class _Running:
    job: EmbedJob
    out: np.ndarray
    left: int


class Embedder(JobThread[EmbedJob]):
    """Owns one llama.cpp context with embeddings on; `submit` and `cancel` are safe from any thread."""

    def __init__(
        self,
        model: Model,
        max_tokens: int,
        *,
        pooling: str | None = None,
        threads: int | None = None,
        flash_attn: bool = False,
        kv_type: str = "f16",
        model_type: str = "generic",
        segment_rows: SegmentRows | None = None,
    ) -> None:
        self.model = model
        self.model_type = model_type
        arch = model.meta("general.architecture") or ""
        declared = model.meta(f"{arch}.pooling_type")
        is_ranker = declared is not None and declared.isdigit() and int(declared) == ll.LLAMA_POOLING_TYPE_RANK
        if (pooling == "rank") != is_ranker:
            raise EngineError(
                "the model is a reranker (its GGUF pools with rank): serve it with --rerank"
                if is_ranker
                else "the model is no reranker (its GGUF does not pool with rank, as a converted cross-encoder "
                "such as BertForSequenceClassification does): serve it with --embeddings, or without either flag"
            )
        # llama.cpp sizes its worst-case graph with the batch rounded up to a multiple of the sequences, and
        # mean pooling then asserts unless the batch already is one.
        n_batch = -(-max_tokens // MAX_SEQS) * MAX_SEQS
        self.ctx = new_context(
            model.ptr,
            n_ctx=n_batch,
            n_batch=n_batch,
            n_seq_max=MAX_SEQS,
            kv_unified=True,  # one stream: the batch stays one micro-batch (see the module's note)
            threads=threads,
            flash_attn=flash_attn,
            kv_type=kv_type,
            what="an embeddings context",
            embeddings=True,
            pooling_type=POOLING[pooling] if pooling else ll.LLAMA_POOLING_TYPE_UNSPECIFIED,
        )
        kind = ll.llama_pooling_type(self.ctx)
        if kind not in POOLING_NAMES:
            ll.llama_free(self.ctx)
            self.ctx = None
            raise EngineError(
                "the model declares no pooling llama.cpp can embed with (pooling type "
                f"{kind}); pass --pooling {'|'.join(POOLING)}"
            )
        self.pooling = POOLING_NAMES[kind]
        self.max_tokens = max_tokens  # the longest input
        self.n_batch = ll.llama_n_batch(self.ctx)  # the most tokens in one llama_decode
        # a vector's size: the hidden size, or a reranker's classifier outputs
        self.n_embd = (
            ll.llama_model_n_cls_out(model.ptr) if self.pooling == "rank" else ll.llama_model_n_embd_out(model.ptr)
        )
        # a causal reranker's prompt with {query} and {document} (Qwen3-Reranker: the GGUF's named template)
        self.rank_template = model.meta("tokenizer.chat_template.rerank") if self.pooling == "rank" else None
        self.rank_softmax = self.pooling == "rank" and arch in SOFTMAX_RANK_ARCHS
        self.memory = ll.llama_get_memory(self.ctx)  # NULL for encoder-only models (no KV cache)
        self.batch = ll.llama_batch_init(self.n_batch, 0, 1)
        self.segment_rows = segment_rows
        self.embd_batch = (
            ll.llama_batch_init(self.n_batch, ll.llama_model_n_embd(model.ptr), 1) if segment_rows is not None else None
        )
        super().__init__("llama-embeddings")

    # -- the request side (submit, cancel, alive: JobThread) ---------------------------------------------------

    def _refuse(self, job: EmbedJob) -> None:
        job.emit(SHUTDOWN)

    def stop(self, timeout: float = 10.0) -> None:
        """Fail every job not yet answered, end the thread, free llama.cpp's context."""
        if self._join(timeout) and self.ctx:
            ll.llama_batch_free(self.batch)
            if self.embd_batch is not None:
                ll.llama_batch_free(self.embd_batch)
            ll.llama_free(self.ctx)
            self.ctx = None

    def close(self) -> None:
        self.stop()
        self.model.close()

    # -- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        items: deque[tuple[_Running, int]] = deque()  # (job, input index), in arrival order
        while True:
            with self._wake:
                while not self._stopping and not self._incoming and not items:
                    self._wake.wait()
                if self._stopping:
                    break
                while self._incoming:
                    job = self._incoming.popleft()
                    run = _Running(job, np.empty((len(job.inputs), self.n_embd), np.float32), len(job.inputs))
                    items.extend((run, i) for i in range(len(job.inputs)))
            gone = {run for run, _ in items if run.job.cancelled}
            if gone:
                items = self._drop(items, gone, Failed("cancelled"))
                if not items:
                    continue
            n = take([len(run.job.inputs[i]) for run, i in islice(items, MAX_SEQS)], MAX_SEQS, self.n_batch)
            batch = [items.popleft() for _ in range(n)]
            try:
                pooled = self._decode([run.job.inputs[i] for run, i in batch], [run.job.segment(i) for run, i in batch])
            except Exception as err:  # the batch's jobs fail; the thread goes on
                log.exception("embedding batch failed")
                failed = {run for run, _ in batch}
                items = self._drop(items, failed, Failed(f"embedding failed: {err}"))
                continue
            for (run, i), vector in zip(batch, pooled, strict=True):
                run.out[i] = vector
                run.left -= 1
                if run.left == 0:
                    run.job.emit(Embedded(run.out, sum(len(x) for x in run.job.inputs)))
        self._drop(items, {run for run, _ in items}, SHUTDOWN)
        while self._incoming:
            self._incoming.popleft().emit(SHUTDOWN)

    @staticmethod
    def _drop(items: deque[tuple[_Running, int]], runs: set[_Running], event: Failed) -> deque[tuple[_Running, int]]:
        for run in runs:
            if run.left:  # a job whose every input is done has had its answer already
                run.job.emit(event)
                run.left = 0
        return deque(item for item in items if item[0] not in runs)

    def _decode(self, inputs: list[list[int]], segments: list[int]) -> np.ndarray:
        """One llama_decode over `inputs` as sequences 0..n-1; their pooled vectors, in order."""
        if sum(map(len, inputs)) > self.n_batch:  # never write past the batch's arrays
            raise EngineError(f"an input is longer than {self.max_tokens} tokens")
        two_types = self.segment_rows is not None and any(s < len(t) for t, s in zip(inputs, segments, strict=True))
        b = self.embd_batch if two_types else self.batch
        assert b is not None
        if two_types:
            assert self.segment_rows is not None
            rows = np.concatenate([self.segment_rows.rows(t, s) for t, s in zip(inputs, segments, strict=True)])
            ctypes.memmove(b.embd, rows.ctypes.data, rows.nbytes)
        i = 0
        for seq, tokens in enumerate(inputs):
            for pos, token in enumerate(tokens):
                if not two_types:
                    b.token[i] = token
                b.pos[i], b.n_seq_id[i], b.logits[i] = pos, 1, True
                b.seq_id[i][0] = seq
                i += 1
        b.n_tokens = i
        try:
            rc = ll.llama_decode(self.ctx, b)
            if rc != 0:
                raise EngineError(f"llama_decode returned {rc}")
            out = np.empty((len(inputs), self.n_embd), np.float32)
            for seq in range(len(inputs)):
                ptr = ll.llama_get_embeddings_seq(self.ctx, seq)
                if not ptr:
                    raise EngineError(f"llama.cpp returned no embedding for sequence {seq}")
                out[seq] = np.ctypeslib.as_array(ptr, shape=(self.n_embd,))
            return out
        finally:
            if self.memory:
                ll.llama_memory_clear(self.memory, True)

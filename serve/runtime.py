"""The app's state, built once at startup: the model, the engine thread, admission and metrics.

`Runtime.generate` is the bridge between one request and the engine: it admits the job (or raises QueueFull),
yields the engine's events from the request's own inbox, and on any exit (done, error, client gone)
cancels the sequence and hands its slot to the next waiting request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp as ll

from hearth_common.names import MODEL_TYPES
from hearth_common.paths import cache_dir, mmproj_path
from serve.api.responses_shared import SharedResponses
from serve.api.responses_store import Responses, ResponseStore
from serve.arrivals import Arrivals
from serve.chat.prompts import ChatTemplate, chat_template
from serve.config import ServeConfig
from serve.engine.disk_cache import DiskCache, folder_for, gguf_identity, layout_key
from serve.engine.embedder import Embedder, EmbedJob, SegmentRows
from serve.engine.engine import Engine, Event, Failed, Finished, Job, Model, Piece, SamplingParams
from serve.engine.placement import free_vram, read_shape, resolve
from serve.engine.scheduler import Scheduler
from serve.engine.vision import ImageSpan, Projector, Tokenized
from serve.errors import Loading
from serve.metrics import Metrics

log = logging.getLogger("serve")
embed_log = logging.getLogger("serve.embeddings")

MIB = 1 << 20
CACHE_RAM_MAX = 8192 * MIB  # llama.cpp's server default for --cache-ram
CACHE_DISK_DEFAULT = 4096 * MIB  # --cache-disk's default, at most a tenth of the free space (see cache_disk_bytes)


def available_ram() -> int:
    """Bytes of RAM the kernel could give us now (MemAvailable), or the free pages where that is unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def cache_ram_bytes(mib: int | None) -> int:
    """--cache-ram in bytes: as given, or an eighth of the available RAM (several servers share a machine)."""
    if mib is not None:
        return mib * MIB
    return min(CACHE_RAM_MAX, available_ram() // 8)


def kv_dir() -> Path:
    """Where the disk tier keeps each model's saved states: $HEARTH_CACHE/kv, else the user's cache directory."""
    return cache_dir() / "kv"


def cache_disk_bytes(mib: int | None, folder: Path) -> int:
    """--cache-disk in bytes: as given, or CACHE_DISK_DEFAULT but at most a tenth of the free space under `folder`
    (its nearest existing parent)."""
    if mib is not None:
        return mib * MIB
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = os.statvfs(probe).f_bavail * os.statvfs(probe).f_frsize
    except OSError:
        return 0
    return min(CACHE_DISK_DEFAULT, free // 10)


@dataclass
class Loaded:
    model: Model
    engine: Engine
    template: ChatTemplate
    model_type: str
    projector: Projector | None = None  # images (--mmproj, or NAME.mmproj.gguf beside the model)

    @property
    def vision(self) -> bool:
        return self.projector is not None


@dataclass
class Runtime:
    config: ServeConfig
    model_path: Path
    model_name: str
    scheduler: Scheduler[Job | EmbedJob]  # an embeddings server's queue holds EmbedJobs, any other's Jobs
    metrics: Metrics = field(default_factory=Metrics)  # create() labels it with the model's name
    loaded: Loaded | None = None
    load_error: str | None = None
    stopping: bool = False  # drain() has begun: /health answers 503 so routers send nothing more
    embedder: Embedder | None = None  # an --embeddings server's, instead of `loaded`
    arrivals: Arrivals = field(default_factory=Arrivals)  # generation requests on their way to admission
    responses: Responses = field(default_factory=ResponseStore)  # /v1/responses' previous_response_id
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def create(cls, config: ServeConfig, model_path: Path, default_name: str | None = None) -> Runtime:
        name = config.model_name or default_name or model_path.stem
        runtime = cls(config, model_path, name, Scheduler(config.max_concurrent, config.max_queue), Metrics(name))
        if config.shared_state is not None:  # stored responses for every server of the cluster
            runtime.responses = SharedResponses(
                config.shared_state,
                config.shared_state_password,
                config.responses_ttl,
                config.responses_shared_bytes,
            )
        return runtime

    # -- loading (in a worker thread, so /health answers 503 meanwhile) ----------------------------------------

    def _open_model(self, kv_tokens: int, logger: logging.Logger) -> Model:
        """The model with as many layers on the GPU as the settings (or, `auto`, the free VRAM beside a KV cache
        of `kv_tokens` cells) allow."""
        c = self.config
        gpu = bool(ll.llama_supports_gpu_offload())
        measure = gpu and c.device_map == "auto" and c.n_gpu_layers is None
        shape = read_shape(str(self.model_path)) if measure else None
        vram = free_vram() if measure else None
        placement = resolve(c.device_map, c.n_gpu_layers, gpu, shape, vram, kv_tokens, c.kv_type)
        logger.info("placement: %s", placement.reason)
        return Model(self.model_path, placement.n_gpu_layers)

    def load(self) -> Loaded:
        c = self.config
        # Every sequence has its own KV cache, so the KV budget is the context times the sequences.
        model = self._open_model(c.ctx_size * c.max_concurrent, log)
        arch = model.meta("general.architecture") or "generic"
        model_type = c.model_type or MODEL_TYPES.get(arch, "generic")
        bos = model.token_text(ll.llama_vocab_bos(model.vocab)) if ll.llama_vocab_bos(model.vocab) >= 0 else ""
        eos = model.token_text(ll.llama_vocab_eos(model.vocab)) if ll.llama_vocab_eos(model.vocab) >= 0 else ""
        template = chat_template(
            model.meta("tokenizer.chat_template"), "gpt-oss" if model_type == "gpt-oss" else arch, bos, eos
        )
        ctx = min(c.ctx_size, model.n_ctx_train or c.ctx_size)
        projector = self._projector(model)
        disk = self._disk_cache(model, ctx)
        engine = Engine(
            model,
            c.max_concurrent,
            ctx,
            prompt_chunk=c.prompt_chunk,
            threads=c.threads,
            flash_attn=c.use_flash_attn,
            kv_type=c.kv_type,
            cache_ram=cache_ram_bytes(c.cache_ram),
            swa_full=c.swa_full,
            dispatch=self._dispatch,
            arriving=lambda: self.arrivals.count,
            disk=disk,
            projector=projector,
            min_batch=projector.tokens_per_image() if projector is not None else 0,
        )
        engine.start()
        tools = template.tool_support
        log.info(
            "loaded %s (%s, %s format, %s tool calls), %d sequences x %d tokens, prompt cache in RAM up to %d MiB, "
            "on disk up to %d MiB",
            self.model_name,
            model_type,
            template.format.value,
            tools.format.value if tools.native else "generic",
            c.max_concurrent,
            engine.ctx_per_seq,
            engine.host.capacity // MIB if engine.host is not None else 0,
            engine.disk.capacity // MIB if engine.disk is not None else 0,
        )
        return Loaded(model, engine, template, model_type, projector)

    def _projector(self, model: Model) -> Projector | None:
        """--mmproj, else NAME.mmproj.gguf beside the model when there is one (raises EngineError when llama.cpp
        cannot open it for this model)."""
        path = self.config.mmproj or mmproj_path(self.model_path)
        if self.config.mmproj is None and not path.is_file():
            return None
        c = self.config
        projector = Projector(path, model.ptr, c.threads, use_gpu=model.n_gpu_layers > 0, flash_attn=c.use_flash_attn)
        log.info("images: %s (%d tokens an image)", path.name, projector.tokens_per_image())
        return projector

    def _disk_cache(self, model: Model, ctx: int) -> DiskCache | None:
        """The disk tier of this model and layout (None when off or its folder cannot be made: the server goes on
        without it)."""
        c = self.config
        root = kv_dir()
        capacity = cache_disk_bytes(c.cache_disk, root)
        if capacity <= 0:
            return None
        layout = {
            "ctx_per_seq": ctx,
            "kv_type": c.kv_type,
            "flash_attn": c.use_flash_attn or c.kv_type != "f16",  # V is stored transposed without it
            "swa_full": c.swa_full,
            "llama_cpp": ll.__version__,  # the state format is llama.cpp's own
        }
        try:
            key = layout_key(gguf_identity(self.model_path), layout)
            return DiskCache(
                folder_for(root, self.model_name, key),
                key,
                capacity,
                int(ll.llama_model_n_swa(model.ptr)),
                observer=self.metrics,
            )
        except OSError as err:
            log.warning("KV cache on disk off: %s", err)
            return None

    def load_embedder(self) -> Embedder:
        """Load the model and start its embeddings thread (--embeddings, or --rerank: the same thread with the
        GGUF's rank pooling and, for a two-token-type model, the document's type rows). Raises EngineError."""
        c = self.config
        # One unified KV stream of ctx_size cells, whatever the number of sequences.
        model = self._open_model(c.ctx_size, embed_log)
        try:
            arch = model.meta("general.architecture") or "generic"
            embedder = Embedder(
                model,
                min(c.ctx_size, model.n_ctx_train or c.ctx_size),
                pooling="rank" if c.rerank else c.pooling,
                threads=c.threads,
                flash_attn=c.use_flash_attn,
                kv_type=c.kv_type,
                model_type=c.model_type or MODEL_TYPES.get(arch, "generic"),
                segment_rows=SegmentRows.read(self.model_path) if c.rerank else None,
            )
        except Exception:
            model.close()
            raise
        embedder.start()
        embed_log.info(
            "loaded %s for embeddings: %s pooling, %d dimensions, inputs up to %d tokens",
            self.model_path.name,
            embedder.pooling,
            embedder.n_embd,
            embedder.max_tokens,
        )
        return embedder

    def drain(self) -> None:
        """Shutdown, first step: running streams end now (cleanly, [DONE] and all); what has not been answered
        whole, and every waiter, fails with "shutting down" (503 with Retry-After); /health says so from now on."""
        self.stopping = True
        if self.embedder:
            self.embedder.stop()
        elif self.loaded:
            self.loaded.engine.stop()
        for job in list(self.scheduler.waiting):
            job.shut_down()

    def close(self) -> None:
        if self.loaded:
            self.loaded.engine.stop()
            if self.loaded.projector is not None and not self.loaded.engine.encoding:  # else still in use
                self.loaded.projector.close()
            self.loaded.model.close()
            self.loaded = None
        if self.embedder:
            self.embedder.close()
            self.embedder = None

    # -- one request ---------------------------------------------------------------------------------------

    def require_loaded(self) -> Loaded:
        """The loaded chat model, or Loading (503) while it loads or after it failed: every request's one check."""
        if self.loaded is None:
            raise self._not_ready()
        return self.loaded

    @property
    def vision(self) -> bool:
        """Whether the loaded chat model takes images."""
        return self.loaded is not None and self.loaded.vision

    def require_embedder(self) -> Embedder:
        """The embeddings model, checked as `require_loaded` checks the chat model."""
        if self.embedder is None:
            raise self._not_ready()
        return self.embedder

    def _not_ready(self) -> Loading:
        return Loading("the model is still loading" if not self.load_error else "the model failed to load")

    def tokenize_prompt(self, prompt: str) -> list[int]:
        assert self.loaded
        bos = self.loaded.template.bos_token
        # A template that writes the BOS itself must not get a second one.
        return self.loaded.model.tokenize(prompt, add_special=not (bos and prompt.startswith(bos)))

    def tokenize_with_images(self, prompt: str, images: list[bytes]) -> Tokenized:
        """The prompt's ids and its images' spans (the prompt holds IMAGE_MARKER once per image)."""
        assert self.loaded and self.loaded.projector is not None
        bos = self.loaded.template.bos_token
        return self.loaded.projector.tokenize(prompt, images, add_special=not (bos and prompt.startswith(bos)))

    def start(self, prompt: list[int], params: SamplingParams, images: tuple[ImageSpan, ...] = ()) -> Run:
        """Admit a generation: it starts at once or waits in the queue (raises QueueFull when that is full).
        Read its events with `run.events()`; its slot is released when the engine ends it, whether or not anyone
        reads them (a client can vanish before its response body ever starts)."""
        assert self.loaded
        self.arrivals.settle()  # admitted (or refused below): no longer on its way
        inbox = Inbox()
        job = self._job(prompt, params, inbox)
        job.images = images
        if self.scheduler.submit(job):
            self.loaded.engine.submit(job)
        self.gauges()
        return Run(self, job, inbox)

    def _job(self, prompt: list[int], params: SamplingParams, inbox: Inbox) -> Job:
        assert self.loaded
        loop = self._loop = asyncio.get_running_loop()
        job: Job

        def deliver(event: Event) -> None:
            inbox.put(event)
            if isinstance(event, Finished | Failed):
                self._release(job)

        def emit(event: Event) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody is listening
                loop.call_soon_threadsafe(deliver, event)

        template = self.loaded.template
        job = Job(prompt, params, emit, continue_on=template.message_end, keep=template.kept_tokens, deliver=deliver)
        return job

    def _dispatch(self, events: list[tuple[Job, Event]]) -> None:
        """From the engine thread: one step's events for every job, in one hop to the event loop (one wake-up
        per step instead of one per token)."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody is listening
            self._loop.call_soon_threadsafe(_deliver_all, events)

    async def _events(self, job: Job, inbox: Inbox) -> AsyncGenerator[Event, None]:
        """The job's events until Finished or Failed; leaving early cancels the job."""
        assert self.loaded
        engine = self.loaded.engine
        first: float | None = None
        last = 0.0  # when the previous token arrived
        done = False
        try:
            while True:
                event = await inbox.get()
                now = time.perf_counter()
                if first is None:
                    first = now
                    self.metrics.ttft.observe(first - job.created)
                elif isinstance(event, Piece):
                    self.metrics.itl.observe(now - last)
                last = now
                if isinstance(event, Finished | Failed):
                    done = True
                    self.metrics.e2e.observe(now - job.created)
                    if isinstance(event, Finished):
                        self.metrics.prompt_tokens.inc(event.prompt_tokens)
                        self.metrics.cached_prompt_tokens.inc(event.cached_tokens)
                        if engine.host is not None:
                            self.metrics.cache_ram.set(engine.host.used)
                    if isinstance(event, Finished) and event.completion_tokens:
                        self.metrics.tokens.inc(event.completion_tokens)
                        if now > first:
                            self.metrics.tps.observe(event.completion_tokens / (now - first))
                yield event
                if done:
                    return
        finally:
            if not done:
                engine.cancel(job)  # a running job ends within one step and is released then
                if job in self.scheduler.waiting:
                    self._release(job)

    def _release(self, job: Job) -> None:
        assert self.loaded
        for nxt in self.scheduler.release(job, time.perf_counter() - job.created):
            assert isinstance(nxt, Job)
            self.loaded.engine.submit(nxt)
        self.gauges()

    def gauges(self) -> None:
        """The queue's gauges in /metrics, after any admission or release."""
        self.metrics.waiting.set(len(self.scheduler.waiting))
        self.metrics.running.set(len(self.scheduler.running))


@dataclass(eq=False)
class Run:
    """An admitted generation (Runtime.start)."""

    runtime: Runtime
    job: Job
    inbox: Inbox

    def events(self) -> AsyncGenerator[Event, None]:
        """The engine's events until Finished or Failed, read once; leaving early cancels the generation."""
        return self.runtime._events(self.job, self.inbox)


class Inbox:
    """One job's events on the event loop: the engine's hand-off puts, the request's one reader gets. Lighter
    than an asyncio.Queue (no task accounting, no list of getters), as it runs for every token."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, event: Event) -> None:
        self._items.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Event:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


def _deliver_all(events: list[tuple[Job, Event]]) -> None:
    for job, event in events:
        (job.deliver or job.emit)(event)

"""The image encoder's own thread: the vision tower runs here, beside the engine thread's steps.

mtmd's encoder (a clip context with its own ggml backend and scheduler) shares nothing with the text context, so
mtmd_encode_chunk may run while the engine thread is inside llama_decode (ctypes releases the GIL around both).
It writes its output into the mtmd context (mtmd_get_output_embd reads it back), so one thread encodes, one image
at a time, and copies the embeddings out before the next (`Projector.encode`).

The engine submits an `Encoding` per image when its job opens and reads `done` between steps; `on_done` (the
engine's wake-up) runs after each one. An encoding cancelled before its turn (the client left) is skipped; one
under way finishes and is dropped. `stop` ends the thread after the image under way, if any.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from serve.engine.context import EngineError
from serve.engine.jobthread import JobThread
from serve.engine.vision import ImageSpan, Projector

log = logging.getLogger("serve.engine")

# The encoder thread's nice value (Linux: a thread's own, inherited by the ggml workers it starts for each graph):
# on CPU the vision tower and the running streams' decode want the same cores, and a stream that stalls while a
# picture encodes is what users notice. Niced, the tower takes what the decode leaves, and every core when no stream
# runs (bench/vision.py: text streams beside image requests kept 0.41 of their rate without it).
ENCODER_NICE = 10


def lower_priority(nice: int = ENCODER_NICE) -> None:
    """This thread (and the threads it starts) yields the CPU to the rest of the process: `nice` more than the
    process's own; not where unsupported."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + nice, 19))
    except (OSError, AttributeError):  # no setpriority (not Linux), or not allowed
        log.debug("the image encoder runs at normal priority")


@dataclass(eq=False)
class Encoding:
    """One image to encode; `embd` or `error` once `done`."""

    span: ImageSpan
    cancelled: bool = False
    done: bool = False
    embd: np.ndarray | None = field(default=None, repr=False)
    error: str | None = None


class ImageEncoder(JobThread[Encoding]):
    def __init__(self, projector: Projector, on_done: Callable[[], None]) -> None:
        self.projector = projector
        self._on_done = on_done
        super().__init__("image-encoder")

    def _refuse(self, job: Encoding) -> None:
        self._finish(job, None, "the server is shutting down")

    def _finish(self, job: Encoding, embd: np.ndarray | None, error: str | None) -> None:
        job.embd, job.error, job.done = embd, error, True
        self._on_done()

    def _run(self) -> None:
        lower_priority()
        while True:
            with self._wake:
                while not self._stopping and not self._incoming:
                    self._wake.wait()
                if self._stopping:
                    break
                job = self._incoming.popleft()
            if job.cancelled:
                self._finish(job, None, "cancelled")
                continue
            try:
                self._finish(job, self.projector.encode(job.span), None)
            except EngineError as err:
                self._finish(job, None, str(err))
            except Exception as err:  # an image that fails fails its request alone; the thread goes on
                log.exception("encoding an image failed")
                self._finish(job, None, f"encoding the image failed: {err}")
        while self._incoming:
            self._refuse(self._incoming.popleft())

    def stop(self, timeout: float = 30.0) -> bool:
        """End the thread after the image under way; True once it has (the projector may then be freed)."""
        return self._join(timeout)

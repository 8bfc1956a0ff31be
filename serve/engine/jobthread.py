"""The request side of a thread that owns a llama.cpp context (the generation engine, the embedder).

Requests hand jobs over with `submit` and flag them with `cancel`; the thread waits on `_wake` for work, takes
jobs from `_incoming` and ends when `_stopping` is set. A subclass writes `_run` (the thread's loop) and `_refuse`
(the event a job submitted after the stop gets), and frees its context after `_join`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import deque
from typing import Generic, Protocol, TypeVar


class Cancellable(Protocol):
    cancelled: bool


J = TypeVar("J", bound=Cancellable)


class JobThread(ABC, Generic[J]):
    def __init__(self, name: str) -> None:
        self._incoming: deque[J] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @abstractmethod
    def _run(self) -> None: ...

    @abstractmethod
    def _refuse(self, job: J) -> None:
        """End a job that came after the stop."""

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: J) -> None:
        with self._wake:
            if self._stopping:
                self._refuse(job)
                return
            self._incoming.append(job)
            self._wake.notify()

    def cancel(self, job: J) -> None:
        job.cancelled = True
        with self._wake:
            self._wake.notify()

    def _join(self, timeout: float) -> bool:
        """Tell the thread to end and wait for it; True once it has (its context may then be freed)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        """False once the thread has died: the server can no longer answer and must say so on /health."""
        return self._thread.is_alive()

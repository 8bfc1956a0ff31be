"""Admission: a running set of at most `max_concurrent` jobs and a bounded FIFO queue behind it.

Pure bookkeeping, used only from the event loop: it decides, the engine decodes. A job is any hashable handle
(a server queues one kind: the engine's Jobs, or the embedder's EmbedJobs).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from serve.errors import QueueFull

J = TypeVar("J", bound=Hashable)


@dataclass
class Scheduler(Generic[J]):
    max_concurrent: int
    max_queue: int
    running: set[J] = field(default_factory=set)
    waiting: deque[J] = field(default_factory=deque)
    completed: int = 0
    rejected: int = 0
    mean_seconds: float = 2.0  # moving average of a job's duration, for Retry-After

    def submit(self, job: J) -> bool:
        """True: start it now. False: it waits its turn. Raises QueueFull when the queue is full."""
        if len(self.running) < self.max_concurrent and not self.waiting:
            self.running.add(job)
            return True
        if len(self.waiting) >= self.max_queue:
            self.rejected += 1
            raise QueueFull(
                f"the server is busy: {len(self.running)} running, {len(self.waiting)} waiting; retry later",
                retry_after=self.retry_after(),
            )
        self.waiting.append(job)
        return False

    def release(self, job: J, seconds: float | None = None) -> list[J]:
        """The job finished or was cancelled (running or waiting); returns the jobs that start now."""
        if job in self.running:
            self.running.discard(job)
            self.completed += 1
            if seconds is not None:
                self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds
        elif job in self.waiting:
            self.waiting.remove(job)
        started: list[J] = []
        while self.waiting and len(self.running) < self.max_concurrent:
            nxt = self.waiting.popleft()
            self.running.add(nxt)
            started.append(nxt)
        return started

    def retry_after(self) -> int:
        """Seconds until a queue place is likely free: the queue drains max_concurrent jobs per job time."""
        rounds = (len(self.waiting) + 1) / self.max_concurrent
        return max(1, math.ceil(rounds * self.mean_seconds))

    def status(self) -> dict[str, int]:
        return {
            "active": len(self.running),
            "waiting": len(self.waiting),
            "max_concurrent": self.max_concurrent,
            "max_queue": self.max_queue,
            "completed": self.completed,
            "rejected": self.rejected,
        }

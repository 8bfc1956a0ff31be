"""Admission decisions: FIFO order, 429 exactly past the queue, cancelled waiters leave the queue."""

from __future__ import annotations

import pytest

from serve.engine.scheduler import Scheduler
from serve.errors import QueueFull


def test_fifo_and_reject() -> None:
    s = Scheduler(max_concurrent=2, max_queue=2)
    assert [s.submit(j) for j in "abcd"] == [True, True, False, False]
    with pytest.raises(QueueFull) as err:
        s.submit("e")
    assert err.value.status == 429 and err.value.retry_after >= 1
    assert s.status() == {"active": 2, "waiting": 2, "max_concurrent": 2, "max_queue": 2, "completed": 0, "rejected": 1}
    assert s.release("a") == ["c"]
    assert s.release("d") == []  # a waiter that left: no slot freed, no one starts
    assert s.release("b") == []
    assert s.status()["active"] == 1 and s.status()["completed"] == 2
    assert s.release("c") == []
    assert s.status()["active"] == 0


def test_no_overtaking() -> None:
    s = Scheduler(max_concurrent=1, max_queue=5)
    s.submit(1)
    s.submit(2)
    s.submit(3)
    assert s.release(1) == [2]
    assert s.submit(4) is False  # a slot is busy and others wait: the newcomer queues
    assert s.release(2) == [3]
    assert s.release(3) == [4]


def test_zero_queue() -> None:
    s = Scheduler(max_concurrent=1, max_queue=0)
    assert s.submit("a")
    with pytest.raises(QueueFull):
        s.submit("b")

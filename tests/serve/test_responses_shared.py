"""Stored responses in the shared state (serve/api/responses_shared.py) against a real redis-server
(testkit/redis.py): two stores stand for two model servers. The real processes, through two routers, are in
tests/e2e/test_shared_responses.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from serve.api.responses_shared import SharedResponses
from serve.api.responses_store import ResponseStore
from testkit.redis import RedisServer, redis_missing

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(redis_missing() is not None, reason=str(redis_missing()))]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def turn(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}, {"role": "assistant", "content": text.upper()}]


async def test_a_response_kept_by_one_server_is_found_by_another(redis: RedisServer) -> None:
    one, two = (SharedResponses(redis.url, None, 60, 2**20) for _ in range(2))
    try:
        await one.save("resp_a", turn("hello"))
        assert await two.fetch("resp_a") == turn("hello")
        assert await two.fetch("resp_missing") is None
        assert len(two.local) == 1  # found once in Redis, then held here too
    finally:
        await one.close()
        await two.close()


async def test_the_shared_responses_keep_within_their_byte_bound_oldest_first(redis: RedisServer) -> None:
    size = len(json.dumps(turn("x" * 100)).encode())
    store = SharedResponses(redis.url, None, 60, 3 * size, local=ResponseStore(max_items=0))  # Redis only
    try:
        for i in range(5):
            await store.save(f"resp_{i}", turn(chr(ord("a") + i) * 100))
        held = [i for i in range(5) if await store.fetch(f"resp_{i}") is not None]
        assert held == [2, 3, 4]
        assert int(await store.link.redis.get("hearth:responses:bytes")) == 3 * size
        await store.save("resp_big", turn("y" * 4 * size))  # larger than the bound: not kept there
        assert await store.fetch("resp_big") is None
        assert await store.fetch("resp_4") is not None
        ttl = await store.link.redis.ttl("hearth:response:resp_4")
        assert 0 < ttl <= 60
    finally:
        await store.close()


async def test_without_redis_a_server_keeps_its_own_and_says_so_once(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = SharedResponses(redis.url, None, 60, 2**20)
    try:
        await store.save("resp_a", turn("before"))
        redis.stop()
        with caplog.at_level(logging.WARNING, logger="serve.responses"):
            await store.save("resp_b", turn("during"))
            assert await store.fetch("resp_b") == turn("during")  # its own memory
            assert await store.fetch("resp_elsewhere") is None  # another server's: the API's 404
            assert await store.fetch("resp_other") is None
        warned = [r.message for r in caplog.records if r.levelno >= logging.WARNING]  # ("is up" may come first)
        assert len(warned) == 1 and "unreachable" in warned[0]  # four calls failed; the log says so once
        assert not store.link.up
    finally:
        await store.close()

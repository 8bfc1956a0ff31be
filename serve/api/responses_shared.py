"""Stored responses in the shared state (`--shared-state redis://...`), so that `previous_response_id` works on every
model server of a cluster: whichever router replica answers, on whichever node the model runs, after the server that
answered first was unloaded or died.

Why the servers and not the routers: the conversation is what a continuation needs, and only a server has it. A
router that only remembered which server made a response could send the continuation there, but that server loses
its responses when it is unloaded (a ttl, an eviction), restarts or dies with its node, and a model on several nodes
has several servers; a response kept in Redis outlives all of these, and any server of the model can continue it.

Each response is written once, before its answer ends (a continuation sent the moment the answer arrives finds it),
and read only when this server does not hold it (serve/api/responses_store.py, the local copy, comes first).
Bounds: each response lives `ttl` seconds; the responses together hold at most `max_bytes` (the oldest go first; a
larger one is not kept there), both kept by one Lua script, atomically, whatever the number of servers. Keys:

    hearth:response:ID         the conversation (JSON), expiring after ttl
    hearth:responses           zset  id -> when written
    hearth:responses:sizes     hash  id -> bytes
    hearth:responses:bytes     the bytes of all of them

Redis down: the server keeps and finds responses in its own memory only, as without Redis; the log says so once
(hearth_common.redis_link), and a continuation whose response this server lacks gets the API's own 404.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from hearth_common.redis_link import RedisLink
from serve.api.responses_store import Messages, ResponseStore

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("serve.responses")

PREFIX = "hearth:response:"
INDEX, SIZES, TOTAL = "hearth:responses", "hearth:responses:sizes", "hearth:responses:bytes"
SWEEP = 100  # expired responses one write forgets at most (the rest at the next writes)

# KEYS: INDEX, SIZES, TOTAL; ARGV: id, conversation, ttl (whole seconds), now, max bytes, PREFIX, SWEEP
PUT = """
local function drop(id)
  local size = tonumber(redis.call('HGET', KEYS[2], id) or '0')
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', ARGV[6] .. id)
  return tonumber(redis.call('DECRBY', KEYS[3], size))
end
local ttl, now, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - ttl, 'LIMIT', 0, tonumber(ARGV[7]))) do drop(id) end
local total = drop(ARGV[1])
local size = string.len(ARGV[2])
redis.call('SET', ARGV[6] .. ARGV[1], ARGV[2], 'EX', ttl)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], size)
total = tonumber(redis.call('INCRBY', KEYS[3], size))
while total > budget do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if not oldest then break end
  total = drop(oldest)
end
return total
"""


class SharedResponses:
    """Responses (responses_store.py) with Redis behind the local copy."""

    def __init__(
        self, url: str, password: str | None, ttl: float, max_bytes: int, local: ResponseStore | None = None
    ) -> None:
        self.local = local if local is not None else ResponseStore()  # an empty one is falsy
        self.link = RedisLink(url, password, log, "shared state (stored responses)")
        self.ttl = max(math.ceil(ttl), 1)
        self.max_bytes = max_bytes
        self._put = self.link.redis.register_script(PUT)

    @property
    def where(self) -> str:
        return f"in the shared state for {self.ttl} s, and the last {self.local.max_items} in this server's memory"

    async def save(self, response_id: str, messages: Messages) -> None:
        self.local.put(response_id, messages)
        text = json.dumps(messages)
        if len(text.encode()) > self.max_bytes:
            return

        async def write(_: aioredis.Redis) -> Any:
            args: list[str | int | float] = [response_id, text, self.ttl, time.time(), self.max_bytes, PREFIX, SWEEP]
            return await self._put(keys=[INDEX, SIZES, TOTAL], args=args)

        await self.link.call(write)

    async def fetch(self, response_id: str) -> Messages | None:
        held = self.local.get(response_id)
        if held is not None:
            return held
        raw = await self.link.call(lambda r: r.get(PREFIX + response_id))
        if raw is None:
            return None
        try:
            messages = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(messages, list):
            return None
        self.local.put(response_id, messages)
        return messages

    async def close(self) -> None:
        await self.link.close()

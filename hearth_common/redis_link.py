"""One Redis connection that is either up or down, for the state our processes share (`--shared-state`): the
routers' (route/shared/store.py) and the model servers' stored responses (serve/api/responses_shared.py).

Every call has a short timeout and no retry (a down Redis costs one timeout, not several): a failure marks the link
down, said once in the log, and returns None; the next success marks it up again, also said once. The URL never
holds the password (the command line shows it to every user): it comes from a file or the environment.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import redis.asyncio as aioredis

T = TypeVar("T")
TIMEOUT = 0.25  # seconds one Redis call may take; on loopback or a LAN one takes well under a millisecond


def check_url(value: str, password_from: str) -> str:
    """`value` if it is redis://HOST:PORT/DB (or rediss://) without a password; `password_from`: where the password
    goes instead (named in the error)."""
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("must be redis://HOST:PORT/DB (or rediss://)")
    if parts.password is not None:
        raise ValueError(f"holds a password, which the command line shows to every user: give it in {password_from}")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"database {db!r} is not a number")
    return value


class RedisLink:
    def __init__(
        self,
        url: str,
        password: str | None,
        log: logging.Logger,
        what: str = "shared state",
        on_up: Callable[[bool], None] | None = None,
    ) -> None:
        """`what`: how the log names it; `on_up`: told of every call's outcome (a gauge)."""
        self.url = url
        self.up = False
        self._log = log
        self._what = what
        self._said: bool | None = None  # what the log last said: up or down
        self._on_up = on_up
        # imported here: a model server without --shared-state would pay 40-70 ms of its start for them
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self._failures = (RedisError, OSError, TimeoutError)
        self.redis = aioredis.Redis.from_url(
            url,
            password=password,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )

    def _mark(self, up: bool, why: str = "") -> None:
        self.up = up
        if self._on_up is not None:
            self._on_up(up)
        if self._said is up:
            return
        self._said = up
        if up:
            self._log.info("%s at %s is up", self._what, self.url)
        else:
            self._log.warning(
                "%s at %s is unreachable (%s): going on with what this process holds", self._what, self.url, why
            )

    async def call(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T | None:
        """fn's result, or None when Redis failed (marked down)."""
        try:
            result = await fn(self.redis)
        except self._failures as exc:
            self._mark(False, f"{type(exc).__name__}: {exc}")
            return None
        self._mark(True)
        return result

    async def close(self) -> None:
        await self.redis.aclose()

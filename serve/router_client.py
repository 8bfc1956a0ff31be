"""Joining and leaving a router (API.md's /backends/register and /backends/unregister)."""

from __future__ import annotations

import logging

from hearth_common.capabilities import Capability
from hearth_common.registration import registration
from serve.config import ServeConfig

log = logging.getLogger("serve")


class RouterClient:
    def __init__(self, config: ServeConfig) -> None:
        assert config.router
        self.base = config.router.rstrip("/")
        host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
        self.url = config.advertise_url or f"http://{host}:{config.port}"
        self.headers = {"Authorization": f"Bearer {config.router_key}"} if config.router_key else {}

    async def _post(self, path: str, body: dict[str, object]) -> bool:
        import aiohttp  # here, not at the top: only a server started with --router needs it

        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.post(self.base + path, json=body, headers=self.headers) as response,
            ):
                if response.status >= 400:
                    log.error("router %s%s answered %d: %s", self.base, path, response.status, await response.text())
                    return False
                return True
        except (aiohttp.ClientError, TimeoutError) as err:
            log.error("router %s unreachable: %s", self.base, err)
            return False

    async def register(
        self, name: str, model_type: str, aliases: tuple[str, ...] = (), capabilities: list[Capability] | None = None
    ) -> bool:
        body = registration(name, self.url, model_type, [name, *aliases], capabilities=capabilities)
        ok = await self._post("/backends/register", body)
        if ok:
            log.info("registered with %s as %s (%s)", self.base, name, self.url)
        return ok

    async def unregister(self, name: str) -> bool:
        return await self._post("/backends/unregister", {"name": name})

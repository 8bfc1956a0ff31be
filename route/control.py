"""The router's side of the supervisor's control channel (stack/control.py): start, stop, list and ready, over
loopback, with the per-run key from the catalog. The supervisor only executes; route/ondemand.py decides."""

from __future__ import annotations

from typing import Any

import aiohttp


class ControlError(Exception):
    """The supervisor refused, failed, or could not be reached; one line."""


class Control:
    """The router's side of the supervisor's control channel (stack/control.py)."""

    def __init__(self, url: str, key: str, load_timeout: float) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {key}"}
        self._session = aiohttp.ClientSession()
        self._load_timeout = load_timeout

    async def _call(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        try:
            async with self._session.request(
                method, self._url + path, json=body, headers=self._headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                data = await resp.json(content_type=None)
                if resp.status != 200:
                    message = data.get("error") if isinstance(data, dict) else None
                    raise ControlError(str(message or f"the supervisor answered {resp.status}"))
                return data if isinstance(data, dict) else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ControlError(f"the supervisor did not answer: {type(exc).__name__}: {exc}") from None

    async def models(self) -> dict[str, Any]:
        return (await self._call("GET", "/models", None, 30)).get("models", {})

    async def models_once(self) -> dict[str, Any]:
        """GET /models on a session of its own (a one-off check, as at a node's registration)."""
        try:
            return await self.models()
        finally:
            await self.close()

    async def start(self, name: str, layers: int, why: str) -> int:
        # The supervisor bounds the start itself (its load timeout); this only guards against a lost answer.
        body = {"model": name, "layers": layers, "why": why}
        data = await self._call("POST", "/start", body, self._load_timeout + 60)
        return int(data.get("layers", layers))

    async def stop(self, name: str, why: str) -> None:
        await self._call("POST", "/stop", {"model": name, "why": why}, 120)

    async def ready(self, notes: list[str]) -> None:
        await self._call("POST", "/ready", {"notes": notes}, 30)

    async def close(self) -> None:
        await self._session.close()

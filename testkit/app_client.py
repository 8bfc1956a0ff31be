"""In-process serve apps (Quart's test client): the wait until the model has loaded."""

from __future__ import annotations

import asyncio
from typing import Any


async def healthy(client: Any, seconds: float = 10.0) -> None:
    """Until /health answers 200 (the model loaded), or AssertionError after `seconds`."""
    for _ in range(int(seconds / 0.02)):
        if (await client.get("/health")).status_code == 200:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the server never became healthy")

"""Remote image URLs: fetched only from the hosts the operator names (`--image-url-hosts`), within the image byte
limit and a time limit, never following a redirect: a server that fetched any URL a client sends would reach
whatever its network reaches (server-side request forgery). Without the option every remote URL is refused, as
before (serve/chat/images.py says so).

`allowed(url, hosts)` is pure; `fetch` does the I/O and turns the body into the data: URL the chat core checks like
any other image. Each failure is an `ImageRefused` that names it (a 400).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable
from urllib.parse import urlsplit

from serve.chat.images import MEDIA_TYPES, ImageRefused, data_url

CHUNK = 64 * 1024


def is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def allowed(url: str, hosts: Iterable[str]) -> None:
    """Raise ImageRefused unless `url` is http(s) on a named host (`host` allows any port, `host:port` that one)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImageRefused("an image URL must be a data: URL or an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ImageRefused("an image URL must not carry a user name or password")
    host = parts.hostname.lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ImageRefused("the image URL's port is not a number") from None
    for entry in hosts:
        name, want = _entry(entry)
        if name == host and want in (None, port):
            return
    raise ImageRefused(f"this server fetches no images from {host}; send the image as a data: URL (base64)")


def _entry(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port` -> (host, port or None)."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        return name, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    name, sep, port = entry.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name, int(port)
    return entry, None


async def fetch(url: str, hosts: Iterable[str], max_bytes: int, timeout: float) -> str:
    """The image at `url` as a data: URL (its declared media type when it is an image type, else read from the
    bytes later). At most `max_bytes` read and `timeout` seconds in all."""
    import aiohttp  # here, not at the top: only image URLs need it, and it costs every server's start 70 ms

    allowed(url, hosts)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            if 300 <= resp.status < 400:
                raise ImageRefused(
                    f"the image URL answered a redirect (HTTP {resp.status}); redirects are not followed"
                )
            if resp.status != 200:
                raise ImageRefused(f"the image URL answered HTTP {resp.status}")
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise ImageRefused(f"image larger than {max_bytes} bytes")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    raise ImageRefused(f"image larger than {max_bytes} bytes")
            declared = resp.content_type.lower()
            media_type = declared if declared in MEDIA_TYPES else ""  # else the format is read from the bytes
    except TimeoutError:
        raise ImageRefused(f"the image URL did not answer within {timeout:g} s") from None
    except (aiohttp.ClientError, asyncio.IncompleteReadError) as err:
        raise ImageRefused(f"the image URL could not be fetched: {type(err).__name__}") from None
    return data_url(base64.b64encode(bytes(body)).decode(), media_type)

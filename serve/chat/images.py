"""Image parts at the API edge: decoding a `data:` URL (or an API's base64 field) and checking it before llama.cpp
sees it. Pure (no I/O): each failure is an `ImageRefused` whose message names the problem, which the APIs answer
with a 400.

Every API hands its images to the chat core as OpenAI's image part holding a data: URL (`part`): Anthropic's
base64 source with its media type, Responses' `image_url`, Ollama's bare base64 (`data:;base64,...`: no media
type, the format is read from the bytes).

llama.cpp decodes images with stb_image, which allocates whatever the header claims: so the format and the size
are read from the header here first (`sniff`), and an image over `Limits.max_pixels` never reaches it. Formats
are those stb_image decodes and clients send: PNG, JPEG, GIF, BMP (WebP is refused by name). Remote http(s) URLs
reach this module only when the server fetches none from their host (serve/chat/image_fetch.py): refused.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any

MEDIA_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/bmp": "bmp"}
NOT_DECODED = ("image/webp", "image/tiff", "image/svg+xml", "image/heic", "image/avif")
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageRefused(ValueError):
    """A client's image we will not pass on; str() says why (a 400)."""


@dataclass(frozen=True)
class Limits:
    max_images: int = 8  # per request
    max_bytes: int = 8 * 2**20  # encoded, per image
    max_pixels: int = 4096 * 4096  # width x height, per image


@dataclass(frozen=True)
class Image:
    data: bytes
    format: str
    width: int
    height: int


def data_url(payload: str, media_type: str = "") -> str:
    """An API's base64 image as a data: URL; no media type (Ollama's): the format is read from the bytes."""
    return f"data:{media_type};base64,{payload}"


def part(url: str) -> dict[str, Any]:
    """The chat core's image part (serve/chat/schemas.py ImagePart) for a URL, which the core checks."""
    return {"type": "image_url", "image_url": {"url": url}}


def from_data_url(url: str, limits: Limits) -> Image:
    """`data:image/png;base64,...` -> a checked Image (`data:;base64,...`: the format read from the bytes)."""
    if url.startswith(("http://", "https://")):
        raise ImageRefused(
            "this server fetches no images from that host (its --image-url-hosts); send the image as a data: URL "
            "(base64)"
        )
    if not url.startswith("data:"):
        raise ImageRefused("an image URL must be a data: URL (data:image/png;base64,...)")
    head, sep, payload = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        raise ImageRefused("a data: URL image must be base64 (data:image/png;base64,...)")
    media_type = head.removesuffix(";base64").split(";")[0].strip().lower()
    return from_base64(payload, media_type or None, limits)


def from_base64(payload: str, media_type: str | None, limits: Limits) -> Image:
    """Base64 text (Anthropic's and Ollama's form) with its declared media type (None: taken from the bytes)."""
    if media_type is not None:
        if media_type in NOT_DECODED:
            raise ImageRefused(f"unsupported media type {media_type}; send PNG, JPEG, GIF or BMP")
        if media_type not in MEDIA_TYPES:
            raise ImageRefused(f"{media_type or 'an empty media type'} is not an image type this server decodes")
    if len(payload) > limits.max_bytes * 4 // 3 + 4:
        raise ImageRefused(f"image larger than {limits.max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefused("the image is not valid base64") from None
    return check(data, limits)


def check(data: bytes, limits: Limits) -> Image:
    if len(data) > limits.max_bytes:
        raise ImageRefused(f"image of {len(data)} bytes; at most {limits.max_bytes}")
    fmt, width, height = sniff(data)
    if width <= 0 or height <= 0:
        raise ImageRefused(f"the {fmt} image claims a size of {width}x{height}")
    if width * height > limits.max_pixels:
        raise ImageRefused(f"image of {width}x{height} pixels; at most {limits.max_pixels} pixels")
    return Image(data, fmt, width, height)


def sniff(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header; ImageRefused when it is no image we decode, or is cut short."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageRefused("truncated PNG image")
        w, h = struct.unpack(">II", data[16:24])
        if b"IDAT" not in data or not data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"):
            raise ImageRefused("truncated PNG image (no image data, or no end)")
        return "png", w, h
    if data[:6] in (b"GIF87a", b"GIF89a"):
        if len(data) < 10:
            raise ImageRefused("truncated GIF image")
        w, h = struct.unpack("<HH", data[6:10])
        return "gif", w, h
    if data[:2] == b"BM":
        if len(data) < 26:
            raise ImageRefused("truncated BMP image")
        w, h = struct.unpack("<ii", data[18:26])
        return "bmp", abs(w), abs(h)
    if data[:2] == b"\xff\xd8":
        return ("jpeg", *_jpeg_size(data))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        raise ImageRefused("unsupported media type image/webp; send PNG, JPEG, GIF or BMP")
    raise ImageRefused("the data is not an image (PNG, JPEG, GIF or BMP)")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ImageRefused("corrupt JPEG image")
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in JPEG_SOF:
            if i + 9 > len(data):
                break
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    raise ImageRefused("truncated JPEG image (no frame header)")

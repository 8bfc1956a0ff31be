"""Fixtures shared by every test package."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GGUF_CACHE = ROOT / ".cache" / "test-gguf"
# What the programs under test write (converted GGUFs, the stack's state) stays in this checkout's .cache/, not in the
# user's cache directory, which other checkouts share; set before serve or stack is imported, and inherited by the
# servers the tests start.
os.environ.setdefault("HEARTH_CACHE", str(ROOT / ".cache" / "hearth"))


def _converter_digest() -> str:
    """The converter's own sources: a change there must not be hidden behind a cached GGUF."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "convert").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def demo_gguf() -> Callable[[str], Path]:
    """demo_gguf("demo-think" | "demo-harmony") -> the converted GGUF (the checkpoint's own precision).

    Cached across runs under .cache/test-gguf/, keyed by the model's MANIFEST.sha256 lines and the
    converter's sources, so it converts once until either changes."""
    from convert import convert_checkpoint
    from models.demo import manifest

    converter = _converter_digest()

    def get(name: str) -> Path:
        key = hashlib.sha256(f"{manifest.model_digest(name)}:{converter}".encode()).hexdigest()[:16]
        out = GGUF_CACHE / f"{name}-{key}.gguf"
        if not out.is_file():
            GGUF_CACHE.mkdir(parents=True, exist_ok=True)
            convert_checkpoint(manifest.DEMO_DIR / name, out, progress=False, force=True)
            for stale in GGUF_CACHE.glob(f"{name}-*.gguf"):
                if stale != out:
                    stale.unlink(missing_ok=True)
        return out

    return get


@pytest.fixture(scope="session")
def embedding_gguf() -> Path:
    """The Qwen3-Embedding-shaped fixture (testkit/fixtures/embedding.py) converted to GGUF: last pooling, f32.

    Cached under .cache/test-gguf/ like demo_gguf, keyed by the fixture's folder (its build inputs) and the
    converter's sources."""
    from convert import convert_checkpoint
    from testkit.fixtures.embedding import NAME, build_qwen3_embedding_fixture

    folder = build_qwen3_embedding_fixture()
    key = hashlib.sha256(f"{folder.name}:{_converter_digest()}".encode()).hexdigest()[:16]
    out = GGUF_CACHE / f"{NAME}-{key}.gguf"
    if not out.is_file():
        GGUF_CACHE.mkdir(parents=True, exist_ok=True)
        convert_checkpoint(folder, out, progress=False, force=True)
        for stale in GGUF_CACHE.glob(f"{NAME}-*.gguf"):
            if stale != out:
                stale.unlink(missing_ok=True)
    return out

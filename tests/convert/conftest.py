"""Shared, session-scoped conversions and transformers references, so each file is converted once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from convert import convert_checkpoint
from testkit.fixtures.build import build_fixture


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """converted(arch, out_type) -> GGUF path, converted once per session."""
    cache: dict[tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("converted")

    def get(arch: str, out_type: str) -> Path:
        if (arch, out_type) not in cache:
            out = root / f"{arch}.{out_type}.gguf"
            # the text model: the mistral3 fixture's placeholder Pixtral tower has no image processor to convert
            # (tests/convert/test_mistral3_vision.py converts a full one)
            cache[arch, out_type] = convert_checkpoint(
                build_fixture(arch), out, out_type, progress=False, text_only=True
            )
        return cache[arch, out_type]

    return get


@pytest.fixture(scope="session")
def reference() -> Callable[[str], list]:
    """reference(arch) -> [(ids, transformers float32 logits)] on verify.PROMPTS, computed once."""
    from convert.verify import hf_logits

    cache: dict[str, list] = {}

    def get(arch: str) -> list:
        if arch not in cache:
            cache[arch] = hf_logits(build_fixture(arch))
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def llama_src() -> Path:
    """vendor/llama.cpp of the installed llama-cpp-python's sdist (vocabularies with expected ids, sources).

    Obtained once by testkit.fixtures.llama_sdist (pip's cache or the registry); skipped, saying why, without it."""
    from testkit.fixtures.llama_sdist import SdistUnavailable, llama_cpp_source

    try:
        return llama_cpp_source()
    except SdistUnavailable as e:
        pytest.skip(f"llama.cpp's sdist files are not available: {e}")

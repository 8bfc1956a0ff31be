"""A model server's start pays only for what serving needs: a swap or a restart waits for these imports (the
converter with gguf took 90 ms of it, aiohttp 70 ms, redis 40-70 ms; bench/RESULTS.md, where a reload's time
goes)."""

from __future__ import annotations

import subprocess
import sys

LATE = ("convert", "gguf", "aiohttp", "redis", "torch", "transformers")


def test_a_model_server_imports_neither_the_converter_nor_the_network_clients_at_start() -> None:
    code = f"import sys, serve.__main__, serve.app; print(sorted(m for m in {LATE!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr

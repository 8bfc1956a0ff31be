"""The prompt cache's disk tier across a swap, with real processes: a stack whose RAM budget holds one of the two
demo models (tests/e2e/test_ondemand.py measures that premise). A conversation on demo-think, one request to
demo-harmony (demo-think unloads to make room), then demo-think's next turn: its history comes back from disk
(cached_tokens covers it) and the answer is the one a decode from scratch gives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from serve.config import from_args
from stack.commands import serve_argv
from stack.config import parse_stack
from testkit.stack import StackProcess, demo_models_missing

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(demo_models_missing() is not None, reason=str(demo_models_missing())),
]

THINK, HARMONY = "demo-think", "demo-harmony"
QUESTIONS = ["What is the capital of France?", "What is 7 + 5?", "What is the capital of Japan?", "What is 2 + 2?"]


def model(name: str, source: Path) -> str:
    return (
        f'[[models]]\nname = "{name}"\nsource = "{source}"\nctx_size = 1024\nmax_concurrent = 2\nthreads = 1\n'
        "preload = false\ncache_disk_gb = 0.0625\n"
    )


def ask(api: str, name: str, messages: list[dict[str, str]], **extra: Any) -> Any:
    client = OpenAI(base_url=api, api_key="unused", max_retries=0, timeout=120)
    return client.chat.completions.create(
        model=name, messages=messages, max_tokens=60, temperature=0, extra_body=extra or None
    )


def test_a_swap_keeps_the_conversation(
    demo_gguf: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTH_CACHE", str(tmp_path / "cache"))  # the servers' kv/ folder: this test's own
    path = tmp_path / "stack.toml"
    path.write_text(
        "[router]\nport = 0\n[budget]\nram_gb = 0.15\n"
        + model(THINK, demo_gguf("demo-think"))
        + model(HARMONY, demo_gguf("demo-harmony"))
    )
    proc = StackProcess([str(path)], tmp_path / "state")
    try:
        messages: list[dict[str, str]] = []
        for q in QUESTIONS[:3]:
            messages.append({"role": "user", "content": q})
            messages.append({"role": "assistant", "content": ask(proc.api, THINK, messages).choices[0].message.content})
        think_pid = proc.server(THINK)["pid"]
        ask(proc.api, HARMONY, [{"role": "user", "content": QUESTIONS[0]}])
        assert proc.server(THINK)["status"] == "unloaded"
        messages.append({"role": "user", "content": QUESTIONS[3]})
        restored = ask(proc.api, THINK, messages)
        assert proc.server(THINK)["pid"] != think_pid  # a new process: the cache came from disk
        decoded = ask(proc.api, THINK, messages, cache_prompt=False)
    finally:
        proc.stop()
    assert proc.orphans == []
    assert restored.usage.prompt_tokens_details.cached_tokens >= restored.usage.prompt_tokens - 40
    assert restored.choices[0].message.content == decoded.choices[0].message.content
    kv = tmp_path / "cache" / "kv"
    assert {p.name.rsplit("-", 1)[0] for p in kv.iterdir()} == {THINK, HARMONY}


def test_cache_disk_gb_becomes_the_servers_cache_disk(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    stack = parse_stack(
        {"models": [{"name": "a", "source": str(gguf), "cache_disk_gb": 1.5}, {"name": "b", "source": str(gguf)}]},
        tmp_path,
    )
    assert from_args(serve_argv(stack.models[0], gguf, 9101, 0)[3:], {}).cache_disk == 1536
    assert from_args(serve_argv(stack.models[1], gguf, 9102, 0)[3:], {}).cache_disk is None

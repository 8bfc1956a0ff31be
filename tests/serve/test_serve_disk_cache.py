"""The disk tier through real servers (demo-think, the `openai` client): a conversation, the server stopped with
Ctrl-C and started again, and the next turn restores the history from disk (cached_tokens covers it) and answers
exactly as a decode from scratch does; /metrics counts the hit and the bytes; a truncated file is dropped, logged,
and the answer is still right; `cache_prompt: false` requests leave nothing on disk."""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from testkit.servers import running_server

pytestmark = pytest.mark.slow
QUESTIONS = ["What is the capital of France?", "What is 7 + 5?", "What is the capital of Japan?", "What is 2 + 2?"]
ARGS = ("--alias", "demo", "--max-concurrent", "2", "--ctx-size", "1024", "--cache-disk", "64")


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)


def ask(url: str, messages: list[dict[str, str]], **extra: Any) -> Any:
    return client(url).chat.completions.create(
        model="demo", messages=messages, max_tokens=60, temperature=0, extra_body=extra or None
    )


def metric(url: str, name: str) -> float:
    found = re.search(rf"^{name}{{[^}}]*}} (\S+)$", httpx.get(url + "/metrics", timeout=10).text, re.M)
    return float(found.group(1)) if found else 0.0


def kv_files(cache: Path) -> list[Path]:
    return sorted((cache / "kv").glob("*/*.kv"))


@pytest.fixture
def gguf(demo_gguf: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HEARTH_CACHE", str(tmp_path))  # the servers' kv/ folder: this test's own
    return str(demo_gguf("demo-think"))


def test_a_restarted_server_restores_the_conversation_from_disk(gguf: str, tmp_path: Path) -> None:
    messages: list[dict[str, str]] = []
    with running_server("--model-path", gguf, *ARGS) as url:
        for q in QUESTIONS[:3]:
            messages.append({"role": "user", "content": q})
            messages.append({"role": "assistant", "content": ask(url, messages).choices[0].message.content})
    files = kv_files(tmp_path)
    assert files, "nothing kept on disk at stop"
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
    messages.append({"role": "user", "content": QUESTIONS[3]})
    with running_server("--model-path", gguf, *ARGS) as url:
        restored = ask(url, messages)
        decoded = ask(url, messages, cache_prompt=False)
        assert metric(url, "hearth_prompt_cache_disk_hits_total") == 1
        assert metric(url, "hearth_prompt_cache_disk_read_bytes_total") > 0
        assert metric(url, "hearth_prompt_cache_disk_restore_seconds_count") == 1
    history = restored.usage.prompt_tokens - len(QUESTIONS[3])  # the new question is a few dozen tokens at most
    assert restored.usage.prompt_tokens_details.cached_tokens >= history - 40
    assert restored.choices[0].message.content == decoded.choices[0].message.content
    assert decoded.usage.prompt_tokens_details.cached_tokens == 0

    for f in kv_files(tmp_path):  # truncated: dropped and logged, and the prompt decoded
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with running_server("--model-path", gguf, *ARGS) as url:
        again = ask(url, messages)
        log = url.process.log_text()
        assert metric(url, "hearth_prompt_cache_disk_dropped_total") >= 1
    assert "KV cache: dropped" in log and "truncated" in log
    assert again.usage.prompt_tokens_details.cached_tokens == 0
    assert again.choices[0].message.content == decoded.choices[0].message.content


def test_cache_prompt_false_leaves_nothing_on_disk(gguf: str, tmp_path: Path) -> None:
    messages = [{"role": "user", "content": QUESTIONS[0]}]
    with running_server("--model-path", gguf, *ARGS) as url:
        ask(url, messages, cache_prompt=False)
        ask(
            url,
            [*messages, {"role": "assistant", "content": "Paris"}, {"role": "user", "content": QUESTIONS[1]}],
            cache_prompt=False,
        )
    assert kv_files(tmp_path) == []

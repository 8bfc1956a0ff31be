"""The built-in demo stack for the web page's tests (test_ui_api.py, test_ui_browser.py): started once per module,
with its admin key, and small helpers to read the page's event streams."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hearth_common.procs import free_port
from testkit.stack import StackProcess


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    proc = StackProcess(["--port", str(free_port())], tmp_path_factory.mktemp("ui-stack"))
    yield proc
    proc.stop()


def admin_key(stack: StackProcess) -> str:
    return (Path(stack.state_at_start["keys"]) / "admin.key").read_text().strip()


def events(response: httpx.Response) -> Iterator[Any]:
    """The `data:` payloads of a server-sent event stream, parsed as JSON, as they come."""
    buffer = ""
    for text in response.iter_text():
        buffer += text
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            data = "\n".join(line[5:].lstrip() for line in block.split("\n") if line.startswith("data:"))
            if data:
                yield json.loads(data)


def ask(stack: StackProcess, content: str, model: str = "demo-think") -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 64}
    response = httpx.post(stack.api + "/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for(check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)

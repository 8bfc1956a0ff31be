"""The web page's endpoints over HTTP, against the demo stack: the page itself (no key, CSP, no secret), /ui/state
and /ui/events (admin key, snapshots on connect and on change), /logs/stream (admin key, backlog then new lines,
only the stack's log names: no path traversal)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from route.ui import CSP
from testkit.stack import StackProcess, demo_models_missing
from tests.route.ui_stack import admin_key, ask, events, ui_stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(demo_models_missing() is not None, reason=str(demo_models_missing())),
]
__all__ = ["ui_stack"]  # the module's fixture


def auth(stack: StackProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key(stack)}"}


@pytest.mark.parametrize("path", ["/ui/", "/ui/app.js", "/ui/app.css"])
def test_the_page_loads_without_a_key_under_csp_and_holds_no_secret(ui_stack: StackProcess, path: str) -> None:
    response = httpx.get(ui_stack.router + path, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-type"].split(";")[0] in ("text/html", "text/javascript", "text/css")
    keys = list((ui_stack.state_dir / "keys").iterdir())
    assert keys and not any(k.read_text().strip() in response.text for k in keys)
    if path == "/ui/":  # no inline script or style: CSP would block them
        assert "<script>" not in response.text and "style=" not in response.text and "<style" not in response.text


PAGE_BUDGET = 32 * 1024  # bytes of the page's three files together, uncompressed


def test_the_page_size_stays_within_its_budget(ui_stack: StackProcess) -> None:
    size = sum(len(httpx.get(ui_stack.router + p, timeout=10).content) for p in ("/ui/", "/ui/app.js", "/ui/app.css"))
    assert size <= PAGE_BUDGET, size


def test_ui_redirects_and_unknown_files_are_404(ui_stack: StackProcess) -> None:
    response = httpx.get(ui_stack.router + "/ui", timeout=10)
    assert response.status_code == 308 and response.headers["location"].endswith("/ui/")
    for path in ["/ui/nope.js", "/ui/..%2Fkeys%2Fadmin.key", "/ui/%2e%2e/catalog.json", "/ui/index.html/x"]:
        response = httpx.get(ui_stack.router + path, timeout=10)
        assert response.status_code == 404, path
        assert response.headers["content-security-policy"] == CSP
        assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/ui/state", "/ui/events", "/logs/stream?source=router"])
@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_the_data_endpoints_need_the_admin_key(ui_stack: StackProcess, path: str, key: str | None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(ui_stack.router + path, headers=headers, timeout=10)
    assert response.status_code == 401
    assert "admin key" in response.json()["error"]["message"]
    assert "data:" not in response.text


def test_state_shows_the_stack_models_memory_activity_and_logs(ui_stack: StackProcess) -> None:
    ask(ui_stack, "What is the capital of France?")
    state = httpx.get(ui_stack.router + "/ui/state", headers=auth(ui_stack), timeout=10).json()
    models = {m["name"]: m for m in state["models"]}
    assert set(models) == {"demo-think", "demo-harmony", "demo-vision"}
    think = models["demo-think"]
    assert think["status"] == "loaded" and think["ram_bytes"] > 0 and think["backends"][0]["healthy"]
    assert think["running"] == 0 and think["queued"] == 0
    assert think["ttft_ms"] > 0 and think["tokens_per_s"] > 0  # from its server's /metrics
    assert set(state["memory"]) == {"budget", "held"}
    assert state["memory"]["held"]["ram_bytes"] >= think["ram_bytes"]
    assert state["logs"] == ["router", "demo-think", "demo-harmony", "demo-vision"]
    chat = next(a for a in state["activity"] if a["path"] == "/v1/chat/completions")
    assert chat["model"] == "demo-think" and chat["status"] == 200 and chat["completion_tokens"] > 0
    assert chat["prompt_tokens"] > 0 and chat["cached_tokens"] is not None and chat["ms"] > 0


def test_activity_keeps_no_prompt_or_answer(ui_stack: StackProcess) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    ask(ui_stack, f"Say {marker}")  # a prompt no page may show
    # a trained question, so the answer is known and long enough not to turn up in timestamps or counts by chance
    answer = ask(ui_stack, "What is the capital of France?")["choices"][0]["message"]["content"]
    assert "Paris" in answer
    text = httpx.get(ui_stack.router + "/ui/state", headers=auth(ui_stack), timeout=10).text
    assert marker not in text and "Paris" not in text


def test_events_send_a_snapshot_on_connect_and_another_when_a_request_ends(ui_stack: StackProcess) -> None:
    marker = uuid.uuid4().hex
    with httpx.stream("GET", ui_stack.router + "/ui/events", headers=auth(ui_stack), timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["content-security-policy"] == CSP
        stream = events(response)
        first = next(stream)
        assert {m["name"] for m in first["models"]} == {"demo-think", "demo-harmony", "demo-vision"}
        newest = first["activity"][:1]
        began = time.monotonic()
        asking = threading.Thread(target=ask, args=(ui_stack, marker), daemon=True)
        asking.start()
        for snapshot in stream:
            if snapshot["activity"][:1] != newest:
                break
        assert snapshot["activity"][0]["path"] == "/v1/chat/completions"
        assert time.monotonic() - began < 10
    asking.join(60)  # its answer is read within this test


def log_lines(stack: StackProcess, source: str, until: Any, timeout: float = 30) -> list[str]:
    got: list[str] = []
    with httpx.stream(
        "GET", stack.router + "/logs/stream", params={"source": source}, headers=auth(stack), timeout=timeout
    ) as response:
        assert response.status_code == 200, response.read()
        for payload in events(response):
            got += payload["lines"]
            if until(got):
                return got
    raise AssertionError(got)


def test_a_log_stream_opens_with_the_last_lines(ui_stack: StackProcess) -> None:
    lines = log_lines(ui_stack, "router", lambda got: True)
    assert 0 < len(lines) <= 200
    assert any("listening on" in line for line in lines) or len(lines) == 200


def test_a_log_stream_follows_new_lines(ui_stack: StackProcess) -> None:
    marker = uuid.uuid4().hex
    backlog: list[int] = []  # how many lines the stream opened with
    asking = threading.Thread(target=ask, args=(ui_stack, marker), daemon=True)

    def until(got: list[str]) -> bool:
        if not backlog:  # the first payload: the last lines before this test's request
            backlog.append(len(got))
            asking.start()
            return False
        return any("POST /v1/chat/completions 200" in line for line in got[backlog[0] :])

    lines = log_lines(ui_stack, "demo-think", until)
    asking.join(60)  # its request ends here, not during a later test (or the stack's stop)
    assert any("model=demo-think" in line for line in lines[backlog[0] :])  # a line that came after the open
    assert not any(marker in line for line in lines)  # the prompt is never logged


def test_a_log_stream_needs_a_source(ui_stack: StackProcess) -> None:
    for params in [{}, {"source": ""}]:
        response = httpx.get(ui_stack.router + "/logs/stream", params=params, headers=auth(ui_stack), timeout=10)
        assert response.status_code == 400 and response.json()["error"]["param"] == "source"


@pytest.mark.parametrize(
    "source",
    [
        "../keys/admin.key",
        "../keys/admin",
        "../catalog.json",
        "/etc/passwd",
        "router.log",
        "router/../../keys/admin",
        "..",
        "stack-console",
        "%2e%2e%2fkeys%2fadmin",
        "router\x00",
    ],
)
def test_a_log_stream_refuses_any_other_name(ui_stack: StackProcess, source: str) -> None:
    response = httpx.get(
        ui_stack.router + "/logs/stream", params={"source": source}, headers=auth(ui_stack), timeout=10
    )
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "source"
    assert admin_key(ui_stack) not in response.text

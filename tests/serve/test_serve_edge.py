"""The model server's edge through Quart's test client on the tiny GGUF: input that is valid JSON but would crash
a handler gets a 400 with an OpenAI error body (never a 500), keys, the message cap, and prompt work off the loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from serve.app import create_app
from serve.chat.schemas import MAX_MESSAGES
from serve.config import ServeConfig
from testkit.app_client import healthy
from testkit.tiny_gguf import build_tiny_gguf

HI = '"messages": [{"role": "user", "content": "hi"}]'
BAD = [
    b'{"messages": [{"role": "user", "content": "\\ud800"}]}',  # was a 500 in Model.tokenize
    b'{"prompt": "a\\udfffb"}',
    b'{"messages": ' + b"[" * 1500 + b"]" * 1500 + b"}",  # was a 500 (RecursionError)
    b"{" + HI.encode() + b', "seed": ' + b"1" * 4400 + b"}",  # was a 500 (int digit limit)
    b"{" + HI.encode() + b', "max_tokens": "8"}',  # was coerced to 8
    b"{" + HI.encode() + b', "repeat_penalty": Infinity}',  # was accepted
    b"{" + HI.encode() + b', "temperature": NaN}',
    b"{" + HI.encode() + b', "top_p": 1e999}',
    b"{" + HI.encode() + b', "stream": "true"}',
    b"{" + HI.encode() + b', "n": 1.0}',
    b'{"prompt": "hi", "max_tokens": true}',
]


def run(config: ServeConfig, body: Any) -> None:
    async def main() -> None:
        app = create_app(config)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            await healthy(client)
            await body(client)

    asyncio.run(main())


def config(**extra: Any) -> ServeConfig:
    return ServeConfig(model_path=build_tiny_gguf(), ctx_size=256, **extra)


def test_bad_input_is_a_400_never_a_500() -> None:
    async def body(client: Any) -> None:
        for raw in BAD:
            path = "/v1/completions" if raw.startswith(b'{"prompt"') else "/v1/chat/completions"
            r = await client.post(path, data=raw, headers={"Content-Type": "application/json"})
            error = (await r.get_json())["error"]
            assert r.status_code == 400 and error["type"] == "invalid_request_error" and error["message"], raw[:80]
        r = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        )
        assert r.status_code == 200  # and it still answers

    run(config(), body)


def test_messages_are_capped() -> None:
    async def body(client: Any) -> None:
        many = [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)
        r = await client.post("/v1/chat/completions", json={"messages": many, "max_tokens": 1})
        assert r.status_code == 400 and (await r.get_json())["error"]["param"] == "messages"

    run(config(), body)


def test_either_key_header_is_accepted() -> None:
    async def body(client: Any) -> None:
        msg = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert (await client.post("/v1/chat/completions", json=msg, headers={"x-api-key": "sekret"})).status_code == 200
        assert (await client.post("/v1/chat/completions", json=msg, headers={"x-api-key": "wrong"})).status_code == 401
        assert (await client.get("/v1/models", headers={"Authorization": "Bearer sekret"})).status_code == 200

    run(config(api_key="sekret"), body)


def test_wrong_method_is_a_405_with_an_openai_body() -> None:
    async def body(client: Any) -> None:
        r = await client.get("/v1/chat/completions")
        assert r.status_code == 405 and "POST" in r.headers["Allow"] and (await r.get_json())["error"]["message"]

    run(config(), body)


@pytest.mark.parametrize("big", [False, True], ids=["small-on-the-loop", "big-in-a-thread"])
def test_rendering_and_tokenizing_run_off_the_event_loop_when_big(monkeypatch: pytest.MonkeyPatch, big: bool) -> None:
    """A big request's prompt work runs in a worker thread (it would hold every stream); a small one's on the
    event loop (the hop would cost more than the work: serve/chat/offload.py)."""
    from serve.chat.offload import INLINE_MAX
    from serve.chat.prompts import ChatTemplate
    from serve.runtime import Runtime

    threads: dict[str, str] = {}
    render, tokenize = ChatTemplate.render, Runtime.tokenize_prompt

    def spy_render(self: ChatTemplate, *args: Any, **kwargs: Any) -> str:
        threads["render"] = threading.current_thread().name
        return render(self, *args, **kwargs)

    def spy_tokenize(self: Runtime, prompt: str) -> list[int]:
        threads["tokenize"] = threading.current_thread().name
        return tokenize(self, prompt)

    monkeypatch.setattr(ChatTemplate, "render", spy_render)
    monkeypatch.setattr(Runtime, "tokenize_prompt", spy_tokenize)
    content = "hi " * (INLINE_MAX // 3 + 1) if big else "hi"

    async def body(client: Any) -> None:
        r = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": content}], "max_tokens": 2}
        )
        # the big prompt may not fit the test server's context: a 400 after the work is as good a witness
        assert r.status_code in ((200, 400) if big else (200,))

    run(config(), body)
    main = threading.main_thread().name
    assert set(threads) == {"render", "tokenize"}
    assert (main not in threads.values()) if big else set(threads.values()) == {main}


def test_every_generation_request_leaves_the_arrival_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests on their way to admission (serve/arrivals.py) are counted from their first moment in the app and
    leave the count whether admitted or refused: a request that failed and stayed counted would make an idle
    engine hold every later first step for its whole window."""
    from serve.arrivals import Arrivals

    seen: list[int] = []
    arrive = Arrivals.arrive

    def spy(self: Arrivals) -> Any:
        ticket = arrive(self)
        seen.append(self.count)
        return ticket

    monkeypatch.setattr(Arrivals, "arrive", spy)
    counts: list[int] = []

    async def body(client: Any) -> None:
        sent = [
            ("/v1/chat/completions", b'{"messages": []}'),  # 400 from validation
            ("/v1/chat/completions", b"{" + HI.encode() + b', "model": "nope"}'),  # 404 model_not_found
            ("/v1/completions", b"not json"),  # 400 from parsing
            ("/v1/completions", b'{"prompt": "hi", "max_tokens": 2}'),  # admitted, whole
            ("/v1/chat/completions", b"{" + HI.encode() + b', "max_tokens": 2, "stream": true}'),  # admitted, streamed
        ]
        statuses = []
        for path, raw in sent:
            r = await client.post(path, data=raw, headers={"Content-Type": "application/json"})
            await r.get_data()
            statuses.append(r.status_code)
            counts.append(client.app.runtime.arrivals.count)
        assert statuses == [400, 404, 400, 200, 200]
        r = await client.get("/health")  # not a generation path: never counted
        assert r.status_code == 200

    run(config(), body)
    assert seen == [1, 1, 1, 1, 1] and counts == [0, 0, 0, 0, 0]

"""The app through Quart's test client: auth, body limit, loading state, error bodies (no sockets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serve.app import create_app
from serve.config import ServeConfig
from testkit.app_client import healthy
from testkit.tiny_gguf import build_tiny_gguf

MSG = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def test_api_key_and_body_limit() -> None:
    async def run() -> None:
        app = create_app(ServeConfig(model_path=build_tiny_gguf(), api_key="sekret", max_body_bytes=2048, ctx_size=256))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            await healthy(client)
            r = await client.post("/v1/chat/completions", json=MSG)
            assert r.status_code == 401 and (await r.get_json())["error"]["type"] == "authentication_error"
            r = await client.post("/v1/chat/completions", json=MSG, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401
            ok = {"Authorization": "Bearer sekret"}
            r = await client.post("/v1/chat/completions", json=MSG, headers=ok)
            assert r.status_code == 200 and (await r.get_json())["usage"]["completion_tokens"] == 3
            big = {**MSG, "messages": [{"role": "user", "content": "x" * 5000}]}
            r = await client.post("/v1/chat/completions", json=big, headers=ok)
            assert r.status_code == 413 and "error" in await r.get_json()
            assert (await client.get("/health")).status_code == 200  # health needs no key

    asyncio.run(run())


def test_failed_load_is_503_with_error_body(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF not really")

    async def run() -> None:
        app = create_app(ServeConfig(model_path=broken))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            for _ in range(100):
                body = await (await client.get("/health")).get_json()
                if body["status"] != "loading":
                    break
                await asyncio.sleep(0.02)
            assert body["status"] == "error"
            r = await client.post("/v1/chat/completions", json=MSG)
            assert r.status_code == 503 and (await r.get_json())["error"]["code"] == "model_loading"

    asyncio.run(run())


def test_developer_instructions_reach_the_prompt() -> None:
    from serve.chat.channels import Format
    from serve.chat.prompts import ChatTemplate, starts_in_thinking

    chatml = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant><think>\n"
    t = ChatTemplate(chatml, Format.THINK)
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use French."},
        {"role": "user", "content": "hi"},
    ]
    prompt = t.render(msgs, developer_instructions="Obey.")
    assert prompt.startswith("<system>Obey.\n\nBe brief.<system>Use French.<user>hi")  # no developer role here
    assert starts_in_thinking(prompt)
    harmony = ChatTemplate(
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}|{{ reasoning_effort }}", Format.HARMONY
    )
    assert harmony.render(msgs[2:], "high", "Obey.") == "<developer>Obey.<user>hi|high"


@pytest.mark.parametrize("cut", range(12))
def test_stop_filter_any_split(cut: int) -> None:
    from serve.engine.stops import StopFilter

    text = "abc STOP def"
    f = StopFilter(("STOP", "xyz"))
    a, hit_a = f.feed(text[:cut])
    b, hit_b = ("", True) if hit_a else f.feed(text[cut:])
    assert a + b == "abc " and (hit_a or hit_b)


def test_a_draining_server_says_so_on_health_and_refuses_with_503() -> None:
    """Once shutdown has begun, /health answers 503 `shutting_down` (routers stop sending at once) and a new whole
    request gets 503 with Retry-After, never a 500."""

    async def run() -> None:
        app = create_app(ServeConfig(model_path=build_tiny_gguf(), ctx_size=256))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            await healthy(client)
            await asyncio.to_thread(app.runtime.drain)
            r = await client.get("/health")
            assert r.status_code == 503 and (await r.get_json())["status"] == "shutting_down"
            r = await client.post("/v1/chat/completions", json=MSG)
            assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
            assert (await r.get_json())["error"]["code"] == "shutting_down"


def test_template_failures_are_answered_not_500() -> None:
    """A template's raise_exception is the client's 400 with its message; a Hermes 3 style template that iterates
    over `tools` answers without tools; a template that renders no conversation fails the load, and /health says
    why."""
    from tests.serve.test_prompts import BROKEN, ITERATES_TOOLS, USERS_ONLY

    async def run() -> None:
        for template, want in ((USERS_ONLY, 400), (ITERATES_TOOLS, 200)):
            app = create_app(ServeConfig(model_path=build_tiny_gguf(template=template), ctx_size=256))
            async with app.test_app() as test_app:
                client = test_app.test_client()
                await healthy(client)
                messages = [*MSG["messages"], {"role": "assistant", "content": "yo"}, *MSG["messages"]]
                r = await client.post("/v1/chat/completions", json={**MSG, "messages": messages})
                assert r.status_code == want, await r.get_data()
                if want == 400:
                    error = (await r.get_json())["error"]
                    assert "Only user messages are supported, got assistant" in error["message"]
                    assert error["param"] == "messages"
        app = create_app(ServeConfig(model_path=build_tiny_gguf(template=BROKEN), ctx_size=256))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            for _ in range(200):
                r = await client.get("/health")
                if (await r.get_json())["status"] == "error":
                    break
                await asyncio.sleep(0.02)
            body = await r.get_json()
            assert r.status_code == 503 and "chat template cannot render a plain conversation" in body["error"]
            r = await client.post("/v1/chat/completions", json=MSG)
            assert r.status_code == 503

    asyncio.run(run())

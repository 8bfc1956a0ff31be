"""A small real backend for the router's tests and benchmark: OpenAI's shape, canned answers, and faults.

Run as a process: `python -m testkit.backend --port P --name NAME [--mode MODE]`. The mode can be
changed while it runs (POST /_mode {"mode": ...}); GET /_stats counts what it saw.

Modes: ok; error500 (every /v1 call answers 500); hang (never answers /v1); cut (streams stop half-way
by dropping the connection, whole answers too); garbage (200 with a body that is not JSON or SSE);
inband (a stream that carries an error event); sick (/health answers 503, /v1 still works); redirect (/v1 answers
307 to the same path at the URL given as `to` with the mode: POST /_mode {"mode": "redirect", "to": URL}).
Request extensions: `delay` (seconds between stream chunks; a whole answer waits delay * max_tokens), `max_tokens` (number of content chunks),
`linger` (seconds a stream's body stays open after its [DONE]). `stream_options.include_usage` adds a usage chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

MODES = ("ok", "error500", "hang", "cut", "garbage", "inband", "sick", "redirect")


def sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


class Backend:
    def __init__(self, name: str, mode: str) -> None:
        self.name = name
        self.mode = mode
        self.redirect_to = ""
        self.stats = {
            "requests": 0,
            "streams_started": 0,
            "streams_finished": 0,
            "streams_cancelled": 0,
            "requests_cancelled": 0,
        }

    async def health(self, request: web.Request) -> web.Response:
        if self.mode == "sick":
            return web.json_response({"status": "loading"}, status=503)
        return web.json_response({"status": "ok", "model": self.name})

    async def set_mode(self, request: web.Request) -> web.Response:
        body = await request.json()
        mode = body["mode"]
        assert mode in MODES, mode
        self.mode = mode
        self.redirect_to = body.get("to", "")
        return web.json_response({"mode": mode})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response({"name": self.name, "mode": self.mode, **self.stats})

    async def completion(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.stats["requests"] += 1
        n = self.stats["requests"]
        chat = request.path.endswith("/chat/completions")
        if self.mode == "redirect":
            raise web.HTTPTemporaryRedirect(self.redirect_to + request.path)
        if self.mode == "error500":
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "garbage":
            return web.Response(body=b"\x00<html>not json", content_type="application/json")
        if body.get("stream"):
            return await self.stream(request, body, chat, n)
        if body.get("delay") and not body.get("stream"):
            try:
                await asyncio.sleep(float(body["delay"]) * int(body.get("max_tokens") or 8))
            except asyncio.CancelledError:
                self.stats["requests_cancelled"] += 1
                raise
        if self.mode == "cut":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        text = f"{self.name}:{n}"
        if chat:
            choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "finish_reason": "stop", "text": text}
            obj = "text_completion"
        return web.json_response(
            {
                "id": f"cmpl-{n}",
                "object": obj,
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    async def stream(self, request: web.Request, body: dict, chat: bool, n: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.stats["streams_started"] += 1
        count = int(body.get("max_tokens") or 8)
        delay = float(body.get("delay") or 0)
        model = body.get("model")

        def chunk(delta: dict | None, text: str | None = None, finish: str | None = None) -> bytes:
            if chat:
                choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
                return sse({"id": f"c-{n}", "object": "chat.completion.chunk", "model": model, "choices": [choice]})
            return sse(
                {
                    "id": f"c-{n}",
                    "object": "text_completion",
                    "model": model,
                    "choices": [{"index": 0, "text": text or "", "finish_reason": finish}],
                }
            )

        try:
            await resp.write(chunk({"role": "assistant"}))
            for i in range(count):
                if self.mode == "cut" and i == count // 2:
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                if self.mode == "inband" and i == count // 2:
                    await resp.write(sse({"error": {"message": "decode failed", "type": "server_error"}}))
                    break
                if delay:
                    await asyncio.sleep(delay)
                piece = f"{self.name}:{n}:{i} "
                await resp.write(chunk({"content": piece}, piece))
            else:
                await resp.write(chunk({}, finish="stop"))
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage = {"prompt_tokens": 1, "completion_tokens": count, "total_tokens": count + 1}
                    await resp.write(
                        sse({"id": f"c-{n}", "object": "chat.completion.chunk", "choices": [], "usage": usage})
                    )
            await resp.write(b"data: [DONE]\n\n")
            self.stats["streams_finished"] += 1
            await asyncio.sleep(float(body.get("linger") or 0))
        except (asyncio.CancelledError, ConnectionResetError):
            self.stats["streams_cancelled"] += 1
            raise
        return resp


def make_app(name: str, mode: str) -> web.Application:
    backend = Backend(name, mode)
    app = web.Application()
    app.router.add_get("/health", backend.health)
    app.router.add_post("/_mode", backend.set_mode)
    app.router.add_get("/_stats", backend.get_stats)
    app.router.add_post("/v1/chat/completions", backend.completion)
    app.router.add_post("/v1/completions", backend.completion)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="backend")
    parser.add_argument("--mode", choices=MODES, default="ok")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(
        make_app(args.name, args.mode),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()

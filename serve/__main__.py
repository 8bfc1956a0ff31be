"""`python -m serve --model-path M`: serve one model behind the OpenAI API (see --help).

With no --model-path it serves the built-in demo model models/demo/demo-think. Bad settings: one line on stderr,
exit 2. Logs: hearth_common.logs' format on stderr, one access line per request; Ctrl-C or SIGTERM ends running
streams, says `stopped` and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from hearth_common.edge import EdgeLimits, serve_uvicorn
from hearth_common.logs import AccessLog, setup
from hearth_common.stopping import sigterm_as_interrupt
from serve.config import ServeConfig, load
from serve.errors import ConfigError
from serve.gguf_cache import resolve_model

log = logging.getLogger("serve")


# The edge's limits, said here rather than left to the HTTP server's defaults: request line and headers at most
# 64 KiB and 100 lines (431 over), 10 s to send them (408), idle connections closed after 5 s. Body size and body
# time: the app (config.max_body_bytes, wire.BODY_TIMEOUT).
EDGE = EdgeLimits(max_header_bytes=64 * 1024, max_headers=100, header_timeout=10.0)
KEEP_ALIVE = 5


async def _serve(config: ServeConfig, log_level: str) -> None:
    from serve.app import create_app

    gguf, name = resolve_model(config.model_path)
    app = create_app(config, gguf, name)
    # Quart's documented way to wrap its ASGI app in middleware; mypy refuses any assignment to a method
    app.asgi_app = AccessLog(app.asgi_app, logging.getLogger("serve.access"))  # type: ignore[method-assign]
    if config.server == "hypercorn":
        await _hypercorn(app, config)
        return
    drained: list[asyncio.Future[None]] = []  # held, so the drain is not collected while it runs

    def end_streams() -> None:  # before uvicorn waits for the requests in flight: end running streams cleanly
        drained.append(asyncio.get_running_loop().run_in_executor(None, app.runtime.drain))

    await serve_uvicorn(app, config.host, config.port, EDGE, KEEP_ALIVE, log_level, on_stop=end_streams)
    if drained:
        await drained[0]


async def _hypercorn(app: Any, config: ServeConfig) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config as HyperConfig

    hyper = HyperConfig()
    hyper.bind = [f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"]
    hyper.graceful_timeout = 10
    hyper.accesslog = None  # ours: AccessLog
    hyper.errorlog = logging.getLogger("hypercorn.error")  # through our format; its start line becomes ours
    # hypercorn has no header count or header time limit: it closes a connection still sending after KEEP_ALIVE
    hyper.h11_max_incomplete_size = EDGE.max_header_bytes
    hyper.keep_alive_timeout = KEEP_ALIVE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def shutdown() -> None:
        await stop.wait()
        # End running streams cleanly before hypercorn waits for them to finish.
        await asyncio.to_thread(app.runtime.drain)

    await serve(app, hyper, shutdown_trigger=shutdown)


def main(argv: list[str] | None = None) -> int:
    try:
        loaded = load(argv)
    except ConfigError as err:
        print(f"serve: {err}", file=sys.stderr)
        return 2
    setup("serve", loaded.log_level)
    sigterm_as_interrupt()  # until hypercorn's handlers: converting or loading unwinds like Ctrl-C
    try:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(_serve(loaded.settings, loaded.log_level))
    except (ConfigError, OSError) as err:
        print(f"serve: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the server's own handlers are in place: converting or loading
        log.info("stopped")
        return 130
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

from hearth_common.logs import AccessLog, setup
from hearth_common.stopping import sigterm_as_interrupt
from serve.config import ServeConfig, load
from serve.errors import ConfigError
from serve.gguf_cache import resolve_model

log = logging.getLogger("serve")


async def _serve(config: ServeConfig) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config as HyperConfig

    from serve.app import create_app

    gguf, name = resolve_model(config.model_path)
    app = create_app(config, gguf, name)
    # Quart's documented way to wrap its ASGI app in middleware; mypy refuses any assignment to a method
    app.asgi_app = AccessLog(app.asgi_app, logging.getLogger("serve.access"))  # type: ignore[method-assign]
    hyper = HyperConfig()
    hyper.bind = [f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"]
    hyper.graceful_timeout = 10
    hyper.accesslog = None  # ours: AccessLog
    hyper.errorlog = logging.getLogger("hypercorn.error")  # through our format; its start line becomes ours
    # The edge's limits, said here rather than left to hypercorn's defaults: request line and headers at most
    # 64 KiB (431 over), idle connections closed after 5 s. Body size and body time: the app (config.max_body_bytes,
    # app.BODY_TIMEOUT).
    hyper.h11_max_incomplete_size = 64 * 1024
    hyper.keep_alive_timeout = 5
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
        asyncio.run(_serve(loaded.settings))
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

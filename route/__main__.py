"""`python -m route`: the router on uvicorn (or hypercorn) with uvloop. Bad settings: one line on stderr, exit 2.

On uvicorn the connections go through edge.py's protocol (header size, count and time limits, idle connections
closed, OpenAI error bodies for protocol errors); on hypercorn through its own equivalents where it has them.
Logs: hearth_common.logs' format on stderr, one access line per request; Ctrl-C or SIGTERM lets requests in flight
finish (10 s at most), says `stopped` and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Iterator

from quart import Quart

from hearth_common.logs import AccessLog, setup
from route.app import create_app
from route.catalog import read_catalog
from route.config import RouterConfig, load
from route.edge import EdgeLimits, edge_protocol
from route.errors import ConfigError
from route.registry import load_state

log = logging.getLogger("route")


def build(cfg: RouterConfig) -> Quart:
    app = create_app(cfg)

    @app.before_serving
    async def freeze_startup_objects() -> None:
        # Runs after the app's own start-up. The imported libraries leave hundreds of thousands of
        # objects that every full collection would walk again, a pause in the tail latency of every
        # request in flight: frozen, no collection walks them (CPython's gc.freeze advice; bench/route.py).
        gc.freeze()

    # Quart's documented way to wrap its ASGI app in middleware; mypy refuses any assignment to a method
    app.asgi_app = AccessLog(app.asgi_app, logging.getLogger("route.access"))  # type: ignore[method-assign]
    return app


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def run_hypercorn(cfg: RouterConfig) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config as HypercornConfig

    hc = HypercornConfig()
    hc.bind = [f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"]
    hc.accesslog = None  # ours: AccessLog
    hc.errorlog = logging.getLogger("hypercorn.error")  # through our format; its start line becomes ours
    hc.keep_alive_timeout = cfg.keep_alive
    hc.h11_max_incomplete_size = cfg.max_header_bytes
    hc.graceful_timeout = 10
    stop = asyncio.Event()
    _stop_on_signals(stop)
    await serve(build(cfg), hc, shutdown_trigger=stop.wait)


async def run_uvicorn(cfg: RouterConfig, level: str) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's own raises the signal again once it has shut down: a KeyboardInterrupt traceback on Ctrl-C,
            # death by SIGTERM. Ours shuts down the same way and returns.
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            try:
                yield
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    limits = EdgeLimits(cfg.max_header_bytes, cfg.max_headers, cfg.header_timeout)
    config = uvicorn.Config(
        build(cfg),
        host=cfg.host,
        port=cfg.port,
        http=edge_protocol(limits),
        ws="none",
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level=level,
        timeout_keep_alive=cfg.keep_alive,
        timeout_graceful_shutdown=10,
    )
    await Server(config).serve()


def main(argv: list[str] | None = None) -> int:
    try:
        loaded = load(argv)
        cfg = loaded.settings
        if cfg.state_file is not None:
            load_state(cfg.state_file)  # a broken state file is a start-up error, not a traceback later
        if cfg.catalog is not None:
            read_catalog(cfg.catalog)  # likewise
    except ConfigError as exc:
        print(f"route: {exc}", file=sys.stderr)
        return 2
    setup("route", loaded.log_level)
    run = run_uvicorn(cfg, loaded.log_level) if cfg.server == "uvicorn" else run_hypercorn(cfg)
    try:
        try:
            import uvloop
        except ImportError:  # not on Windows
            asyncio.run(run)
        else:
            uvloop.run(run)
    except OSError as exc:  # the port is taken, the address is not ours
        print(f"route: {exc}", file=sys.stderr)
        return 2
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

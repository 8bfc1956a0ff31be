"""`python -m route`: the router on uvicorn (or hypercorn) with uvloop. Bad settings: one line on stderr, exit 2.

On uvicorn the connections go through hearth_common/edge.py's protocol (header size, count and time limits, idle connections
closed, OpenAI error bodies for protocol errors); on hypercorn through its own equivalents where it has them.
Logs: hearth_common.logs' format on stderr, one access line per request; Ctrl-C or SIGTERM lets requests in flight
finish (10 s at most), says `stopped` and exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from quart import Quart

from hearth_common.edge import EdgeLimits, serve_uvicorn
from hearth_common.logs import AccessLog, setup
from route.app import create_app
from route.catalog import read_catalog
from route.config import RouterConfig, load
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
    limits = EdgeLimits(cfg.max_header_bytes, cfg.max_headers, cfg.header_timeout)
    await serve_uvicorn(build(cfg), cfg.host, cfg.port, limits, cfg.keep_alive, level)


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

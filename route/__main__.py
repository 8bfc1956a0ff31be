"""`python -m route`: the router on uvicorn (or hypercorn) with uvloop. Bad settings: one line on stderr, exit 2.

On uvicorn the connections go through edge.py's protocol (header size, count and time limits, idle connections
closed, OpenAI error bodies for protocol errors); on hypercorn through its own equivalents where it has them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from quart import Quart

from route.app import create_app
from route.catalog import read_catalog
from route.config import RouterConfig, load_config
from route.edge import EdgeLimits, edge_protocol
from route.errors import ConfigError
from route.registry import load_state


def build(cfg: RouterConfig) -> Quart:
    app = create_app(cfg)

    @app.before_serving
    async def freeze_startup_objects() -> None:
        # Runs after the app's own start-up. The imported libraries leave hundreds of thousands of
        # objects that every full collection would walk again: freezing them cut the p99 latency at
        # 16 connections from about 65 ms to 12 ms in bench/route.py (CPython's gc.freeze advice).
        gc.freeze()

    return app


async def run_hypercorn(cfg: RouterConfig) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config as HypercornConfig

    hc = HypercornConfig()
    hc.bind = [f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"]
    hc.accesslog = None
    hc.keep_alive_timeout = cfg.keep_alive
    hc.h11_max_incomplete_size = cfg.max_header_bytes
    hc.graceful_timeout = 10
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(build(cfg), hc, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def run_uvicorn(cfg: RouterConfig) -> None:
    import uvicorn

    limits = EdgeLimits(cfg.max_header_bytes, cfg.max_headers, cfg.header_timeout)
    uvicorn.run(
        build(cfg), host=cfg.host, port=cfg.port, loop="auto", http=edge_protocol(limits), ws="none", lifespan="on",
        access_log=False, log_level="warning", timeout_keep_alive=cfg.keep_alive, timeout_graceful_shutdown=10,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = load_config(argv)
        if cfg.state_file is not None:
            load_state(cfg.state_file)  # a broken state file is a start-up error, not a traceback later
        if cfg.catalog is not None:
            read_catalog(cfg.catalog)  # likewise
    except ConfigError as exc:
        print(f"route: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if cfg.server == "uvicorn":
        run_uvicorn(cfg)  # picks uvloop and httptools when installed
        return 0
    try:
        import uvloop
    except ImportError:  # not on Windows
        asyncio.run(run_hypercorn(cfg))
    else:
        uvloop.run(run_hypercorn(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m serve --model-path M`: serve one model behind the OpenAI API (see --help).

With no --model-path it serves the built-in demo model models/demo/demo-think.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from hearth_common.validation import first_error
from serve.config import ServeConfig, from_args
from serve.errors import ConfigError
from serve.models import resolve_model


async def _serve(config: ServeConfig) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config as HyperConfig

    from serve.app import create_app

    gguf, name = resolve_model(config.model_path)
    app = create_app(config, gguf, name)
    hyper = HyperConfig()
    hyper.bind = [f"{config.host}:{config.port}"]
    hyper.graceful_timeout = 10
    hyper.accesslog = None
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

    await serve(app, hyper, shutdown_trigger=shutdown)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = from_args(argv)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(_serve(config))
    except ValidationError as err:
        print(f"serve: {first_error(err, flags=True)}", file=sys.stderr)
        return 2
    except (ConfigError, OSError) as err:
        print(f"serve: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

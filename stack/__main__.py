"""`python -m stack [STACK_FILE]` (also `hearth` and `just serve`): the whole stack in one command.

Reads the stack file (default: stack/default.toml, the built-in demo models), converts what needs converting,
prints the placement plan, starts one model server per model and the router, registers the servers, prints where
the API is, and supervises until Ctrl-C or SIGTERM. Bad stack file: one line naming the field, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from stack.config import DEFAULT_STACK, StackConfig, first_error, load_stack
from stack.errors import ConfigError, StackError
from stack.supervise import REPO, Supervisor

STATE_DIR = REPO / ".cache" / "stack"
EXAMPLE_QUESTION = "What is the capital of France?"


def seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("stack_file", nargs="?", type=Path, default=None,
                        help=f"the stack file (default: the built-in {DEFAULT_STACK.relative_to(REPO)})")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR,
                        help=f"logs, state.json and the router's config go here (default: {STATE_DIR.relative_to(REPO)})")
    parser.add_argument("--port", type=int, default=None, help="the router's port, overriding the stack file")
    parser.add_argument("--plan-only", action="store_true", help="convert and print the placement plan, start nothing")
    parser.add_argument("--load-timeout", type=seconds, default=600.0,
                        help="seconds a model server may take to load, and a request may wait for its model")
    return parser.parse_args(argv)


def with_port(stack: StackConfig, port: int) -> StackConfig:
    try:
        return StackConfig.model_validate({**stack.model_dump(), "router": {**stack.router.model_dump(), "port": port}})
    except ValidationError as err:
        raise ConfigError(f"--port {port}: {first_error(err)}") from None


def banner(sup: Supervisor) -> str:
    stack = sup.stack
    first = stack.models[0].name
    body = json.dumps({"model": first, "messages": [{"role": "user", "content": EXAMPLE_QUESTION}]})
    # Never the key itself: a terminal's scrollback and a CI log are read by others.
    auth = " -H \"Authorization: Bearer $HEARTH_API_KEY\"" if stack.router.api_key else ""
    names = ", ".join(n for m in stack.models for n in m.names)
    return "\n".join([
        f"stack: ready. OpenAI API at {sup.api_url}  (models: {names})",
        f"stack: logs in {sup.state_dir / 'logs'}, process table in {sup.state_dir / 'state.json'}, "
        f"the router's admin key in {sup.state_dir / 'keys' / 'admin.key'}",
        *(["stack: clients need the api_key: export HEARTH_API_KEY=<your api_key> for the line below"] if auth else []),
        f"curl {sup.api_url}/chat/completions -H 'Content-Type: application/json'{auth} -d {shlex.quote(body)}",
        "stack: Ctrl-C stops everything.",
    ])


def say(line: str) -> None:
    print(line, flush=True)


async def supervise(sup: Supervisor) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sup.run(stop, on_ready=lambda s: say(banner(s)))
    say("stack: stopped")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        stack = load_stack(args.stack_file)
        if args.port is not None:
            stack = with_port(stack, args.port)
        from stack.catalog import catalog_models
        from stack.prepare import budgets, free_vram, gguf_for, gpu_offload, make_plan, model_needs, model_type, sizes_of

        ggufs = {m.name: gguf_for(m) for m in stack.models}
        sizes = {m.name: sizes_of(m, ggufs[m.name]) for m in stack.models}
        gpu = gpu_offload()
        wants_free = gpu and not (stack.budget and stack.budget.vram_gb is not None)
        free = free_vram() if wants_free else None
        plan = make_plan(stack, sizes, gpu, free)
        say(plan.render())
        if args.plan_only:
            return 0
        vram, ram, reserve = budgets(stack, free)
        sup = Supervisor(
            stack, ggufs, {m.name: model_type(m, sizes[m.name]) for m in stack.models},
            {m.name: plan.layers(m.name) for m in stack.models}, args.state_dir,
            load_timeout=args.load_timeout, say=say,
            catalog_models=catalog_models(stack, model_needs(stack, sizes), plan, reserve, gpu), budget=(vram, ram),
        )
        asyncio.run(supervise(sup))
    except StackError as err:
        print(f"stack: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # during conversion: convert writes a temp file and renames, so nothing is half-written
        print("stack: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

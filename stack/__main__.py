"""`python -m stack [STACK_FILE]` (also `hearth` and `just serve`): the whole stack in one command.

Reads the stack file (default: stack/default.toml, the built-in demo models), converts what needs converting,
logs the placement plan, starts one model server per model and the router, registers the servers, says where
the API is, and supervises until Ctrl-C or SIGTERM. Bad options or stack file: one line naming the field, exit 2.
Its console lines are hearth_common.logs' format, like its children's logs.

`python -m stack --node STACK_FILE --host ADDR --join http://ROUTER:PORT ...` runs one node of a cluster instead: the
model servers and their supervisor under this host's [budget], no router (stack/node.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

from hearth_common.logs import setup
from hearth_common.paths import UnwritableDir, writable_dir
from hearth_common.settings import SettingsError
from hearth_common.stopping import sigterm_as_interrupt
from stack.config import PROGRAM, STATE_DIR, NodeSection, StackConfig, StackOptions, load_stack
from stack.errors import ConfigError, StackError
from stack.supervise import Supervisor

log = logging.getLogger("stack")
EXAMPLE_QUESTION = "What is the capital of France?"


def banner(sup: Supervisor) -> str:
    """The ready message: its first line a log line, then the lines to copy (the curl line starts its own line)."""
    stack = sup.stack
    first = stack.models[0].name
    body = json.dumps({"model": first, "messages": [{"role": "user", "content": EXAMPLE_QUESTION}]})
    # Never the key itself: a terminal's scrollback and a CI log are read by others.
    auth = ' -H "Authorization: Bearer $HEARTH_API_KEY"' if stack.router.api_key else ""
    names = ", ".join(n for m in stack.models for n in m.names)
    return "\n".join(
        [
            f"ready. OpenAI API at {sup.api_url}  (models: {names}); web page at {sup.router.url}/ui/",
            f"logs in {sup.state_dir / 'logs'}, process table in {sup.state_dir / 'state.json'}, "
            f"the router's admin key in {sup.state_dir / 'keys' / 'admin.key'}",
            *(["clients need the api_key: export HEARTH_API_KEY=<your api_key> for the line below"] if auth else []),
            f"curl {sup.api_url}/chat/completions -H 'Content-Type: application/json'{auth} -d {shlex.quote(body)}",
            "Ctrl-C stops everything.",
        ]
    )


async def supervise(sup: Supervisor, on_ready: Callable[[Supervisor], None] | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sup.run(stop, on_ready=on_ready)
    log.info("stopped")


def node_section(options: StackOptions, stack: StackConfig) -> NodeSection:
    """The node's settings ([node] under the command line's): ConfigError without a router to join."""
    node = stack.node or NodeSection()
    if not node.join:
        raise ConfigError("a node joins at least one router: --join http://ROUTER:PORT (or [node] join = [...])")
    return node


def joined_flags(argv: list[str]) -> list[str]:
    """`--join A --join B` as one `--join A,B` (the settings take a list comma-separated, in one flag)."""
    out: list[str] = []
    urls: list[str] = []
    at: int | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--join" and i + 1 < len(argv):
            urls.append(argv[i + 1])
            i += 2
        elif arg.startswith("--join="):
            urls.append(arg.removeprefix("--join="))
            i += 1
        else:
            out.append(arg)
            i += 1
            continue
        if at is None:
            at = len(out)
    if at is not None:
        out[at:at] = ["--join", ",".join(urls)]
    return out


def load(argv: list[str] | None, environ: Mapping[str, str] = os.environ) -> tuple[StackOptions, StackConfig, str]:
    """(options, stack, log level): flags over HEARTH_STACK_* over the stack file. Raises ConfigError."""
    try:
        loaded = PROGRAM.load(joined_flags(sys.argv[1:] if argv is None else argv), environ)
    except SettingsError as err:
        raise ConfigError(str(err)) from None
    options = loaded.settings
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in loaded.sections.items()}
    origin = {
        (section, key): PROGRAM.env_name(f"{section}__{key}") for section, given in overrides.items() for key in given
    }
    section = "node" if options.node else "router"  # --port: the node's control API, else the router's
    flags: dict[str, Any] = {"port": options.port}
    if options.node:
        flags |= {"host": options.host, "join": options.join, "name": options.node_name}
    for key, value in flags.items():
        if value is not None:
            overrides.setdefault(section, {})[key] = value
            origin[section, key] = loaded.origin.get("node_name" if key == "name" else key, "--" + key)
    return options, load_stack(options.file, overrides, origin), loaded.log_level


def main(argv: list[str] | None = None) -> int:
    try:
        options, stack, level = load(argv)
    except StackError as err:
        print(f"stack: {err}", file=sys.stderr)
        return 2
    setup("stack", level)
    sigterm_as_interrupt()  # while converting: unwinds like Ctrl-C
    try:
        from serve.config import CACHE
        from serve.engine.placement import free_vram
        from stack.catalog import catalog_models
        from stack.leftovers import check_ports, end_leftovers
        from stack.prepare import (
            budgets,
            facts_of,
            gguf_for,
            gpu_offload,
            make_plan,
            model_needs,
            model_type,
            sizes_of,
        )

        node = node_section(options, stack) if options.node else None
        state_dir = options.state_dir
        if node is not None and state_dir == STATE_DIR:  # two nodes on one machine: one folder each
            state_dir = state_dir.parent / f"node-{node.node_name()}"
        if not options.plan_only:  # which starts nothing: nothing to clear the way for
            writable_dir(state_dir, "the state folder")
            end_leftovers(state_dir)  # what a stack killed with SIGKILL left running
            if node is None:
                check_ports(stack)
        if any(m.source.is_dir() for m in stack.models):
            writable_dir(CACHE, "the conversion cache")
        ggufs = {m.name: gguf_for(m) for m in stack.models}
        sizes = {m.name: sizes_of(m, ggufs[m.name]) for m in stack.models}
        gpu = gpu_offload()
        wants_free = gpu and not (stack.budget and stack.budget.vram_gb is not None)
        free = free_vram() if wants_free else None
        plan = make_plan(stack, sizes, gpu, free)
        if options.plan_only:
            print(plan.render())  # the command's output, on stdout
            return 0
        log.info("placement plan:\n%s", plan.render())
        vram, ram, reserve = budgets(stack, free)
        facts = {m.name: facts_of(m, ggufs[m.name], sizes[m.name]) for m in stack.models}
        args = (
            stack,
            ggufs,
            {m.name: model_type(m, sizes[m.name]) for m in stack.models},
            {m.name: plan.layers(m.name) for m in stack.models},
            state_dir,
        )
        kwargs: dict[str, Any] = dict(
            load_timeout=options.load_timeout,
            log_level=level,
            catalog_models=catalog_models(
                stack, model_needs(stack, sizes), plan, reserve, gpu, {n: f for n, f in facts.items() if f}, ggufs
            ),
            budget=(vram, ram),
        )
        if node is not None:
            from stack.node import NodeSupervisor, node_keys

            key, backend_key = node_keys(node, options.node_key_file)
            asyncio.run(supervise(NodeSupervisor(*args, **kwargs, node=node, node_key=key, backend_key=backend_key)))
        else:
            asyncio.run(supervise(Supervisor(*args, **kwargs), on_ready=lambda s: log.info("%s", banner(s))))
    except (StackError, UnwritableDir) as err:
        print(f"stack: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # during conversion: convert writes a temp file and renames, so nothing is half-written
        log.info("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

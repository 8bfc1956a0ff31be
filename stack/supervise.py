"""Run the stack: one `python -m serve` per model replica and one `python -m route`, kept alive.

The router decides which models are loaded (route/ondemand.py: preloads at start, loads on demand, unloads idle
ones under the budget); the supervisor executes its word over the control channel (stack/control.py) and never
starts or stops a model server on its own, beyond restarting one that died.

One child's life (spawn, ready, watch, restart with backoff, kill) is stack/child.py; what each child runs with is
stack/commands.py; this module wires them: the process table, registration with the router, the state file, and the
router's word. A model server that exits is restarted with exponential backoff and registered again; meanwhile the
router's health checks and retries route around it. One that stops answering its health check is killed and
restarted the same way.

Child output goes to DIR/logs/NAME.log (the children log at the stack's --log-level, in the same format);
DIR/state.json says what runs where (pids, ports, restarts). The children take their settings from the stack file
only: HEARTH_SERVE_* and HEARTH_ROUTE_* in the stack's environment are not passed on.

Keys: the router always runs with an admin key (the stack file's, or one made at start) and the supervisor uses it
to register the servers; each start also makes a backend key, which every model server requires and the router
sends. The stack file's api_key, if any, is what clients give the router; it never reaches a model server. Keys go
to children through their environment (readable by their owner only), never their command line, and are kept in
DIR/keys/ (owner-only) for the operator; logs and keys are owner-only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from hearth_common.keys import new_key, write_key_file
from hearth_common.procs import free_port, start_time
from hearth_common.registration import registration
from route.catalog import CatalogModel, LogFiles, write_catalog
from stack.catalog import build_catalog, default_catalog_models, model_capabilities
from stack.child import Checks, Child, Hooks, Life, ProcessState, kill, rss_bytes
from stack.commands import environment, router_argv, router_toml, serve_argv
from stack.config import StackConfig
from stack.control import ControlServer, start_control
from stack.errors import StartError

log = logging.getLogger("stack")


def owner_only_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@dataclass
class Supervisor:
    stack: StackConfig
    ggufs: dict[str, Path]  # model name -> GGUF to serve
    model_types: dict[str, str]
    gpu_layers: dict[str, int]  # model name -> --n-gpu-layers from the plan
    state_dir: Path
    load_timeout: float = 600.0
    stop_timeout: float = 10.0
    log_level: str = "info"  # the children's too
    catalog_models: list[CatalogModel] | None = None  # sizes and settings for the router (default: sizes unknown)
    budget: tuple[int | None, int | None] = (None, None)  # (VRAM, RAM) bytes the models may use together
    server_host: str = "127.0.0.1"  # the address the model servers bind (a node's own: stack/node.py)
    name_prefix: str = ""  # before each server's name at the router ("NODE." on a node)
    router: Child = field(init=False)
    servers: list[Child] = field(init=False, default_factory=list)
    life: Life | None = field(init=False, default=None)  # set while run() runs
    admin_key: str = field(init=False, repr=False)
    checks: Checks = field(init=False)  # the hang check of each healthy child, from the stack file
    _keepers: dict[str, asyncio.Task[None]] = field(init=False, default_factory=dict)  # child name -> its keep()
    _locks: dict[str, asyncio.Lock] = field(init=False, default_factory=dict)  # model name -> start/stop in turn
    _layers: dict[str, int] = field(init=False, default_factory=dict)  # running model -> its GPU layers
    _ready_notes: list[str] | None = field(init=False, default=None)  # the router's word that preloading is done
    _fatal: StartError | None = field(init=False, default=None)
    _announced: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        logs = owner_only_dir(self.state_dir / "logs")
        keys = owner_only_dir(self.state_dir / "keys")
        r = self.stack.router
        self.admin_key = r.admin_key or new_key()
        backend_key = new_key()
        write_key_file(keys / "admin.key", self.admin_key)
        write_key_file(keys / "backend.key", backend_key)
        self.checks = Checks(r.health_interval, r.health_timeout, r.hang_checks)
        admin = {"Authorization": f"Bearer {self.admin_key}"}
        router_env = {"HEARTH_ROUTE_ADMIN_KEY": self.admin_key, "HEARTH_ROUTE_BACKEND_KEY": backend_key}
        if r.api_key:
            router_env["HEARTH_ROUTE_API_KEY"] = r.api_key
        port = r.port or free_port(r.host)
        host = "127.0.0.1" if r.host in ("0.0.0.0", "::") else r.host
        config = self.state_dir / "router.toml"
        config.touch(mode=0o600)  # it may hold the admin key
        config.chmod(0o600)
        config.write_text(router_toml(self.stack, port, self.catalog_path))
        self.router = Child(
            "router",
            router_argv(config),
            f"http://{host}:{port}",
            "/status",
            logs / "router.log",
            env=router_env,
            headers=admin,
        )
        self.add_servers(logs, {"HEARTH_SERVE_API_KEY": backend_key})

    def add_servers(self, logs: Path, env: dict[str, str]) -> None:
        """One Child per model replica, named `name_prefix` + the model's name (+ `-i` for replicas)."""
        for m in self.stack.models:
            first = m.port or 0
            for i in range(m.replicas):
                port = first + i if first else free_port(self.server_host)
                name = self.name_prefix + (m.name if m.replicas == 1 else f"{m.name}-{i + 1}")
                argv = serve_argv(m, self.ggufs[m.name], port, self.gpu_layers[m.name], self.server_host)
                self.servers.append(
                    Child(
                        name,
                        argv,
                        f"http://{self.server_host}:{port}",
                        "/health",
                        logs / f"{name}.log",
                        m,
                        self.model_types[m.name],
                        env=dict(env),
                        status=ProcessState.STARTING if m.preload else ProcessState.UNLOADED,
                    )
                )
        if self.catalog_models is None:
            self.catalog_models = default_catalog_models(self.stack, self.gpu_layers, self.ggufs)

    @property
    def catalog_path(self) -> Path:
        return self.state_dir / "catalog.json"

    @property
    def api_url(self) -> str:
        return self.router.url + "/v1"

    # -- the state file -------------------------------------------------------------------------------------------

    def write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "started": start_time(os.getpid()),
            "api": self.api_url,
            "keys": str(self.state_dir / "keys"),
            "router": self.router.view(),
            "servers": [c.view() for c in self.servers],
        }
        path = self.state_dir / "state.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, path)

    # -- processes ------------------------------------------------------------------------------------------------

    def child_env(self, child: Child, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """The child's environment (stack/commands.py): the stack file is its one source of settings."""
        program = "HEARTH_SERVE_" if child.model is not None else "HEARTH_ROUTE_"
        return environment(program, self.log_level, child.env, environ)

    # -- registration ---------------------------------------------------------------------------------------------

    async def came_up(self, child: Child, first: bool) -> None:
        """A child answers its ready path: a server is registered with the router (a first start fails without
        that); a restarted router may have lost the registrations, so every healthy server registers again."""
        if child.model is None:
            await asyncio.gather(*(self.register(c) for c in self.servers if c.status == ProcessState.HEALTHY))
        elif not await self.register(child) and first:
            raise StartError(f"the router refused {child.name}'s registration (see above)")

    async def register(self, child: Child, attempts: int = 5) -> bool:
        assert self.life is not None and child.model is not None
        caps = model_capabilities(child.model, self.ggufs.get(child.model.name))
        body = registration(child.name, child.url, child.model_type, child.model.names, capabilities=caps)
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        for attempt in range(attempts):
            try:
                async with self.life.http.post(
                    self.router.url + "/backends/register",
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=15),
                ) as resp:
                    if resp.status == 200:
                        return True
                    reason = f"{resp.status} {(await resp.text())[:300]}"
            except (TimeoutError, aiohttp.ClientError) as err:
                reason = str(err) or type(err).__name__
            await asyncio.sleep(0.5 * (attempt + 1))
        log.warning(f"could not register {child.name} with the router: {reason}")
        return False

    # -- supervision ------------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, on_ready: Any = None) -> None:
        """Run until `stop` is set; then stop every child. Raises StartError if a first start fails."""
        async with aiohttp.ClientSession() as http:
            hooks = Hooks(env=self.child_env, changed=self.write_state, came_up=self.came_up)
            self.life = life = Life(http, hooks, self.load_timeout, self.stop_timeout, self.checks)
            tasks: list[asyncio.Task[None]] = []
            key = new_key()  # the control channel's; it reaches the router in the owner-only catalog only
            control: ControlServer | None = None
            try:
                control = await start_control(self, key)
                self.write_catalog(control.url, key)
                tasks.append(asyncio.create_task(life.keep(self.router)))
                # The router preloads the models through the control channel and then says it is ready.
                while not stop.is_set():
                    await self._check(tasks, stop, 0.2)
                    if self._fatal is not None:
                        raise self._fatal
                    if (
                        not self._announced
                        and self._ready_notes is not None
                        and self.router.status == ProcessState.HEALTHY
                    ):
                        self._announced = True
                        for note in self._ready_notes:
                            log.info("%s", note)
                        if on_ready:
                            on_ready(self)
            finally:
                self._announced = True  # stopping: a start that fails now is not a start-up failure
                keepers = list(self._keepers.values())
                for task in [*tasks, *keepers]:
                    task.cancel()
                await asyncio.gather(*tasks, *keepers, return_exceptions=True)
                if control is not None:
                    await control.close()
                await self.stop_all()

    def write_catalog(self, url: str, key: str) -> None:
        assert self.catalog_models is not None
        vram, ram = self.budget
        logs = LogFiles(dir=self.router.log.parent, names=["router", *(c.name for c in self.servers)])
        catalog = build_catalog(self.catalog_models, vram, ram, url, key, self.load_timeout, logs)
        write_catalog(catalog, self.catalog_path)

    # -- the router's word (stack/control.py) ---------------------------------------------------------------------

    def _group(self, name: str) -> list[Child]:
        return [c for c in self.servers if c.model is not None and c.model.name == name]

    def models_view(self) -> dict[str, dict[str, Any]]:
        view = {}
        for m in self.stack.models:
            group = self._group(m.name)
            running = [c for c in group if c.name in self._keepers]
            if not running:
                status = "unloaded"
            elif all(
                c.up is not None and c.up.done() and not c.up.cancelled() and c.up.exception() is None for c in group
            ):
                status = "loaded"
            else:
                status = "loading"
            view[m.name] = {"status": status, "layers": self._layers.get(m.name)}
        return view

    def router_ready(self, notes: list[str]) -> None:
        if self._ready_notes is None:
            self._ready_notes = notes
        for child in self.servers:
            if child.name not in self._keepers and child.status == ProcessState.STARTING:
                child.status = ProcessState.UNLOADED  # the router did not preload it (it would not fit)
        self.write_state()

    async def start_model(self, name: str, layers: int, why: str) -> int:
        """Start every replica of the model (unless they run) and return once each is healthy and registered.
        Returns the GPU layers it runs with; raises StartError (after cleaning up) if one does not come up."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            group = self._group(name)
            if not any(c.name in self._keepers for c in group):
                model = group[0].model
                assert model is not None
                log.info(f"loading {name}" + (f" ({why})" if why else ""))
                began = time.monotonic()
                loop = asyncio.get_running_loop()
                assert self.life is not None  # the router's word comes while run() runs
                for i, child in enumerate(group):
                    port = model.port + i if model.port else free_port(self.server_host)
                    child.url = f"http://{self.server_host}:{port}"
                    child.argv = serve_argv(model, self.ggufs[name], port, layers, self.server_host)
                    child.up = loop.create_future()
                    self._keepers[child.name] = asyncio.create_task(self.life.keep(child))
                self._layers[name] = layers
            else:
                began = None
            problem = await self._until_up(group)
            if problem is not None:
                await self._halt(group)
                self._layers.pop(name, None)
                self.write_state()
                err = StartError(problem)
                if not self._announced:  # a model the stack preloads does not come up: stop, as before on-demand
                    self._fatal = err
                raise err
            if began is not None:
                log.info(f"{name} loaded in {time.monotonic() - began:.1f} s")
            return self._layers[name]

    async def _until_up(self, group: list[Child]) -> str | None:
        """None once every child of the group is up; else why not (its keep() ended: StartError or cancelled)."""
        for child in group:
            task = self._keepers.get(child.name)
            if task is None or child.up is None:
                return f"{child.name} was stopped while it started"
            await asyncio.wait([task, child.up], return_when=asyncio.FIRST_COMPLETED)
            if child.up.done() and not child.up.cancelled():
                continue
            if task.cancelled():
                return f"{child.name} was stopped while it started"
            return str(task.exception() or f"{child.name} did not start")
        return None

    async def _halt(self, group: list[Child]) -> None:
        tasks = [t for c in group if (t := self._keepers.pop(c.name, None)) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(kill(c, self.stop_timeout) for c in group))
        for child in group:
            if child.up is not None and not child.up.done():
                child.up.cancel()
            if child.status != ProcessState.FAILED:
                child.status = ProcessState.UNLOADED

    async def stop_model(self, name: str, why: str) -> None:
        """Stop every replica of the model; returns once each process is gone."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            group = self._group(name)
            if not any(c.name in self._keepers for c in group):
                return
            held = [rss_bytes(c.proc.pid) for c in group if c.proc is not None and c.proc.returncode is None]
            log.info(f"unloading {name}" + (f" ({why})" if why else ""))
            await self._halt(group)
            for child in group:
                child.proc = None  # state.json: no pid for a server that is not running
            self._layers.pop(name, None)
            self.write_state()
            freed = sum(b for b in held if b is not None)
            log.info(f"{name} unloaded" + (f", its servers held {freed / 2**20:.0f} MiB" if freed else ""))

    async def _check(self, tasks: list[asyncio.Task[None]], stop: asyncio.Event, wait: float) -> None:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, waiter], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        for task in done:
            if task is not waiter and (exc := task.exception()) is not None:
                raise exc

    async def stop_all(self) -> None:
        children = [*self.servers, self.router]
        await asyncio.gather(*(kill(c, self.stop_timeout) for c in children))
        for c in children:
            c.status = ProcessState.STOPPED
        self.write_state()

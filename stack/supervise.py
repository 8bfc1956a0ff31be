"""Run the stack: one `python -m serve` per model replica and one `python -m route`, kept alive.

The router decides which models are loaded (route/ondemand.py: preloads at start, loads on demand, unloads idle
ones under the budget); the supervisor executes its word over the control channel (stack/control.py) and never
starts or stops a model server on its own, beyond restarting one that died.

Each child runs in its own session (process group), so the terminal's Ctrl-C reaches only the supervisor, which then
stops every group: SIGTERM, and SIGKILL after a timeout. On Linux the children also get SIGTERM if the supervisor
itself dies (PR_SET_PDEATHSIG), so no server outlives it. A model server that exits is restarted with exponential
backoff and registered again; meanwhile the router's health checks and retries route around it. One that stops
answering its health check (three checks in a row, 3 s apart) is killed and restarted the same way.

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
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from hearth_common.keys import new_key, write_key_file
from hearth_common.logs import formatted
from hearth_common.procs import CODE_ROOT, child_env, free_port
from hearth_common.registration import registration
from route.catalog import Catalog, CatalogModel, CostEntry, write_catalog
from stack.catalog import build_catalog
from stack.config import ModelSection, StackConfig
from stack.control import ControlServer, start_control
from stack.errors import StartError

log = logging.getLogger("stack")
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
STABLE_AFTER = 30.0  # a server that stayed up this long starts its backoff over
WATCH_EVERY, WATCH_MISSES = 3.0, 3  # a child that fails 3 checks in a row (3 s timeout, 3 s apart) is hung
CHILD_PREFIXES = ("HEARTH_SERVE_", "HEARTH_ROUTE_")  # settings the stack's children never take from our environment


def backoff(failures: int) -> float:
    """Seconds to wait before restart number `failures` (1, 2, ...) in a row: 1, 2, 4, ... up to 30."""
    return min(BACKOFF_FIRST * 2 ** max(failures - 1, 0), BACKOFF_MAX)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, whatever kills it."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str  # backend name at the router
    argv: list[str]
    url: str
    ready_path: str  # answers 200 once the process can take traffic
    log: Path
    model: ModelSection | None = None  # None: the router
    model_type: str = "generic"
    env: dict[str, str] = field(default_factory=dict, repr=False)  # keys: never in argv, state.json or a log
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # what the supervisor's checks send
    proc: asyncio.subprocess.Process | None = None
    status: str = "starting"  # unloaded, starting, healthy, restarting, failed, stopped
    restarts: int = 0
    last_exit: int | None = None
    up: asyncio.Future[None] | None = None  # done once this start's process is healthy and registered

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "pid": self.proc.pid if self.proc else None,
            "status": self.status,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "log": str(self.log),
            **({"models": self.model.names, "model_type": self.model_type} if self.model else {}),
        }


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (Linux), for the console's unload line."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _toml_value(value: Any) -> str:
    # JSON's string and number syntax is valid TOML for the plain values written here.
    return json.dumps(str(value) if isinstance(value, Path) else value)


def router_toml(stack: StackConfig, port: int, catalog: Path | None = None) -> str:
    r = stack.router
    values = {
        "host": r.host,
        "port": port,
        "strategy": r.strategy,
        "health_interval": r.health_interval,
        "max_retries": r.max_retries,
        "timeout": r.timeout,
        "state_file": r.state_file,
        "catalog": catalog,
    }
    lines = [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    if r.model_strategies:
        lines.append("[model_strategies]")
        lines += [f"{_toml_value(k)} = {_toml_value(v)}" for k, v in r.model_strategies.items()]
    return "\n".join(lines) + "\n"


def serve_argv(model: ModelSection, gguf: Path, port: int, n_gpu_layers: int) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "serve",
        "--model-path",
        str(gguf),
        "--model-name",
        model.name,
        "--port",
        str(port),
        "--n-gpu-layers",
        str(n_gpu_layers),
        "--ctx-size",
        str(model.ctx_size),
        "--max-concurrent",
        str(model.max_concurrent),
        "--max-queue",
        str(model.max_queue),
        "--kv-type",
        model.kv_type,
    ]
    if model.model_type:
        argv += ["--model-type", model.model_type]
    if model.threads:
        argv += ["--threads", str(model.threads)]
    if model.aliases:  # the server answers to them too (404 model_not_found for any other name)
        argv += ["--alias", ",".join(model.aliases)]
    if model.embeddings:
        argv.append("--embeddings")
    return argv


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
    router: Child = field(init=False)
    servers: list[Child] = field(init=False, default_factory=list)
    http: aiohttp.ClientSession | None = field(init=False, default=None)
    admin_key: str = field(init=False, repr=False)
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
            [sys.executable, "-m", "route", "--config", str(config)],
            f"http://{host}:{port}",
            "/status",
            logs / "router.log",
            env=router_env,
            headers=admin,
        )
        for m in self.stack.models:
            first = m.port or 0
            for i in range(m.replicas):
                port = first + i if first else free_port()
                name = m.name if m.replicas == 1 else f"{m.name}-{i + 1}"
                argv = serve_argv(m, self.ggufs[m.name], port, self.gpu_layers[m.name])
                self.servers.append(
                    Child(
                        name,
                        argv,
                        f"http://127.0.0.1:{port}",
                        "/health",
                        logs / f"{name}.log",
                        m,
                        self.model_types[m.name],
                        env={"HEARTH_SERVE_API_KEY": backend_key},
                        status="starting" if m.preload else "unloaded",
                    )
                )
        if self.catalog_models is None:
            self.catalog_models = [
                CatalogModel(
                    name=m.name,
                    names=m.names,
                    replicas=m.replicas,
                    ttl=m.ttl,
                    preload=m.preload,
                    pinned=m.pinned,
                    preload_layers=self.gpu_layers[m.name],
                    costs=[CostEntry(layers=self.gpu_layers[m.name], vram=0, ram=0)],
                )
                for m in self.stack.models
            ]

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

    async def spawn(self, child: Child) -> None:
        fd = os.open(child.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # also a log made before logs were owner-only
        with os.fdopen(fd, "a") as out:
            out.write(formatted("stack", f"starting {child.name}: {' '.join(child.argv)}") + "\n")
            out.flush()
            child.proc = await asyncio.create_subprocess_exec(
                *child.argv,
                cwd=CODE_ROOT,
                env=self.child_env(child),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        child.status = "starting"
        self.write_state()

    def child_env(self, child: Child, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """The child's environment: ours without HEARTH_SERVE_* and HEARTH_ROUTE_* (the stack file is the children's
        one source of settings), our log level, and its keys."""
        program = "HEARTH_SERVE_" if child.model is not None else "HEARTH_ROUTE_"
        env = child_env({k: v for k, v in environ.items() if not k.startswith(CHILD_PREFIXES)})
        return {**env, program + "LOG_LEVEL": self.log_level, **child.env}

    async def wait_ready(self, child: Child) -> bool:
        """True once the child answers its ready path with 200; False if it exits or times out (then it is killed)."""
        assert self.http is not None and child.proc is not None
        deadline = time.monotonic() + self.load_timeout
        while child.proc.returncode is None and time.monotonic() < deadline:
            try:
                async with self.http.get(
                    child.url + child.ready_path, headers=child.headers, timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status == 200:
                        return True
                    body = await resp.json(content_type=None) if resp.status == 503 else None
                    if isinstance(body, dict) and body.get("status") == "error":  # serve: the model failed to load
                        log.warning(f"{child.name} failed to load its model: {body.get('error')}")
                        await self.kill(child, self.stop_timeout)
                        return False
            except (TimeoutError, aiohttp.ClientError, ValueError):
                pass
            with contextlib.suppress(TimeoutError):
                # Often: a request may be waiting for this load.
                await asyncio.wait_for(asyncio.shield(child.proc.wait()), 0.05)
        if child.proc.returncode is None:
            log.warning(f"{child.name} not ready after {self.load_timeout:.0f} s; killing it")
            await self.kill(child, 0)
        return False

    async def kill(self, child: Child, grace: float) -> None:
        """SIGTERM the child's process group, SIGKILL it after `grace` seconds."""
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), grace if sig == signal.SIGTERM else None)
                return
            except TimeoutError:
                log.warning(f"{child.name} ignored SIGTERM for {grace:.0f} s; killing it")

    # -- registration ---------------------------------------------------------------------------------------------

    async def register(self, child: Child, attempts: int = 5) -> bool:
        assert self.http is not None and child.model is not None
        body = registration(child.name, child.url, child.model_type, child.model.names)
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        for attempt in range(attempts):
            try:
                async with self.http.post(
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

    # -- supervision loops ----------------------------------------------------------------------------------------

    async def keep(self, child: Child) -> None:
        """Start the child and restart it whenever it exits; a first start that fails raises StartError."""
        failures = 0
        started_once = False
        while True:
            await self.spawn(child)
            assert child.proc is not None
            began = time.monotonic()
            if await self.wait_ready(child):
                if child.model is None:  # a restarted router may have lost the registrations
                    await asyncio.gather(*(self.register(c) for c in self.servers if c.status == "healthy"))
                elif not await self.register(child) and not started_once:
                    raise StartError(f"the router refused {child.name}'s registration (see above)")
                # A later registration failure means the router is down: its restart registers this one again.
                child.status = "healthy"
                self.write_state()
                if started_once:
                    log.info(f"{child.name} is back (restart {child.restarts})")
                elif child.up is not None and not child.up.done():
                    child.up.set_result(None)
                started_once = True
                await self.watch(child)
            elif not started_once:
                child.status = "failed"
                self.write_state()
                raise StartError(f"{child.name} did not start; the end of {child.log}:\n" + tail(child.log))
            child.last_exit = child.proc.returncode
            child.restarts += 1
            failures = 1 if time.monotonic() - began > STABLE_AFTER else failures + 1
            delay = backoff(failures)
            child.status = "restarting"
            self.write_state()
            log.warning(f"{child.name} exited with code {child.last_exit}; restarting in {delay:.0f} s")
            await asyncio.sleep(delay)

    async def watch(self, child: Child) -> None:
        """Return when the child exits; kill it first if it stops answering (a hung process is as good as dead)."""
        assert self.http is not None and child.proc is not None
        misses = 0
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(child.proc.wait()), WATCH_EVERY)
                return
            except TimeoutError:
                pass
            try:
                async with self.http.get(
                    child.url + child.ready_path,
                    headers=child.headers,
                    timeout=aiohttp.ClientTimeout(total=WATCH_EVERY),
                ) as r:
                    misses = 0 if r.status == 200 else misses + 1
            except (TimeoutError, aiohttp.ClientError):
                misses += 1
            if misses >= WATCH_MISSES:
                log.warning(f"{child.name} has not answered {child.ready_path} for {misses} checks; restarting it")
                await self.kill(child, 2.0)  # a hung process will not shut down gracefully anyway

    async def run(self, stop: asyncio.Event, on_ready: Any = None) -> None:
        """Run until `stop` is set; then stop every child. Raises StartError if a first start fails."""
        async with aiohttp.ClientSession() as self.http:
            tasks: list[asyncio.Task[None]] = []
            key = new_key()  # the control channel's; it reaches the router in the owner-only catalog only
            control: ControlServer | None = None
            try:
                control = await start_control(self, key)
                self.write_catalog(control.url, key)
                tasks.append(asyncio.create_task(self.keep(self.router)))
                # The router preloads the models through the control channel and then says it is ready.
                while not stop.is_set():
                    await self._check(tasks, stop, 0.2)
                    if self._fatal is not None:
                        raise self._fatal
                    if not self._announced and self._ready_notes is not None and self.router.status == "healthy":
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
        catalog: Catalog = build_catalog(self.catalog_models, vram, ram, url, key, self.load_timeout)
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
            if child.name not in self._keepers and child.status == "starting":
                child.status = "unloaded"  # the router did not preload it (it would not fit)
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
                for i, child in enumerate(group):
                    port = model.port + i if model.port else free_port()
                    child.url = f"http://127.0.0.1:{port}"
                    child.argv = serve_argv(model, self.ggufs[name], port, layers)
                    child.up = loop.create_future()
                    self._keepers[child.name] = asyncio.create_task(self.keep(child))
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
        await asyncio.gather(*(self.kill(c, self.stop_timeout) for c in group))
        for child in group:
            if child.up is not None and not child.up.done():
                child.up.cancel()
            child.status = "unloaded" if child.status != "failed" else "failed"

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
        await asyncio.gather(*(self.kill(c, self.stop_timeout) for c in children))
        for c in children:
            c.status = "stopped"
        self.write_state()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

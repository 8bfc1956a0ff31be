"""A node: one host's supervisor and model servers under that host's own [budget] and stack file, with no router of
its own (`python -m stack --node STACK.toml --host ADDR --port P --join http://ROUTER:PORT ...`). The routers it joins
decide what it loads (route/nodes.py); it only executes, as the stack's supervisor does for its own router.

- Its control API (stack/control.py: GET /models, POST /start, /stop, /ready) listens on ADDR:P and takes the node
  key (HEARTH_NODE_KEY or a key file; the routers hold the same key as HEARTH_ROUTE_NODE_KEY).
- Its model servers listen on ADDR too, named NODE.MODEL (NODE.MODEL-i for replicas), and register with every router
  through the node key when they come up (POST /backends/register); they require the routers' backend key when the
  node is given one (HEARTH_NODE_BACKEND_KEY), and no key otherwise. With `[node] shared_state` they keep stored
  responses in the routers' Redis (serve/api/responses_shared.py): previous_response_id works on every node.
- It registers itself with each router (POST /nodes/register: its control URL, budget, load timeout and the catalog
  models of stack/catalog.py, with their planned sizes) and asks each, every `rejoin_interval` seconds, whether it
  still knows the node (GET /nodes/NAME): a 404 (the router restarted or forgot it) registers the node and its
  running servers again, as does a router that answers again after missing a registration.
- Ctrl-C (or SIGTERM) unregisters its servers from the routers and stops them. The node's death (SIGKILL) takes its
  servers with it (PR_SET_PDEATHSIG); the routers mark its models unloaded once its control API stops answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from hearth_common.keys import KeyFileError, find_key
from hearth_common.procs import start_time
from hearth_common.registration import registration
from route.catalog import BudgetEntry
from route.nodes import NodeRegistration
from stack.catalog import model_capabilities
from stack.child import Checks, Child, Hooks, Life, ProcessState, kill
from stack.commands import environment
from stack.config import NodeSection
from stack.control import ControlServer, start_control
from stack.errors import ConfigError, StartError
from stack.supervise import Supervisor, owner_only_dir

log = logging.getLogger("stack")
KEY_ENV, BACKEND_KEY_ENV = "HEARTH_NODE_KEY", "HEARTH_NODE_BACKEND_KEY"
PASSWORD_ENV = "HEARTH_NODE_SHARED_STATE_PASSWORD"
CALL_TIMEOUT = 10.0  # seconds one call to a router may take


def node_keys(
    node: NodeSection, key_file: Path | None = None, environ: Mapping[str, str] = os.environ
) -> tuple[str, str | None]:
    """(node key, backend key or None): each from its file when given, else its environment variable. Raises
    ConfigError when there is no node key, or a file is not owner-only."""
    try:
        key = find_key(key_file or node.key_file, KEY_ENV, environ)
        backend = find_key(node.backend_key_file, BACKEND_KEY_ENV, environ)
    except KeyFileError as err:
        raise ConfigError(str(err)) from None
    if key is None:
        raise ConfigError(
            f"a node needs the node key the routers hold as HEARTH_ROUTE_NODE_KEY: set {KEY_ENV} or give "
            "--node-key-file (an owner-only file)"
        )
    if len(key) < 16:
        raise ConfigError("the node key must be at least 16 characters (the routers refuse shorter ones)")
    return key, backend


def shared_state_env(node: NodeSection, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What its model servers are given of [node] shared_state: the URL, and the password (from its file, else
    PASSWORD_ENV) in their environment, never on their command line. Raises ConfigError for a file not owner-only."""
    if node.shared_state is None:
        return {}
    try:
        password = find_key(node.shared_state_password_file, PASSWORD_ENV, environ)
    except KeyFileError as err:
        raise ConfigError(str(err)) from None
    env = {"HEARTH_SERVE_SHARED_STATE": node.shared_state}
    return env | ({"HEARTH_SERVE_SHARED_STATE_PASSWORD": password} if password else {})


@dataclass
class NodeSupervisor(Supervisor):
    """The stack's supervisor without a router: its control API on the node's address, its word from the routers
    it joins. Built like Supervisor, plus `node` (the [node] section with the command line over it) and its keys."""

    node: NodeSection = field(default_factory=NodeSection)
    node_key: str = field(default="", repr=False)
    backend_key: str | None = field(default=None, repr=False)
    control_url: str = field(init=False, default="")
    _http: aiohttp.ClientSession | None = field(init=False, default=None)
    _known: dict[str, bool] = field(init=False, default_factory=dict)  # router -> it knows this node and its servers

    def __post_init__(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        logs = owner_only_dir(self.state_dir / "logs")
        self.server_host = self.node.host
        self.name_prefix = f"{self.name}."
        r = self.stack.router  # [router]'s health settings are the hang check of the node's servers too
        self.checks = Checks(r.health_interval, r.health_timeout, r.hang_checks)
        self._announced = True  # no start-up failure stops a node: the router that asked hears of it
        keys = {"HEARTH_SERVE_API_KEY": self.backend_key} if self.backend_key else {}
        self.add_servers(logs, keys | shared_state_env(self.node))

    @property
    def name(self) -> str:
        return self.node.node_name()

    @property
    def api_url(self) -> str:
        return self.control_url

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.node_key}"}

    def child_env(self, child: Child, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """As the stack's, without the node's keys (a model server needs only its backend key)."""
        ours = {k: v for k, v in environ.items() if k not in (KEY_ENV, BACKEND_KEY_ENV, PASSWORD_ENV)}
        return environment("HEARTH_SERVE_", self.log_level, child.env, ours)

    def write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "started": start_time(os.getpid()),
            "node": self.name,
            "control": self.control_url,
            "join": self.node.join,
            "router": None,  # stack/leftovers.py reads the servers
            "servers": [c.view() for c in self.servers],
        }
        path = self.state_dir / "state.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, path)

    # -- the routers --------------------------------------------------------------------------------------------------

    def registration(self) -> dict[str, Any]:
        """POST /nodes/register's body (route/nodes.py's NodeRegistration, checked here)."""
        assert self.catalog_models is not None
        vram, ram = self.budget
        return NodeRegistration(
            name=self.name,
            url=self.control_url,
            budget=BudgetEntry(vram=vram, ram=ram),
            load_timeout=self.load_timeout,
            models=self.catalog_models,
        ).model_dump(mode="json")

    async def _call(self, method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
        """(status, text) of one call to a router; (0, why) when it did not answer."""
        assert self._http is not None
        try:
            async with self._http.request(
                method, url, json=body, headers=self.headers, timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT)
            ) as resp:
                return resp.status, (await resp.text())[:300]
        except (TimeoutError, aiohttp.ClientError) as err:
            return 0, str(err) or type(err).__name__

    async def _register_at(self, router: str, child: Child) -> bool:
        assert child.model is not None
        caps = model_capabilities(child.model, self.ggufs.get(child.model.name))
        body = registration(child.name, child.url, child.model_type, child.model.names, capabilities=caps)
        status, text = await self._call("POST", router + "/backends/register", body)
        if status != 200:
            self._known[router] = False  # registered again once it answers (_rejoin)
            log.warning(f"could not register {child.name} with {router}: {status or ''} {text}".replace("  ", " "))
        return status == 200

    async def register(self, child: Child, attempts: int = 1) -> bool:
        """Register a server with every router at once; True when one of them took it."""
        done = await asyncio.gather(*(self._register_at(r, child) for r in self.node.join))
        return any(done)

    async def came_up(self, child: Child, first: bool) -> None:
        if not await self.register(child) and first:
            raise StartError(f"no router took {child.name}'s registration (see above)")

    async def _join(self, router: str) -> None:
        """Make sure `router` knows this node and its running servers (one pass of _rejoin)."""
        status, text = await self._call("GET", f"{router}/nodes/{self.name}")
        if status == 200 and self._known.get(router):
            return
        if status == 404:
            status, text = await self._call("POST", router + "/nodes/register", self.registration())
            if status == 200:
                log.info(f"node {self.name} joined {router}")
        if status != 200:
            if self._known.get(router, True):
                why = "does not answer" if status == 0 else f"answered {status}"
                log.warning(f"router {router} {why} ({text.strip()}); this node registers again when it can")
            self._known[router] = False
            return
        healthy = [c for c in self.servers if c.status == ProcessState.HEALTHY]
        self._known[router] = True  # before the servers: one that fails marks it again
        await asyncio.gather(*(self._register_at(router, c) for c in healthy))

    async def _rejoin(self, router: str) -> None:
        while True:
            await asyncio.sleep(self.node.rejoin_interval)
            await self._join(router)

    async def _unregister_all(self) -> None:
        """Ctrl-C: the routers stop sending requests to this node's servers before they stop."""
        calls = [
            self._call("POST", r + "/backends/unregister", {"name": c.name})
            for r in self.node.join
            for c in self.servers
            if c.status == ProcessState.HEALTHY
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*calls), 3.0)

    # -- supervision --------------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, on_ready: Any = None) -> None:
        """Serve the control API, join the routers, and do their word until `stop` is set; then stop every server."""
        async with aiohttp.ClientSession() as http:
            self._http = http
            hooks = Hooks(env=self.child_env, changed=self.write_state, came_up=self.came_up)
            self.life = Life(http, hooks, self.load_timeout, self.stop_timeout, self.checks)
            tasks: list[asyncio.Task[None]] = []
            control: ControlServer | None = None
            try:
                try:
                    control = await start_control(self, self.node_key, self.node.host, self.node.port)
                except OSError as err:
                    raise StartError(
                        f"the node's control API cannot listen on {self.node.host}:{self.node.port}: "
                        f"{err.strerror or err}"
                    ) from None
                self.control_url = control.url
                self.write_state()
                await asyncio.gather(*(self._join(r) for r in self.node.join))
                joined = [r for r in self.node.join if self._known.get(r)]
                if on_ready:
                    on_ready(self)
                log.info(
                    f"node {self.name} ready: control API at {self.control_url}, joined "
                    + (", ".join(joined) or "no router yet")
                    + ". Ctrl-C stops everything."
                )
                tasks = [asyncio.create_task(self._rejoin(r)) for r in self.node.join]
                while not stop.is_set():
                    await self._check(tasks, stop, 0.5)
            finally:
                keepers = list(self._keepers.values())
                for task in [*tasks, *keepers]:
                    task.cancel()
                await asyncio.gather(*tasks, *keepers, return_exceptions=True)
                await self._unregister_all()
                if control is not None:
                    await control.close()
                await self.stop_all()

    def router_ready(self, notes: list[str]) -> None:
        for note in notes:
            log.info("%s", note)
        super().router_ready(notes)

    async def stop_all(self) -> None:
        await asyncio.gather(*(kill(c, self.stop_timeout) for c in self.servers))
        for c in self.servers:
            c.status = ProcessState.STOPPED
        self.write_state()

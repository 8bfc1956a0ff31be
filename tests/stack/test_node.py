"""`python -m stack --node` (stack/node.py): its options over [node], its keys, and its word with the routers it joins
(a fake router in this event loop: registration, registering again when the router forgets it, a refused key).
The real thing with routers, Redis and model servers: tests/e2e/test_nodes_real.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from pydantic import ValidationError

from stack.config import NodeSection, load_stack
from stack.errors import ConfigError
from stack.node import NodeSupervisor, node_keys, shared_state_env

pytestmark = pytest.mark.anyio
KEY = "k" * 32
STACK = """
[router]
port = 9000

[node]
join = ["http://127.0.0.1:1"]
rejoin_interval = 0.1

[[models]]
name = "small"
aliases = ["s"]
source = "small.gguf"
preload = false
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    (tmp_path / "small.gguf").write_bytes(b"GGUF")
    path = tmp_path / "stack.toml"
    path.write_text(STACK)
    return path


def test_node_options_over_the_node_section(path: Path) -> None:
    from stack.__main__ import load

    argv = [str(path), "--node", "--host", "127.0.0.2", "--port", "7001", "--join", "http://a:1", "--join=http://b:2/"]
    options, stack, _ = load(argv, {})
    assert options.node and stack.node is not None
    assert (stack.node.host, stack.node.port, stack.node.join) == ("127.0.0.2", 7001, ["http://a:1", "http://b:2"])
    assert stack.router.port == 9000  # --port is the node's with --node
    assert stack.node.node_name() == "127.0.0.2"
    _, stack, _ = load([str(path), "--node", "--node-name", "gpu-1"], {"HEARTH_STACK_NODE__JOIN": "http://c:3"})
    assert stack.node is not None and (stack.node.name, stack.node.join) == ("gpu-1", ["http://c:3"])
    _, stack, _ = load([str(path), "--port", "7002"], {})
    assert stack.router.port == 7002  # without --node: the router's, as ever


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--node", "--join", "ftp://x"], "--join: "),
        (["--node", "--host", "0.0.0.0"], "--host: a node binds the one address"),
        (["--node", "--node-key", "sk-typed"], "--node-key-file or HEARTH_NODE_KEY"),
    ],
)
def test_node_mistakes_are_one_line(path: Path, argv: list[str], needle: str) -> None:
    from stack.__main__ import load

    with pytest.raises(ConfigError) as err:
        load([str(path), *argv], {})
    assert needle in str(err.value) and "\n" not in str(err.value) and "sk-typed" not in str(err.value)


def test_node_keys(tmp_path: Path) -> None:
    node = NodeSection()
    with pytest.raises(ConfigError, match="HEARTH_NODE_KEY"):
        node_keys(node, environ={})
    with pytest.raises(ConfigError, match="at least 16"):
        node_keys(node, environ={"HEARTH_NODE_KEY": "short"})
    assert node_keys(node, environ={"HEARTH_NODE_KEY": KEY, "HEARTH_NODE_BACKEND_KEY": "b"}) == (KEY, "b")
    file = tmp_path / "node.key"
    file.write_text(KEY + "\n")
    file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        node_keys(node, file, environ={})
    file.chmod(0o600)
    assert node_keys(node, file, environ={"HEARTH_NODE_KEY": "x" * 32}) == (KEY, None)  # the file wins


def test_a_node_gives_its_servers_the_shared_state_in_their_environment(path: Path, tmp_path: Path) -> None:
    """[node] shared_state reaches each model server as HEARTH_SERVE_SHARED_STATE (serve keeps stored responses
    there), the password only in its environment, never on a command line."""
    with pytest.raises(ValidationError, match="password"):
        NodeSection(shared_state="redis://:secret@127.0.0.1:6379/0")
    url = "redis://127.0.0.1:6379/0"
    assert shared_state_env(NodeSection(), {"HEARTH_NODE_SHARED_STATE_PASSWORD": "pw"}) == {}
    section = NodeSection(shared_state=url)
    env = shared_state_env(section, {"HEARTH_NODE_SHARED_STATE_PASSWORD": "pw"})
    assert env == {"HEARTH_SERVE_SHARED_STATE": url, "HEARTH_SERVE_SHARED_STATE_PASSWORD": "pw"}
    secret = tmp_path / "redis.password"
    secret.write_text("from-file\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        shared_state_env(NodeSection(shared_state=url, shared_state_password_file=secret), {})
    secret.chmod(0o600)
    from_file = shared_state_env(NodeSection(shared_state=url, shared_state_password_file=secret), {})
    assert from_file["HEARTH_SERVE_SHARED_STATE_PASSWORD"] == "from-file"
    supervisor = NodeSupervisor(
        load_stack(path),
        {"small": path.parent / "small.gguf"},
        {"small": "generic"},
        {"small": 0},
        path.parent / "state",
        node=NodeSection(host="127.0.0.2", name="n1", shared_state=url, shared_state_password_file=secret),
        node_key=KEY,
        budget=(None, 2**30),
    )
    (child,) = supervisor.servers
    environ = {"HEARTH_NODE_SHARED_STATE_PASSWORD": "ours", "HEARTH_NODE_KEY": KEY, "PATH": "/usr/bin"}
    child_env = supervisor.child_env(child, environ)
    assert child_env["HEARTH_SERVE_SHARED_STATE"] == url
    assert child_env["HEARTH_SERVE_SHARED_STATE_PASSWORD"] == "from-file"
    assert "HEARTH_NODE_SHARED_STATE_PASSWORD" not in child_env and "HEARTH_NODE_KEY" not in child_env
    assert not any("from-file" in arg or "redis://" in arg for arg in child.argv)


class FakeRouter:
    """The node half of a router: /nodes/register, /nodes/NAME (404 once it forgets), /backends/register."""

    def __init__(self) -> None:
        self.known: dict[str, dict[str, Any]] = {}
        self.registrations: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": {"message": "a node needs the node key"}}, status=401)
        if request.method == "POST" and request.path == "/nodes/register":
            body = json.loads(await request.read())
            self.registrations.append(body)
            self.known[body["name"]] = body
            return web.json_response(body)
        if request.method == "GET" and request.path.startswith("/nodes/"):
            name = request.path.removeprefix("/nodes/")
            return web.json_response({"name": name}) if name in self.known else web.json_response({}, status=404)
        return web.json_response({"error": "no such path"}, status=404)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeRouter]:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            yield self
        finally:
            await runner.cleanup()


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def node(path: Path, join: list[str], key: str = KEY) -> NodeSupervisor:
    stack = load_stack(path)
    section = NodeSection(host="127.0.0.2", join=join, rejoin_interval=0.1, name="n1")
    return NodeSupervisor(
        stack,
        {"small": path.parent / "small.gguf"},
        {"small": "generic"},
        {"small": 0},
        path.parent / "state",
        node=section,
        node_key=key,
        budget=(None, 2**30),
    )


async def test_a_node_registers_and_registers_again_when_forgotten(path: Path) -> None:
    async with FakeRouter().serving() as router:
        sup = node(path, [router.url])
        stop = asyncio.Event()
        task = asyncio.create_task(sup.run(stop))
        try:
            await until(lambda: len(router.registrations) == 1)
            body = router.registrations[0]
            assert body["name"] == "n1" and body["url"] == sup.control_url
            assert sup.control_url.startswith("http://127.0.0.2:")
            assert body["budget"] == {"vram": None, "ram": 2**30}
            assert [(m["name"], m["names"]) for m in body["models"]] == [("small", ["small", "s"])]
            assert [c.name for c in sup.servers] == ["n1.small"] and sup.servers[0].url.startswith("http://127.0.0.2:")
            # its control API on its own address, with the node key only
            async with httpx.AsyncClient() as client:
                r = await client.get(sup.control_url + "/models", headers={"Authorization": f"Bearer {KEY}"})
                assert r.json() == {"models": {"small": {"status": "unloaded", "layers": None}}}
                r = await client.get(sup.control_url + "/models", headers={"Authorization": "Bearer " + "x" * 32})
                assert r.status_code == 401
            router.known.clear()  # the router restarted, or forgot it
            await until(lambda: len(router.registrations) == 2)
            assert json.loads((sup.state_dir / "state.json").read_text())["node"] == "n1"
        finally:
            stop.set()
            await task


async def test_a_refused_node_says_so_and_keeps_running(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with FakeRouter().serving() as router:
        sup = node(path, [router.url], key="w" * 32)
        stop = asyncio.Event()
        task = asyncio.create_task(sup.run(stop))
        try:
            await until(lambda: "answered 401" in caplog.text)
            await asyncio.sleep(0.3)  # it asks again, quietly
            assert caplog.text.count("answered 401") == 1 and not router.registrations and not task.done()
        finally:
            stop.set()
            await task

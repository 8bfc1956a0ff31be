"""The control channel between the router (route.ondemand.Control) and the supervisor (stack.control), both real, over
loopback; the executor behind it is a recorder, since the supervisor's process handling is tested end to end in
tests/e2e. And the catalog file that carries its key: owner-only, read back whole, a broken one refused in one line."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from route.__main__ import main as route_main
from route.catalog import Catalog, CatalogModel, Control, CostEntry, read_catalog, write_catalog
from route.control import Control as ControlClient, ControlError
from route.errors import ConfigError
from stack.control import start_control
from stack.errors import StartError

KEY = "k" * 32


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.notes: list[str] | None = None

    def models_view(self) -> dict[str, dict[str, Any]]:
        return {"a": {"status": "unloaded", "layers": None}, "broken": {"status": "unloaded", "layers": None}}

    async def start_model(self, name: str, layers: int, why: str) -> int:
        self.calls.append(("start", name, layers, why))
        if name == "broken":
            raise StartError("broken did not start; the end of its log: ...")
        return layers

    async def stop_model(self, name: str, why: str) -> None:
        self.calls.append(("stop", name, why))

    def router_ready(self, notes: list[str]) -> None:
        self.notes = notes


def test_control_channel_round_trip() -> None:
    async def run() -> Recorder:
        executor = Recorder()
        server = await start_control(executor, KEY)
        client = ControlClient(server.url, KEY, load_timeout=10)
        stranger = ControlClient(server.url, "x" * 32, load_timeout=10)
        try:
            assert server.url.startswith("http://127.0.0.1:")
            assert (await client.models())["a"]["status"] == "unloaded"
            assert await client.start("a", 3, "a request is waiting") == 3
            await client.stop("a", "idle")
            await client.ready(["b is not loaded at start: too large"])
            with pytest.raises(ControlError, match="broken did not start"):
                await client.start("broken", 0, "preload")
            with pytest.raises(ControlError, match="no model 'zzz'"):
                await client.start("zzz", 0, "")
            with pytest.raises(ControlError, match="needs its key"):
                await stranger.start("a", 0, "")
            async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as raw:
                assert (await raw.post("/start", json={"model": "a", "layers": -1})).status_code == 400
                assert (await raw.post("/start", content=b"{nope")).status_code == 400
                assert (await raw.get("/models", headers={"Authorization": ""})).status_code == 401
        finally:
            await client.close()
            await stranger.close()
            await server.close()
        return executor

    executor = asyncio.run(run())
    assert executor.calls == [
        ("start", "a", 3, "a request is waiting"),
        ("stop", "a", "idle"),
        ("start", "broken", 0, "preload"),
    ]
    assert executor.notes == ["b is not loaded at start: too large"]


def catalog() -> Catalog:
    model = CatalogModel(name="a", names=["a", "alias"], costs=[CostEntry(layers=0, vram=0, ram=100)])
    return Catalog(control=Control(url="http://127.0.0.1:9", key=KEY), models=[model])


def test_catalog_file_is_owner_only_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "catalog.json"
    write_catalog(catalog(), path)
    assert path.stat().st_mode & 0o077 == 0  # it holds the control key
    assert read_catalog(path) == catalog()
    assert [p.name for p in path.parent.iterdir()] == ["catalog.json"]  # no temp file left


def test_broken_catalog_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"control": {"url": "http://example.com:80", "key": KEY}, "models": []}))
    with pytest.raises(ConfigError, match=re.escape("control.url")):
        read_catalog(path)
    assert route_main(["--catalog", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read catalog" in err

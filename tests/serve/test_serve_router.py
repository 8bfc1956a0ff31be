"""`--router URL`: the server registers itself with a real router at start and leaves it at shutdown."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from testkit.procs import wait_until
from testkit.servers import running_router, running_server
from testkit.tiny_gguf import build_tiny_gguf

pytestmark = pytest.mark.slow


KEY = "router-admin-key"
ADMIN = {"Authorization": f"Bearer {KEY}"}


def test_registers_and_unregisters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_SERVE_ROUTER_KEY", KEY)  # the server's key for --router, out of its command line
    with running_router("--state-file", str(tmp_path / "state.json"), env={"HEARTH_ROUTE_ADMIN_KEY": KEY}) as router:

        def backends() -> list[dict]:
            return httpx.get(router + "/backends", headers=ADMIN).json()["backends"]

        with running_server("--model-path", str(build_tiny_gguf()), "--router", router, "--model-name", "tiny") as url:
            assert wait_until(lambda: any(b["name"] == "tiny" for b in backends()))
            assert KEY.encode() not in Path(f"/proc/{url.proc.pid}/cmdline").read_bytes()
            r = httpx.post(
                router + "/v1/chat/completions",
                timeout=30,
                json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            )
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        # after SIGINT the server has said goodbye
        assert wait_until(lambda: not any(b["name"] == "tiny" and not b.get("draining") for b in backends()), timeout=5)

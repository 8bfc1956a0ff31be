"""A stack for the fault tests: demo-think in two replicas (so a killed one has a sibling to retry on) and
demo-harmony in one, each with a queue deep enough that 32 clients never see a 429."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.stack import DEMO, StackProcess, demo_models_missing

CHAOS_STACK = f"""
[router]
port = 0
health_interval = 1
max_retries = 3
timeout = 60

[[models]]
name = "demo-think"
aliases = ["think"]
source = "{DEMO / "demo-think"}"
replicas = 2
ctx_size = 512
max_concurrent = 4
max_queue = 64
threads = 1

[[models]]
name = "demo-harmony"
source = "{DEMO / "demo-harmony"}"
ctx_size = 512
max_concurrent = 4
max_queue = 64
threads = 1
"""


@pytest.fixture(scope="session")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    reason = demo_models_missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("chaos")
    path = folder / "stack.toml"
    path.write_text(CHAOS_STACK)
    proc = StackProcess([str(path)], folder / "state")
    yield proc
    proc.stop()

"""`cluster`: the processes a router test starts (tests.route.route_procs), killed afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.route.route_procs import Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        c.close()

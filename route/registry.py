"""Backends, their health and load, and the state file that keeps registrations across restarts."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from hearth_common.capabilities import Capability, union
from route.config import BackendSpec
from route.errors import ConfigError, NotFound


class Listener(Protocol):
    """Told of registrations made here (route/shared/sync.py shares them with other routers)."""

    def registered(self, backend: Backend) -> None: ...
    def unregistered(self, name: str, at: float) -> None: ...


@dataclass(eq=False)
class Backend:
    """One registered model server and what the router knows of it. Mutated only on the event loop."""

    spec: BackendSpec
    healthy: bool = False
    draining: bool = False
    active: int = 0
    total: int = 0
    errors: int = 0
    ejections: int = 0  # ejections so far
    streak: int = 0  # recent ejections; each doubles the next ejection time, forgotten after eject_max healthy
    ejected_at: float = 0.0  # monotonic time of the last ejection
    ejected_until: float = 0.0  # monotonic time; no passing check counts before it
    fails_in_row: int = 0
    passes_in_row: int = 0
    next_check: float = 0.0  # monotonic time of the next active check
    last_check: float | None = None  # wall-clock time, for people
    last_error: str | None = None
    registered_at: float = 0.0  # Unix time of the registration it holds (0: from a file at start); newer wins

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def weight(self) -> float:
        return self.spec.weight

    def view(self) -> dict[str, Any]:
        return {
            **self.spec.model_dump(),
            "healthy": self.healthy,
            "draining": self.draining,
            "active": self.active,
            "total": self.total,
            "errors": self.errors,
            "ejections": self.ejections,
            "ejected_for": max(0.0, round(self.ejected_until - time.monotonic(), 3)),
            "last_check": self.last_check,
            "last_error": self.last_error,
        }


@dataclass
class Registry:
    backends: dict[str, Backend] = field(default_factory=dict)
    served: set[str] = field(default_factory=set)  # every model name any backend ever served: 404 vs 503
    _by_model: dict[str, list[Backend]] = field(default_factory=dict)
    listener: Listener | None = None

    def _reindex(self) -> None:
        index: dict[str, list[Backend]] = {}
        for backend in sorted(self.backends.values(), key=lambda b: b.name):
            for model in backend.spec.models:
                index.setdefault(model, []).append(backend)
        self._by_model = index

    def register(self, spec: BackendSpec, *, healthy: bool, at: float | None = None, announce: bool = True) -> Backend:
        """Add a backend, or update one of the same name (its counters stay). `at`: when it was registered (default:
        now); `announce`: tell the listener (not for what another router registered)."""
        backend = self.backends.get(spec.name)
        if backend is None:
            backend = self.backends[spec.name] = Backend(spec)
        backend.spec = spec
        backend.draining = False
        backend.healthy = healthy
        if healthy:
            backend.ejected_until = 0.0
            backend.fails_in_row = 0
        backend.registered_at = time.time() if at is None else at
        self.served.update(spec.models)
        self._reindex()
        if announce and self.listener is not None:
            self.listener.registered(backend)
        return backend

    def unregister(self, name: str, announce: bool = True) -> Backend:
        """Stop new traffic at once; the backend goes when its last request ends."""
        backend = self.backends.get(name)
        if backend is None or backend.draining:
            raise NotFound(f"no backend named {name!r}", param="name")
        backend.draining = True
        if announce and self.listener is not None:
            self.listener.unregistered(name, max(time.time(), backend.registered_at))
        if backend.active == 0:
            self._remove(backend)
        return backend

    def _remove(self, backend: Backend) -> None:
        if self.backends.get(backend.name) is backend:
            del self.backends[backend.name]
            self._reindex()

    def all_for(self, model: str) -> list[Backend]:
        return self._by_model.get(model, [])

    def candidates(self, model: str) -> list[Backend]:
        return [b for b in self._by_model.get(model, ()) if b.healthy and not b.draining]

    def acquire(self, backend: Backend) -> None:
        backend.active += 1
        backend.total += 1

    def release(self, backend: Backend) -> None:
        backend.active -= 1
        if backend.draining and backend.active == 0:
            self._remove(backend)

    def is_last_healthy(self, backend: Backend) -> bool:
        """True when some model of this backend has no other healthy, serving backend."""
        return any(all(b is backend for b in self.candidates(model)) for model in backend.spec.models)

    def models(self) -> list[str]:
        """Names served by at least one healthy backend."""
        return sorted(m for m, bs in self._by_model.items() if any(b.healthy and not b.draining for b in bs))

    def capabilities(self, model: str) -> list[Capability] | None:
        """What the model's healthy backends say it does, together; None when none of them says."""
        said = [b.spec.capabilities for b in self._by_model.get(model, ()) if b.healthy and not b.draining]
        known = [caps for caps in said if caps is not None]
        return union(known) if known else None

    def live_specs(self) -> list[BackendSpec]:
        return [b.spec for b in self.backends.values() if not b.draining]

    def snapshot(self) -> dict[str, Any]:
        """What the state file holds: the live registrations and every model name ever served."""
        return {"version": 1, "backends": [s.model_dump() for s in self.live_specs()], "served": sorted(self.served)}

    def save(self, path: Path) -> None:
        write_state(path, self.snapshot())


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Write a state file atomically: a temp file in the same folder, fsync, then rename. Blocking: the app
    runs it in a worker thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path) -> tuple[list[BackendSpec], set[str]]:
    """Registrations from a state file; a missing file is an empty state, a broken one a ConfigError."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return [], set()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read state file {path}: {exc}") from None
    try:
        specs = [BackendSpec.model_validate(item) for item in data["backends"]]
        served = {str(name) for name in data.get("served", [])}
    except (KeyError, TypeError, ValidationError) as exc:
        raise ConfigError(f"state file {path} is not a router state file: {exc}") from None
    return specs, served

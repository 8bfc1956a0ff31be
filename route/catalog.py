"""The on-demand catalog: the one contract between the stack, which writes it, and the router, which reads it.

`python -m stack` writes it (JSON, owner-only, temp file and rename) and points the router at it with `catalog` in
the router's config file. It lists every model of the stack file with the placements it can take (from the GGUF:
stack/plan.py's `costs`), its ttl/preload/pinned settings, the memory budget, and how to reach the supervisor's
control channel (loopback URL and a key generated for this run: in this file only, never on a command line), and
its log folder with the names of the logs in it (the web page's log view, route/logstream.py).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hearth_common.capabilities import Capability
from route.errors import ConfigError
from route.residency import Budget, Cost


class CostEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int = Field(ge=0)
    vram: int = Field(ge=0)
    ram: int = Field(ge=0)

    def cost(self) -> Cost:
        return Cost(self.layers, self.vram, self.ram)


class ModelFacts(BaseModel):
    """What Ollama's /api/tags and /api/ps say of a model, read by the stack from its GGUF (hearth_common/gguf_details)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(ge=0, description="the GGUF file's size in bytes")
    digest: str = Field(description="sha256 of the GGUF's header: metadata and tensor table")
    modified_at: float = Field(description="the GGUF file's mtime (Unix seconds)")
    family: str
    parameter_size: str
    quantization_level: str
    context_length: int = Field(0, ge=0, description="the context each server runs with")


class CatalogModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    names: list[str] = Field(min_length=1, description="the name and its aliases, as clients ask for them")
    replicas: int = Field(1, ge=1)
    ttl: float = Field(0.0, ge=0, description="idle seconds before it unloads; 0 keeps it loaded")
    preload: bool = True
    pinned: bool = False
    preload_layers: int | None = Field(None, ge=0, description="its GPU layers in the start-up plan")
    costs: list[CostEntry] = Field(min_length=1, description="placements, most GPU layers first")
    facts: ModelFacts | None = Field(None, description="its GGUF as Ollama's API lists it (None: not read)")
    capabilities: list[Capability] | None = Field(
        None, description="what it does, as /v1/models lists it (hearth_common/capabilities.py); None: not said"
    )

    def options(self) -> list[Cost]:
        return [c.cost() for c in self.costs]

    def cost_for(self, layers: int) -> Cost:
        """The placement with this many GPU layers (the closest one if the supervisor reports another)."""
        return min(self.options(), key=lambda c: abs(c.layers - layers))


class BudgetEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vram: int | None = Field(None, ge=0)
    ram: int | None = Field(None, ge=0)

    def budget(self) -> Budget:
        return Budget(self.vram, self.ram)


class Control(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^http://127\.0\.0\.1:\d+$", description="the supervisor's control channel (loopback)")
    key: str = Field(min_length=16)


class LogFiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path = Field(description="the stack's log folder: NAME.log for each name")
    names: list[str] = Field(
        description="the router's and each model server's log, the only names GET /logs/stream accepts"
    )


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    control: Control
    budget: BudgetEntry = Field(default_factory=BudgetEntry)
    load_timeout: float = Field(600.0, gt=0, description="seconds a request waits for its model to load")
    models: list[CatalogModel]
    logs: LogFiles | None = Field(None, description="the stack's logs, for the web page's log view")


def write_catalog(catalog: Catalog, path: Path) -> None:
    """Owner-only (it holds the control key), written to a temp file and renamed so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(catalog.model_dump_json(indent=1))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_catalog(path: Path) -> Catalog:
    try:
        return Catalog.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "catalog"
            raise ConfigError(f"catalog {path}: {where}: {first['msg']}") from None
        raise ConfigError(f"cannot read catalog {path}: {exc}") from None

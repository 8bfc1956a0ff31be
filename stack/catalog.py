"""The stack's half of the on-demand catalog (route/catalog.py is the contract): from the stack file, the models'
needs and the start-up plan to what the router is told about each model. Pure but for `model_facts`, which reads a
GGUF's header; the supervisor writes the file."""

from __future__ import annotations

from pathlib import Path

from hearth_common.capabilities import Capability, capabilities
from hearth_common.gguf_details import header_digest, read_details
from hearth_common.paths import mmproj_path
from route.catalog import BudgetEntry, Catalog, CatalogModel, Control, CostEntry, LogFiles, ModelFacts
from stack.config import ModelSection, StackConfig
from stack.plan import ModelNeeds, Plan, costs


def model_capabilities(m: ModelSection, gguf: Path | None) -> list[Capability]:
    """What the model's servers will say they do (serve's /v1/models): from the stack file, and the image projector
    beside its GGUF that serve loads on its own (NAME.mmproj.gguf)."""
    vision = gguf is not None and mmproj_path(gguf).is_file()
    return capabilities(embeddings=m.embeddings, rerank=m.rerank, vision=vision)


def catalog_model(
    m: ModelSection,
    preload_layers: int | None,
    costs: list[CostEntry],
    facts: ModelFacts | None = None,
    gguf: Path | None = None,
) -> CatalogModel:
    """What the router is told about one model of the stack file (the one place a CatalogModel is made)."""
    return CatalogModel(
        name=m.name,
        names=m.names,
        replicas=m.replicas,
        ttl=m.ttl,
        preload=m.preload,
        pinned=m.pinned,
        preload_layers=preload_layers,
        costs=costs,
        facts=facts,
        capabilities=model_capabilities(m, gguf),
    )


def catalog_models(
    stack: StackConfig,
    needs: list[ModelNeeds],
    plan: Plan,
    reserve: int,
    gpu: bool,
    facts: dict[str, ModelFacts] | None = None,
    ggufs: dict[str, Path] | None = None,
) -> list[CatalogModel]:
    """From the plan and each model's needs: its cost at each GPU offload the router may choose (and, when given,
    its GGUF's facts for Ollama's listings, and the GGUF for what it does)."""
    by_name = {n.name: n for n in needs}
    return [
        catalog_model(
            m,
            plan.layers(m.name) if m.preload else None,
            [CostEntry(layers=c.layers, vram=c.vram, ram=c.ram) for c in costs(by_name[m.name], reserve, gpu)],
            (facts or {}).get(m.name),
            (ggufs or {}).get(m.name),
        )
        for m in stack.models
    ]


def model_facts(gguf: Path, context_length: int) -> ModelFacts:
    """The GGUF as Ollama's /api/tags and /api/ps list it. Raises OSError or ValueError for an unreadable file."""
    details = read_details(gguf)
    stat = gguf.stat()
    return ModelFacts(
        size=stat.st_size,
        digest=header_digest(gguf, details.header_bytes),
        modified_at=stat.st_mtime,
        family=details.family,
        parameter_size=details.parameter_size,
        quantization_level=details.quantization_level,
        context_length=context_length,
    )


def default_catalog_models(
    stack: StackConfig, gpu_layers: dict[str, int], ggufs: dict[str, Path] | None = None
) -> list[CatalogModel]:
    """Sizes unknown (a supervisor made without a plan, as in tests): each model at its given layers, costing
    nothing."""
    return [
        catalog_model(
            m, gpu_layers[m.name], [CostEntry(layers=gpu_layers[m.name], vram=0, ram=0)], gguf=(ggufs or {}).get(m.name)
        )
        for m in stack.models
    ]


def build_catalog(
    models: list[CatalogModel],
    vram: int | None,
    ram: int | None,
    url: str,
    key: str,
    load_timeout: float,
    logs: LogFiles | None = None,
) -> Catalog:
    return Catalog(
        control=Control(url=url, key=key),
        budget=BudgetEntry(vram=vram, ram=ram),
        load_timeout=load_timeout,
        models=models,
        logs=logs,
    )

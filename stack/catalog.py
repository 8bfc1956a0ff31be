"""The stack's half of the on-demand catalog (route/catalog.py is the contract): from the stack file, the models'
needs and the start-up plan to what the router is told about each model. Pure; the supervisor writes the file."""

from __future__ import annotations

from route.catalog import BudgetEntry, Catalog, CatalogModel, Control, CostEntry, LogFiles
from stack.config import ModelSection, StackConfig
from stack.plan import ModelNeeds, Plan, costs


def catalog_model(m: ModelSection, preload_layers: int | None, costs: list[CostEntry]) -> CatalogModel:
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
    )


def catalog_models(
    stack: StackConfig, needs: list[ModelNeeds], plan: Plan, reserve: int, gpu: bool
) -> list[CatalogModel]:
    """From the plan and each model's needs: its cost at each GPU offload the router may choose."""
    by_name = {n.name: n for n in needs}
    return [
        catalog_model(
            m,
            plan.layers(m.name) if m.preload else None,
            [CostEntry(layers=c.layers, vram=c.vram, ram=c.ram) for c in costs(by_name[m.name], reserve, gpu)],
        )
        for m in stack.models
    ]


def default_catalog_models(stack: StackConfig, gpu_layers: dict[str, int]) -> list[CatalogModel]:
    """Sizes unknown (a supervisor made without a plan, as in tests): each model at its given layers, costing
    nothing."""
    return [
        catalog_model(m, gpu_layers[m.name], [CostEntry(layers=gpu_layers[m.name], vram=0, ram=0)])
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

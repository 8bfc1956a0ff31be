"""The stack's half of the on-demand catalog (route/catalog.py is the contract): from the stack file, the models'
needs and the start-up plan to what the router is told about each model. Pure; the supervisor writes the file."""

from __future__ import annotations

from route.catalog import BudgetEntry, Catalog, CatalogModel, Control, CostEntry
from stack.config import StackConfig
from stack.plan import ModelNeeds, Plan, costs


def catalog_models(
    stack: StackConfig, needs: list[ModelNeeds], plan: Plan, reserve: int, gpu: bool
) -> list[CatalogModel]:
    by_name = {n.name: n for n in needs}
    out = []
    for m in stack.models:
        options = costs(by_name[m.name], reserve, gpu)
        out.append(
            CatalogModel(
                name=m.name,
                names=m.names,
                replicas=m.replicas,
                ttl=m.ttl,
                preload=m.preload,
                pinned=m.pinned,
                preload_layers=plan.layers(m.name) if m.preload else None,
                costs=[CostEntry(layers=c.layers, vram=c.vram, ram=c.ram) for c in options],
            )
        )
    return out


def build_catalog(
    models: list[CatalogModel], vram: int | None, ram: int | None, url: str, key: str, load_timeout: float
) -> Catalog:
    return Catalog(
        control=Control(url=url, key=key),
        budget=BudgetEntry(vram=vram, ram=ram),
        load_timeout=load_timeout,
        models=models,
    )

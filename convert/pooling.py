"""An embedding checkpoint's pooling -> the GGUF's `{arch}.pooling_type`, which llama.cpp pools with.

sentence-transformers releases (Qwen3-Embedding, gte, e5, ...) say how they pool in modules.json, whose Pooling
module's folder holds a config.json with one `pooling_mode_*` flag set (newer ones: `pooling_mode: "lasttoken"`).
llama.cpp pools mean, cls (first token) or last; a checkpoint pooling otherwise is refused rather than converted
into a model that would embed differently. An explicit `pooling` (the converter's --pooling) wins over the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gguf import GGUFValueType, Keys, PoolingType

from convert.errors import SourceError, UnsupportedError

# what --pooling accepts -> llama.cpp's pooling type
POOLING_TYPES: dict[str, PoolingType] = {"mean": PoolingType.MEAN, "cls": PoolingType.CLS, "last": PoolingType.LAST}
# sentence-transformers' names of a pooling mode -> ours
ST_MODES = {
    "pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "last",
    "mean": "mean", "cls": "cls", "lasttoken": "last",
}  # fmt: skip
# sentence-transformers modules that change the vector after pooling; not converted, so refused
UNCONVERTED_MODULES = ("Dense", "LayerNorm", "WeightedLayerPooling", "CNN", "LSTM")


def checkpoint_pooling(folder: Path) -> str | None:
    """mean / cls / last from the folder's sentence-transformers files; None when it has none."""
    modules = _json(folder / "modules.json")
    if not isinstance(modules, list):
        return None
    kinds = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules if isinstance(m, dict)}
    if extra := [k for k in kinds if k in UNCONVERTED_MODULES]:
        raise UnsupportedError(f"modules.json: the sentence-transformers module {extra[0]} is not converted")
    pooling = kinds.get("Pooling")
    if pooling is None:
        return None
    config = _json(folder / str(pooling.get("path", "")) / "config.json")
    if not isinstance(config, dict):
        raise SourceError(f"{folder}: modules.json names a Pooling module without a config.json")
    settings: dict[str, Any] = config  # a JSON object: its keys are strings
    modes = [ST_MODES.get(k, k) for k, v in settings.items() if k.startswith("pooling_mode_") and v is True]
    if isinstance(mode := settings.get("pooling_mode"), str):
        modes.append(ST_MODES.get(mode, mode))
    if len(set(modes)) != 1 or modes[0] not in POOLING_TYPES:
        raise UnsupportedError(
            f"sentence-transformers pooling {'+'.join(sorted(set(modes))) or 'none'} is not one llama.cpp pools "
            f"with ({', '.join(POOLING_TYPES)}); pass --pooling to choose one"
        )
    return modes[0]


def pooling_meta(arch_name: str, folder: Path, override: str | None = None) -> list[tuple[str, Any, GGUFValueType]]:
    """The metadata line to add: [] for a checkpoint that is no embedding model and no explicit choice."""
    if override is not None and override not in POOLING_TYPES:
        raise UnsupportedError(f"unknown pooling {override!r}; choose from {', '.join(POOLING_TYPES)}")
    name = override or checkpoint_pooling(folder)
    if name is None:
        return []
    return [(Keys.LLM.POOLING_TYPE.format(arch=arch_name), int(POOLING_TYPES[name]), GGUFValueType.UINT32)]


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from e

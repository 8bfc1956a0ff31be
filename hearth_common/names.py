"""Names the programs share: routing strategies, chat-format families, backend names."""

from __future__ import annotations

from typing import Literal, get_args

StrategyName = Literal["round_robin", "least_connections", "random", "weighted", "sticky", "prefix"]
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)

ModelType = Literal["gemma3", "gpt-oss", "llama", "mistral", "qwen", "generic"]
MODEL_TYPE_NAMES: tuple[str, ...] = get_args(ModelType)

# GGUF `general.architecture` -> model type (the chat format family); anything else is "generic"
MODEL_TYPES: dict[str, ModelType] = {
    "gpt-oss": "gpt-oss",
    "gemma3": "gemma3",
    "llama": "llama",
    "smollm3": "llama",
    "granite": "llama",
    "mistral3": "mistral",
    "qwen2": "qwen",
    "qwen3": "qwen",
    "qwen3moe": "qwen",
}

# What the router accepts as a backend name (the stack names its servers after their models)
BACKEND_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$"

"""POST /api/show: what Ollama tells about a model, read from this server's GGUF and its loaded template.

- `template`: the GGUF's chat template (Jinja, as hearth renders it; Ollama's own are Go templates).
- `parameters`: `num_ctx N`, the context one request gets here (there is no Modelfile).
- `details`: format `gguf`, family (`general.architecture`), parameter_size (Ollama's style: `8.0B`, `494.03M`),
  quantization_level (`general.file_type`'s name, else the commonest tensor type: `Q4_K_M`, `F16`, ...).
- `model_info`: every GGUF key but the chat template, with `general.parameter_count` added when the file has none;
  arrays (the vocabulary, merges) are null unless `verbose`, as Ollama answers.
- `capabilities`: `completion` (a chat server), `tools` (the template renders calls natively; other templates
  still get tools, in hearth's generic call format), `thinking` (the template thinks), `embedding` (an
  --embeddings server).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serve.api.ollama_schemas import ShowBody
from serve.chat import offload
from serve.runtime import Runtime

TEMPLATE_KEYS = ("tokenizer.chat_template",)
UNITS = ((10**9, "B", 1), (10**6, "M", 2), (10**3, "K", 2))


def parameter_size(count: int) -> str:
    """Ollama's human form of a parameter count."""
    for size, unit, digits in UNITS:
        if count >= size:
            return f"{count / size:.{digits}f}{unit}"
    return str(count)


def gguf_metadata(path: Path, verbose: bool) -> tuple[dict[str, Any], str | None, str]:
    """(model_info, the chat template, the quantization level) from the GGUF's header."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, LlamaFileType

    reader = GGUFReader(path)
    info: dict[str, Any] = {}
    template: str | None = None
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if key in TEMPLATE_KEYS:
            template = str(f.contents())
        elif f.types and f.types[0] == GGUFValueType.ARRAY:
            info[key] = f.contents() if verbose else None
        else:
            info[key] = f.contents()
    info.setdefault("general.parameter_count", sum(int(t.n_elements) for t in reader.tensors))
    try:
        level = LlamaFileType(int(info["general.file_type"])).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (KeyError, TypeError, ValueError):  # no file type, or one this gguf-py does not name
        types = Counter(GGMLQuantizationType(t.tensor_type).name for t in reader.tensors if len(t.shape) > 1)
        level = types.most_common(1)[0][0] if types else "unknown"
    return info, template, level


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def show(runtime: Runtime, req: ShowBody) -> dict[str, Any]:
    if runtime.config.embeddings:
        embedder = runtime.require_embedder()
        capabilities, ctx, source = ["embedding"], embedder.max_tokens, None
    else:
        loaded = runtime.require_loaded()
        template = loaded.template
        capabilities = ["completion"]
        if template.tool_support.native:
            capabilities.append("tools")
        if template.thinks:
            capabilities.append("thinking")
        ctx, source = loaded.engine.ctx_per_seq, template.source
    info, gguf_template, level = await offload.run(gguf_metadata, runtime.model_path, req.verbose)
    family = str(info.get("general.architecture", "unknown"))
    return {
        "license": str(info.get("general.license", "")),
        "modelfile": "",
        "parameters": f"num_ctx {ctx}",
        "template": source if source is not None else gguf_template or "",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": parameter_size(int(info["general.parameter_count"])),
            "quantization_level": level,
        },
        "model_info": info,
        "capabilities": capabilities,
        "modified_at": rfc3339(runtime.model_path.stat().st_mtime),
    }

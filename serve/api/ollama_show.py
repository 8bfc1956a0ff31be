"""POST /api/show: what Ollama tells about a model, read from this server's GGUF and its loaded template.

- `template`: the GGUF's chat template (Jinja, as hearth renders it; Ollama's own are Go templates).
- `parameters`: `num_ctx N`, the context one request gets here (there is no Modelfile).
- `details`: format `gguf`, family (`general.architecture`), parameter_size (Ollama's style: `8.0B`, `494.03M`),
  quantization_level (`general.file_type`'s name, else the commonest tensor type: `Q4_K_M`, `F16`, ...).
- `model_info`: every GGUF key but the chat template, with `general.parameter_count` added when the file has none;
  arrays (the vocabulary, merges) are null unless `verbose`, as Ollama answers.
- `capabilities`: `completion` (a chat server), `tools` (the template renders calls natively; other templates
  still get tools, in hearth's generic call format), `thinking` (the template thinks), `vision` (the model has
  an image projector: images are taken), `embedding` (an --embeddings server).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hearth_common.gguf_details import parameter_size, read_details
from serve.api.ollama_schemas import ShowBody
from serve.chat import offload
from serve.runtime import Runtime


def gguf_metadata(path: Path, verbose: bool) -> tuple[dict[str, Any], str | None, str]:
    """(model_info, the chat template, the quantization level) from the GGUF's header."""
    details = read_details(path, arrays=verbose)
    return details.info, details.template, details.quantization_level


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
        if loaded.vision:
            capabilities.append("vision")
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

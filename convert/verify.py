"""transformers vs llama.cpp on the same token ids: max |delta logit| and top-1 agreement.

Both sides get the ids the HF tokenizer produces (tokenization is compared separately), llama.cpp with an
f32 KV cache so the comparison measures the conversion, not the cache's rounding. transformers and torch are
dev dependencies; they are imported only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import ConvertError

PROMPTS = (
    "The capital of France is Paris. The capital of Japan is",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(",
    "Once upon a time, in a village by the sea, there lived 42 fishermen. 日本語 😀 café",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 and 3.14159; the answer is",
)

# Tolerances by GGUF file type: max |delta| as a fraction of transformers' logit range, and the share of
# positions whose top-1 token must agree. Below f32 the weights are rounded, and tiny random test models have
# many near-tied logits, so a few top-1 flips are expected there; a real model agrees far more often.
TOLERANCES: dict[str, tuple[float, float]] = {
    "f32": (1e-3, 1.0),
    "f16": (2e-2, 0.95),
    "bf16": (5e-2, 0.9),
    "q8_0": (8e-2, 0.85),
    # gpt-oss: the experts stay MXFP4 and llama.cpp rounds their inputs to Q8_0, which now and then routes a
    # token to other experts; tests/convert/test_gpt_oss.py shows the conversion itself is exact
    "mxfp4": (0.3, 0.85),
    "other": (0.3, 0.5),
}


@dataclass(frozen=True)
class Comparison:
    max_delta: float  # largest |llama.cpp - transformers| over all prompts, positions and tokens
    logit_range: float  # max - min of transformers' logits over the same
    top1: float  # share of positions where the argmax agrees
    positions: int

    @property
    def relative(self) -> float:
        return self.max_delta / self.logit_range if self.logit_range else float("inf")


@dataclass(frozen=True)
class Report:
    comparison: Comparison
    file_type: str
    tolerance: tuple[float, float]

    @property
    def ok(self) -> bool:
        rel, top1 = self.tolerance
        return self.comparison.relative <= rel and self.comparison.top1 >= top1

    def summary(self) -> str:
        c = self.comparison
        verdict = "ok" if self.ok else "BEYOND TOLERANCE"
        return (
            f"{self.file_type}: max |delta logit| {c.max_delta:.4g} ({c.relative:.2%} of the logit range "
            f"{c.logit_range:.3g}, tolerance {self.tolerance[0]:.1%}); top-1 agreement {c.top1:.1%} over "
            f"{c.positions} positions (tolerance {self.tolerance[1]:.0%}): {verdict}"
        )


def hf_logits(src: Path, prompts: tuple[str, ...] = PROMPTS) -> list[tuple[list[int], np.ndarray]]:
    """(token ids, float32 logits [n, vocab]) per prompt from transformers, the reference."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    model = (
        _model_class(src, AutoModelForCausalLM)
        .from_pretrained(src, dtype=torch.float32, **_quantized_loading(src))
        .eval()
    )
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = tok(p).input_ids
            out.append((ids, model(torch.tensor([ids])).logits[0].float().numpy()))
    return out


def _model_class(src: Path, default: Any) -> Any:
    """The transformers class (chosen by name at run time, so untyped) config.json names (Mistral3ForConditionalGeneration has no AutoModelForCausalLM entry)."""
    import json

    import transformers

    names = json.loads((src / "config.json").read_text()).get("architectures") or []
    found = getattr(transformers, names[0], None) if names else None
    return found if isinstance(found, type) and hasattr(found, "from_pretrained") else default


def _quantized_loading(src: Path) -> dict[str, object]:
    """MXFP4 checkpoints (gpt-oss): have transformers dequantize the experts itself, which needs no GPU kernels."""
    import json

    quant = json.loads((src / "config.json").read_text()).get("quantization_config") or {}
    if quant.get("quant_method") != "mxfp4":
        return {}
    from transformers.utils.quantization_config import Mxfp4Config  # transformers' typed exports omit it

    return {"quantization_config": Mxfp4Config(dequantize=True)}


def gguf_logits(gguf: Path, id_lists: list[list[int]]) -> list[np.ndarray]:
    import llama_cpp

    n_ctx = max(len(ids) for ids in id_lists) + 8
    llm = llama_cpp.Llama(
        str(gguf), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False, n_threads=2,
        type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
    )  # fmt: skip
    try:
        out = []
        for ids in id_lists:
            llm.reset()
            llm.eval(ids)
            out.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
        return out
    finally:
        llm.close()


def compare(ref: list[np.ndarray], got: list[np.ndarray]) -> Comparison:
    deltas, lo, hi, agree, total = 0.0, np.inf, -np.inf, 0, 0
    for r, g in zip(ref, got, strict=True):
        g = g[:, : r.shape[1]]  # llama.cpp's vocab equals config.vocab_size; HF's logits may be the same width
        deltas = max(deltas, float(np.abs(r - g).max()))
        lo, hi = min(lo, float(r.min())), max(hi, float(r.max()))
        agree += int((r.argmax(-1) == g.argmax(-1)).sum())
        total += r.shape[0]
    return Comparison(deltas, hi - lo, agree / total, total)


def file_type_of(gguf: Path) -> str:
    from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType

    reader = GGUFReader(gguf)
    field = reader.fields.get("general.file_type")
    if field is None:
        return "other"
    ftype = int(field.parts[field.data[0]][0])
    names: dict[int, str] = {  # LlamaFileType is an IntEnum: its members are the ints the file holds
        LlamaFileType.ALL_F32: "f32",
        LlamaFileType.MOSTLY_F16: "f16",
        LlamaFileType.MOSTLY_BF16: "bf16",
        LlamaFileType.MOSTLY_Q8_0: "q8_0",
    }
    name = names.get(ftype, "other")
    if name != "other" and any(t.tensor_type == GGMLQuantizationType.MXFP4 for t in reader.tensors):
        return "mxfp4"  # gpt-oss's experts stay MXFP4 whatever the rest is
    return name


def verify(src: Path, gguf: Path, prompts: tuple[str, ...] = PROMPTS) -> Report:
    if not Path(gguf).is_file():
        raise ConvertError(f"{gguf}: no such GGUF file")
    try:
        ref = hf_logits(Path(src), prompts)
    except ImportError as e:
        raise ConvertError(f"verify needs transformers and torch (the dev extra): {e}") from e
    except (OSError, ValueError) as e:
        raise ConvertError(f"{src}: transformers cannot load it ({' '.join(str(e).split())[:200]})") from e
    got = gguf_logits(Path(gguf), [ids for ids, _ in ref])
    ftype = file_type_of(Path(gguf))
    return Report(compare([r for _, r in ref], got), ftype, TOLERANCES[ftype])

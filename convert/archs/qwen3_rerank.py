"""Qwen3-Reranker as llama.cpp serves it: a qwen3 GGUF with pooling `rank` (convert_hf_to_gguf.py's Qwen3Model).

The released checkpoint is a plain Qwen3ForCausalLM; its model card scores a (query, document) pair as
softmax([logit(no), logit(yes)])[yes] at the last token of a fixed prompt. llama.cpp's converter turns that into
a classifier: `cls.output` holds the LM head's rows for "yes" and "no" (in that order), `classifier.output_labels`
is ["yes", "no"] (n_cls_out 2), and the prompt goes in as the named template `tokenizer.chat_template.rerank` with
`{query}` and `{document}` in it. llama.cpp's rank pooling then takes the last token (the graph is causal), applies
`cls.output` and, for qwen3, a softmax: the first output is the card's score. The LM head itself is dropped (a tied
one stays as the token embedding); llama.cpp falls back to token_embd for the unused logits.

Recognised as llama.cpp does (Qwen3Model._is_qwen3_reranker): the model card's heading `# Qwen3-Reranker...`, or a
folder name, `_name_or_path` or `model_type` that says qwen3-reranker; `--pooling rank` says so explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from gguf import MODEL_TENSOR, TENSOR_NAMES, GGUFValueType, Keys, PoolingType

from convert.arch import Arch, Config, OutTensor, Plan
from convert.errors import SourceError
from convert.plan import default_plan, encode, nbytes_of, weight_type
from convert.source import Checkpoint, TensorRef, to_f32
from convert.vocab import read_json

HINTS = ("qwen3-reranker", "qwen3-vl-reranker")
LABELS = ["yes", "no"]  # cls.output's rows, in this order: the first output is P(yes)
# llama.cpp's text exactly: the model card's prompt with its default instruction
TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n"
    "<Query>: {query}\n<Document>: {document}<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)
CLS_OUT = TENSOR_NAMES[MODEL_TENSOR.CLS_OUT] + ".weight"
OUTPUT = TENSOR_NAMES[MODEL_TENSOR.OUTPUT] + ".weight"


def is_reranker(ckpt: Checkpoint) -> bool:
    readme = ckpt.folder / "README.md"
    text = readme.read_text(encoding="utf-8", errors="replace").lower() if readme.is_file() else ""
    if any(f"# {hint}" in text for hint in HINTS):
        return True
    names = (ckpt.folder.resolve().name, str(ckpt.config.get("_name_or_path", "")), str(ckpt.config.get("model_type")))
    return any(hint in name.lower() for name in names for hint in HINTS)


def label_ids(ckpt: Checkpoint) -> list[int]:
    """The token ids of "yes" and "no" in the byte-level BPE vocabulary (tokenizer.json)."""
    vocab = read_json(ckpt.folder / "tokenizer.json").get("model", {}).get("vocab") or {}
    missing = [label for label in LABELS if not isinstance(vocab.get(label), int)]
    if missing:
        raise SourceError(f"{ckpt.folder}: a Qwen3 reranker needs the tokens {LABELS} in tokenizer.json; no {missing}")
    return [int(vocab[label]) for label in LABELS]


def head_ref(ckpt: Checkpoint, config: Config) -> TensorRef:
    """The LM head's weights: lm_head, or the token embedding when they are tied (as llama.cpp's converter reads it)."""
    tied = bool(config.get("tie_word_embeddings", False))
    names = ("model.embed_tokens.weight", "embed_tokens.weight") if tied else ("lm_head.weight",)
    for name in names:
        if name in ckpt.tensors:
            return ckpt.tensors[name]
    raise SourceError(f"{ckpt.folder}: no {' or '.join(names)}: a reranker's yes/no head is read from the LM head")


def plan_reranker(arch: Arch, ckpt: Checkpoint, config: Config, out_type: str) -> Plan:
    plan = default_plan(arch, ckpt, config, out_type)
    ref, ids = head_ref(ckpt, config), label_ids(ckpt)
    if max(ids) >= ref.rows:
        raise SourceError(f"{ref.name} has {ref.rows} rows; the tokens {LABELS} are {ids}")
    shape = (len(ids), *ref.shape[1:])
    qtype = weight_type(shape, out_type)

    def produce() -> Iterator[np.ndarray]:
        rows = np.concatenate([to_f32(ref.read(i, i + 1), ref.dtype) for i in ids])
        yield encode(rows, qtype)

    head = OutTensor(CLS_OUT, shape, qtype, nbytes_of(shape, qtype), produce)
    tensors = [t for t in plan.tensors if t.name != OUTPUT] + [head]
    meta = [
        *plan.meta,
        (arch.key(Keys.LLM.POOLING_TYPE), int(PoolingType.RANK), GGUFValueType.UINT32),
        (arch.key(Keys.Classifier.OUTPUT_LABELS), LABELS, GGUFValueType.ARRAY),
        (Keys.Tokenizer.CHAT_TEMPLATE_N.format(name="rerank"), TEMPLATE, GGUFValueType.STRING),
        (Keys.Tokenizer.CHAT_TEMPLATES, ["rerank"], GGUFValueType.ARRAY),
    ]
    return Plan(arch, plan.config, tensors, meta)

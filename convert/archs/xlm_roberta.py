"""XLM-RoBERTa encoders (multilingual-e5, bge-m3; bge-reranker cross-encoders) -> llama.cpp's `bert` arch.

The blocks are BERT's (convert.archs.bert: post-norm, GELU, absolute positions, token types), under a `roberta.`
prefix in the task models. Two things differ, both handled as llama.cpp's own converter does:

  - positions: RoBERTa numbers a sequence's tokens from pad_token_id + 1 (rows 0..pad of the position table are
    never read for unpadded input), llama.cpp from 0, so those first pad_token_id + 1 rows are dropped and the
    context length shrinks by as many (514 -> 512);
  - the vocabulary: SentencePiece Unigram, written as llama.cpp's `t5` (UGM) vocabulary (convert.vocab_ugm).

`XLMRobertaForSequenceClassification` becomes a reranker (pooling `rank`): RobertaClassificationHead is dense ->
tanh -> out_proj on the first token (<s>), which is llama.cpp's rank pooling (`cls`, tanh, `cls.output`) exactly,
so `classifier.dense` / `classifier.out_proj` keep their TensorNameMap names. XLM-R has one token type, so a
pair needs no type rows (serve/engine/embedder.py's SegmentRows finds none). jina-embeddings-v3's LoRA
adaptations (llama.cpp's jina-bert-v3) are refused.
"""

from __future__ import annotations

from dataclasses import replace

from gguf import MODEL_ARCH, MODEL_TENSOR

from convert.arch import Arch, Config, Plan
from convert.archs.bert import BUFFERS, META, RANK_META, REQUIRED, SHAPES, check_bert, check_bert_rank
from convert.errors import UnsupportedError
from convert.plan import default_plan
from convert.source import Checkpoint

T = MODEL_TENSOR
POSITIONS = "embeddings.position_embeddings.weight"


def position_offset(config: Config) -> int:
    """Rows of the position table before the first position RoBERTa uses (pad_token_id + 1)."""
    pad = config.get("pad_token_id")
    return 0 if pad is None else int(pad) + 1


def check_xlmr(config: Config) -> None:
    if config.get("lora_adaptations"):
        raise UnsupportedError(
            "XLM-RoBERTa with lora_adaptations (jina-embeddings-v3): its task LoRAs are not converted"
        )
    check_bert(config)


def check_xlmr_rank(config: Config) -> None:
    check_xlmr(config)
    check_bert_rank(config)


def plan_xlmr(arch: Arch, ckpt: Checkpoint, config: Config, out_type: str) -> Plan:
    """The default plan over a checkpoint whose position table starts at RoBERTa's first used row."""
    offset = position_offset(config)
    cfg = dict(config)
    cfg["max_position_embeddings"] = int(config["max_position_embeddings"]) - offset
    tensors = dict(ckpt.tensors)
    for name, ref in ckpt.tensors.items():
        if name.removeprefix("roberta.") == POSITIONS and offset:
            rows = ref.rows - offset
            tensors[name] = replace(
                ref,
                shape=(rows, *ref.shape[1:]),
                offset=ref.offset + offset * ref.row_bytes,
                nbytes=rows * ref.row_bytes,
            )
    return default_plan(arch, replace(ckpt, tensors=tensors), cfg, out_type)


XLMR = Arch(
    hf_names=("XLMRobertaModel",),
    gguf_arch=MODEL_ARCH.BERT,
    meta=META,
    shapes=SHAPES,
    required=REQUIRED,
    f32_tensors=(T.POS_EMBD, T.TOKEN_TYPES),
    rename=(("roberta.", ""),),
    skip_prefixes=("pooler.", "lm_head."),
    skip_suffixes=BUFFERS,
    check=check_xlmr,
    plan=plan_xlmr,
)

XLMR_RANK = Arch(
    hf_names=("XLMRobertaForSequenceClassification",),
    gguf_arch=MODEL_ARCH.BERT,
    meta=RANK_META,
    shapes=SHAPES,
    required=REQUIRED,
    f32_tensors=(T.POS_EMBD, T.TOKEN_TYPES),
    rename=(("roberta.", ""),),  # classifier.dense -> cls, classifier.out_proj -> cls.output (TensorNameMap)
    skip_suffixes=BUFFERS,
    check=check_xlmr_rank,
    plan=plan_xlmr,
)

ARCHS = (XLMR, XLMR_RANK)

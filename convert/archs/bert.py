"""BERT encoders (GGUF arch `bert`): embedding models and cross-encoder rerankers.

`BertModel` / `BertForMaskedLM` become an embedding model: llama.cpp's bert graph (absolute positions, token-type
row 0 added to every token, post-norm blocks, GELU) with the pooling of a sentence-transformers folder
(convert.pooling); the masked-LM head (`cls.predictions.*`) and the unused pooler are dropped.

`BertForSequenceClassification` becomes a reranker: pooling type `rank`, whose graph in llama.cpp takes the first
token ([CLS]), applies `cls` (weight, bias) and tanh, then `cls.output`: exactly transformers' BertPooler followed
by the classifier, so the pooler is kept as `cls` and the classifier written as `cls.output` (llama.cpp's own
converter drops the pooler and writes the classifier as `cls.output` alone, which scores without the pooler's
dense + tanh). `{arch}.classifier.output_labels` carries the labels, whose count llama.cpp reads as n_cls_out.

llama.cpp's graph hardcodes token type 0; a reranker's second segment (token type 1 in transformers) is given its
type row by the server (serve/engine/embedder.py feeds the pair as embeddings), which is why the GGUF keeps
`token_types` whole.
"""

from __future__ import annotations

from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFValueType, Keys, PoolingType

from convert.arch import Arch, Config, Meta
from convert.errors import UnsupportedError

T = MODEL_TENSOR
U32, F32, BOOL = GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.BOOL
# transformers' "gelu" is the exact erf form, llama.cpp's the tanh approximation: within float noise of each other
GELU_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh")


def check_bert(config: Config) -> None:
    if config.get("hidden_act", "gelu") not in GELU_ACTS:
        raise UnsupportedError(f"BERT with hidden_act {config.get('hidden_act')!r}: llama.cpp's bert graph uses GELU")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UnsupportedError(
            f"BERT with position_embedding_type {config.get('position_embedding_type')!r}: llama.cpp's bert graph "
            "adds absolute position embeddings"
        )
    if config.get("is_decoder"):
        raise UnsupportedError("BERT configured as a decoder (is_decoder): llama.cpp's bert graph is bidirectional")


def check_bert_rank(config: Config) -> None:
    check_bert(config)
    if config.get("problem_type") not in (None, "regression", "single_label_classification"):
        raise UnsupportedError(f"BertForSequenceClassification with problem_type {config['problem_type']!r}")


def labels(config: Config) -> list[str]:
    """The classifier's labels in id order (a 1-label cross-encoder: one)."""
    id2label = config.get("id2label") or {}
    n = int(config.get("num_labels") or len(id2label) or 1)
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


def hidden(c: Config) -> tuple[int]:
    return (int(c["hidden_size"]),)


def square(c: Config) -> tuple[int, int]:
    return (int(c["hidden_size"]), int(c["hidden_size"]))


def encoder_meta(eps_key: str, eps_default: float) -> tuple[Meta, ...]:
    """Keys every BERT-like encoder here writes the same way; only the name and default of its norm's epsilon
    differ."""
    return (
        Meta(Keys.LLM.CONTEXT_LENGTH, "max_position_embeddings", U32),
        Meta(Keys.LLM.EMBEDDING_LENGTH, "hidden_size", U32),
        Meta(Keys.LLM.BLOCK_COUNT, "num_hidden_layers", U32),
        Meta(Keys.LLM.FEED_FORWARD_LENGTH, "intermediate_size", U32),
        Meta(Keys.Attention.HEAD_COUNT, "num_attention_heads", U32),
        Meta(Keys.Attention.LAYERNORM_EPS, eps_key, F32, eps_default),
        Meta(Keys.Attention.CAUSAL, lambda c: False, BOOL),
    )


META = (
    *encoder_meta("layer_norm_eps", 1e-12),
    Meta(Keys.Tokenizer.TOKEN_TYPE_COUNT, "type_vocab_size", U32, 2),
)

SHAPES = {
    T.TOKEN_EMBD: lambda c: (c["vocab_size"], c["hidden_size"]),
    T.POS_EMBD: lambda c: (c["max_position_embeddings"], c["hidden_size"]),
    T.TOKEN_TYPES: lambda c: (c.get("type_vocab_size", 2), c["hidden_size"]),
    T.TOKEN_EMBD_NORM: hidden,
    T.ATTN_Q: square,
    T.ATTN_K: square,
    T.ATTN_V: square,
    T.ATTN_OUT: square,
    T.ATTN_OUT_NORM: hidden,
    T.FFN_UP: lambda c: (c["intermediate_size"], c["hidden_size"]),
    T.FFN_DOWN: lambda c: (c["hidden_size"], c["intermediate_size"]),
    T.LAYER_OUT_NORM: hidden,
    T.CLS: square,
    T.CLS_OUT: lambda c: (len(labels(c)), c["hidden_size"]),
}
REQUIRED = (T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.ATTN_OUT_NORM, T.FFN_UP, T.FFN_DOWN, T.LAYER_OUT_NORM)
# buffers transformers may save beside the weights
BUFFERS = (".rotary_emb.inv_freq", "embeddings.position_ids", "embeddings.token_type_ids")

# a cross-encoder's: rank pooling and its labels
RANK_META = (
    *META,
    Meta(Keys.LLM.POOLING_TYPE, lambda c: int(PoolingType.RANK), U32),
    Meta(Keys.Classifier.OUTPUT_LABELS, labels, GGUFValueType.ARRAY),
)

BERT = Arch(
    hf_names=("BertModel", "BertForMaskedLM"),
    gguf_arch=MODEL_ARCH.BERT,
    meta=META,
    shapes=SHAPES,
    required=REQUIRED,
    f32_tensors=(T.POS_EMBD, T.TOKEN_TYPES),  # as llama.cpp's converter and quantizer keep them
    rename=(("bert.", ""),),
    # the pooler (an embedding model pools as sentence-transformers says) and the masked-LM head
    skip_prefixes=("pooler.", "bert.pooler.", "cls.predictions.", "cls.seq_relationship."),
    skip_suffixes=BUFFERS,
    check=check_bert,
)

BERT_RANK = Arch(
    hf_names=("BertForSequenceClassification",),
    gguf_arch=MODEL_ARCH.BERT,
    meta=RANK_META,
    shapes=SHAPES,
    required=REQUIRED,
    f32_tensors=(T.POS_EMBD, T.TOKEN_TYPES),
    # BertPooler's dense -> `cls` (TensorNameMap's classifier.dense), the classifier -> `cls.output`
    rename=(
        ("bert.pooler.dense.", "classifier.dense."),
        ("pooler.dense.", "classifier.dense."),
        ("classifier.", "classifier.out_proj."),
        ("bert.", ""),
    ),
    skip_suffixes=BUFFERS,
    check=check_bert_rank,
)

ARCHS = (BERT, BERT_RANK)

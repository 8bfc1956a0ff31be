"""Qwen2, Qwen3 and Qwen3-MoE (GGUF arch `qwen2`, `qwen3`, `qwen3moe`).

All use NEOX-style rope in llama.cpp, so q/k are copied as they are. Qwen2 has q/k/v biases; Qwen3 has
per-head RMS norms on q and k instead (attn_q_norm / attn_k_norm, shape [head_dim]). A Qwen3-Reranker
checkpoint becomes llama.cpp's qwen3 reranker (convert.archs.qwen3_rerank).

Qwen3-MoE is Qwen3's attention with a mixture of experts in every layer: the router (`mlp.gate`) stays float32,
and the per-expert matrices are stacked into one [experts, rows, cols] tensor per projection as they stream
(convert.experts). llama.cpp's graph renormalizes the top-k router weights and puts experts in every layer, so a
config with norm_topk_prob false, dense layers (mlp_only_layers) or decoder_sparse_step > 1 is refused.
"""

from __future__ import annotations

from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFValueType, Keys

from convert.arch import Arch, Config, Meta, Plan, RerankForm
from convert.archs import qwen3_rerank
from convert.archs.common import DENSE_BLOCK, check_rope, common_meta, dense_shapes, head_dim
from convert.errors import UnsupportedError
from convert.experts import plan_stacked_experts
from convert.source import Checkpoint

T = MODEL_TENSOR

QWEN2 = Arch(
    hf_names=("Qwen2ForCausalLM",),
    gguf_arch=MODEL_ARCH.QWEN2,
    meta=common_meta(),
    shapes=dense_shapes(),
    required=(*DENSE_BLOCK, T.FFN_NORM),
    check=check_rope,
)

QK_NORM_SHAPES = {T.ATTN_Q_NORM: lambda c: (head_dim(c),), T.ATTN_K_NORM: lambda c: (head_dim(c),)}

QWEN3 = Arch(
    hf_names=("Qwen3ForCausalLM",),
    gguf_arch=MODEL_ARCH.QWEN3,
    meta=common_meta(),
    shapes={**dense_shapes(), **QK_NORM_SHAPES},
    required=(*DENSE_BLOCK, T.FFN_NORM, T.ATTN_Q_NORM, T.ATTN_K_NORM),
    check=check_rope,
    rerank=RerankForm(qwen3_rerank.is_reranker, qwen3_rerank.plan_reranker),  # Qwen3-Reranker
)


def n_experts(config: Config) -> int:
    return int(config.get("num_experts") or config["num_local_experts"])


def check_qwen3_moe(config: Config) -> None:
    check_rope(config)
    if not config.get("norm_topk_prob", False):
        raise UnsupportedError(
            "qwen3moe with norm_topk_prob=false: llama.cpp's graph always renormalizes the top-k weights"
        )
    if config.get("mlp_only_layers") or int(config.get("decoder_sparse_step") or 1) != 1:
        raise UnsupportedError(
            "qwen3moe with dense layers (mlp_only_layers / decoder_sparse_step): llama.cpp puts experts in every layer"
        )
    if config.get("use_sliding_window"):
        raise UnsupportedError("qwen3moe with use_sliding_window: llama.cpp's qwen3moe graph has no sliding window")


def plan_qwen3_moe(arch: Arch, ckpt: Checkpoint, config: Config, out_type: str) -> Plan:
    ff, hidden = int(config["moe_intermediate_size"]), int(config["hidden_size"])
    shapes = {"gate_proj": (ff, hidden), "up_proj": (ff, hidden), "down_proj": (hidden, ff)}
    return plan_stacked_experts(arch, ckpt, config, out_type, n_experts=n_experts(config), shapes=shapes)


MOE_REQUIRED = (
    T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.ATTN_Q_NORM, T.ATTN_K_NORM, T.FFN_NORM,
    T.FFN_GATE_INP, T.FFN_GATE_EXP, T.FFN_UP_EXP, T.FFN_DOWN_EXP,
)  # fmt: skip

QWEN3_MOE = Arch(
    hf_names=("Qwen3MoeForCausalLM",),
    gguf_arch=MODEL_ARCH.QWEN3MOE,
    meta=(
        *common_meta(),
        Meta(Keys.LLM.EXPERT_COUNT, n_experts, GGUFValueType.UINT32),
        Meta(Keys.LLM.EXPERT_USED_COUNT, "num_experts_per_tok", GGUFValueType.UINT32),
        Meta(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH, "moe_intermediate_size", GGUFValueType.UINT32),
    ),
    shapes={
        **dense_shapes(),
        **QK_NORM_SHAPES,
        T.FFN_GATE_INP: lambda c: (n_experts(c), c["hidden_size"]),
    },
    required=MOE_REQUIRED,
    f32_tensors=(T.FFN_GATE_INP,),
    check=check_qwen3_moe,
    plan=plan_qwen3_moe,
)

ARCHS = (QWEN2, QWEN3, QWEN3_MOE)

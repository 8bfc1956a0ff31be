"""gpt-oss (GptOssForCausalLM -> GGUF arch `gpt-oss`): mixture of experts, attention sinks, sliding window, YaRN.

Tensors that map one-to-one (embeddings, norms, attention with its biases, sinks) go through the shared
`default_plan`. The rest is planned here, because it does not map one-to-one:
  - `mlp.experts.gate_up_proj_blocks/_scales` (MXFP4, rows interleaved gate0, up0, gate1, up1, ...) become
    `ffn_gate_exps` (even rows) and `ffn_up_exps` (odd rows), and `down_proj_blocks/_scales` becomes
    `ffn_down_exps`, all kept MXFP4: only the nibble order changes (convert.mxfp4.hf_to_ggml_blocks);
  - `gate_up_proj_bias` splits the same way; expert biases stay float32;
  - the router (`ffn_gate_inp`) stays float32 whatever --type says: its top-k picks the experts, and
    llama.cpp's own converter keeps it float32 for the same reason.
A checkpoint whose experts are plain float tensors (a dequantized or fine-tuned save) gets them split and
transposed the same way and written in --type, as every other matrix; MXFP4 blocks are never re-rounded.

llama.cpp hard-codes parts of this architecture, so configs it cannot run are refused rather than converted
into a model that would silently disagree: sliding window on even layers and full attention on odd ones,
the clamped SwiGLU with alpha 1.702 and limit 7, top-k then softmax routing, YaRN rope.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
from gguf import MODEL_ARCH, MODEL_TENSOR, TENSOR_NAMES, GGMLQuantizationType, GGUFValueType, Keys

from convert.arch import Arch, Config, Meta, OutTensor, Plan
from convert.archs.common import common_meta, dense_shapes, head_dim
from convert.errors import ShapeError, UnsupportedError
from convert.mxfp4 import BLOCK, hf_to_ggml_blocks
from convert.plan import _order, default_plan, encode, nbytes_of, weight_type
from convert.source import Checkpoint, TensorRef, to_f32

Q = GGMLQuantizationType
T = MODEL_TENSOR
SWIGLU = {"swiglu_alpha": 1.702, "swiglu_limit": 7.0}  # llama.cpp's constants for this arch
EXPERT_PART = ".mlp.experts."
ROUTER_PART = ".mlp.router."


def _expert_meta() -> tuple[Meta, ...]:
    L, U32 = Keys.LLM, GGUFValueType.UINT32
    return (
        Meta(L.EXPERT_COUNT, ("num_local_experts", "num_experts"), U32),
        Meta(L.EXPERT_USED_COUNT, "num_experts_per_tok", U32),
        Meta(L.EXPERT_FEED_FORWARD_LENGTH, "intermediate_size", U32),
        Meta(Keys.Attention.SLIDING_WINDOW, "sliding_window", U32),
    )


def check_config(config: Config) -> None:
    """Refuse what llama.cpp's gpt-oss graph cannot reproduce."""
    n = int(config["num_hidden_layers"])
    want = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
    if (layer_types := config.get("layer_types")) is not None and list(layer_types) != want:
        raise UnsupportedError(
            "gpt-oss layer_types must alternate sliding_attention/full_attention starting with sliding "
            "(llama.cpp's fixed pattern)"
        )
    for key, value in SWIGLU.items():
        if key in config and abs(float(config[key]) - value) > 1e-6:
            raise UnsupportedError(f"gpt-oss {key}={config[key]} is not supported; llama.cpp fixes it at {value}")
    if not config.get("sliding_window"):
        raise UnsupportedError("gpt-oss config has no sliding_window")
    quant = config.get("quantization_config") or {}
    if quant and quant.get("quant_method") != "mxfp4":
        raise UnsupportedError(f"gpt-oss quantization {quant.get('quant_method')!r} is not supported (only mxfp4)")
    for key in ("hidden_size", "intermediate_size"):
        if int(config[key]) % BLOCK:
            raise UnsupportedError(f"gpt-oss {key}={config[key]} is not a multiple of {BLOCK}, so MXFP4 cannot hold it")


# --- expert tensors -------------------------------------------------------------------------------------------


def _rows(part: str) -> slice:
    return {"gate": slice(0, None, 2), "up": slice(1, None, 2), "down": slice(None)}[part]


def _mxfp4_producer(blocks: TensorRef, scales: TensorRef, rows: slice) -> Callable[[], Iterator[np.ndarray]]:
    def produce() -> Iterator[np.ndarray]:
        for e in range(blocks.shape[0]):  # one expert at a time keeps memory near one expert's bytes
            yield hf_to_ggml_blocks(blocks.read(e, e + 1)[:, rows], scales.read(e, e + 1)[:, rows])

    return produce


def _float_expert_producer(
    weight: TensorRef, rows: slice, qtype: GGMLQuantizationType
) -> Callable[[], Iterator[np.ndarray]]:
    """A dequantized or fine-tuned checkpoint: weight [E, in, out] -> its [E, out, in] rows in --type."""

    def produce() -> Iterator[np.ndarray]:
        for e in range(weight.shape[0]):
            w = to_f32(weight.read(e, e + 1), weight.dtype).transpose(0, 2, 1)[:, rows]
            yield encode(np.ascontiguousarray(w), qtype)

    return produce


def _bias_producer(bias: TensorRef, rows: slice) -> Callable[[], Iterator[np.ndarray]]:
    def produce() -> Iterator[np.ndarray]:
        yield np.ascontiguousarray(to_f32(bias.read(), bias.dtype)[:, rows])

    return produce


def _f32_producer(ref: TensorRef) -> Callable[[], Iterator[np.ndarray]]:
    def produce() -> Iterator[np.ndarray]:
        yield to_f32(ref.read(), ref.dtype)

    return produce


def _expect(ref: TensorRef | None, name: str, shape: tuple[int, ...], dtypes: tuple[str, ...]) -> TensorRef:
    if ref is None:
        raise ShapeError(f"gpt-oss checkpoint lacks tensor {name}")
    if ref.shape != shape:
        raise ShapeError(f"tensor {name} has shape {list(ref.shape)} but config.json implies {list(shape)}")
    if ref.dtype not in dtypes:
        raise UnsupportedError(f"tensor {name} has dtype {ref.dtype}; expected {' or '.join(dtypes)}")
    return ref


def _layer_tensors(bid: int, tensors: dict[str, TensorRef], config: Config, out_type: str) -> list[OutTensor]:
    E = int(config.get("num_local_experts") or config["num_experts"])
    H, I = int(config["hidden_size"]), int(config["intermediate_size"])  # noqa: E741
    prefix = f"model.layers.{bid}.mlp."
    floats = ("F32", "F16", "BF16")
    out: list[OutTensor] = []

    def gguf_name(kind: MODEL_TENSOR, suffix: str) -> str:
        return f"{TENSOR_NAMES[kind].format(bid=bid)}.{suffix}"

    # (HF projection, part, GGUF tensor, rows out, columns in)
    for proj, part, kind, n_out, n_in in (
        ("gate_up_proj", "gate", T.FFN_GATE_EXP, I, H),
        ("gate_up_proj", "up", T.FFN_UP_EXP, I, H),
        ("down_proj", "down", T.FFN_DOWN_EXP, H, I),
    ):
        full_out = 2 * n_out if proj == "gate_up_proj" else n_out
        base = prefix + f"experts.{proj}"
        rows = _rows(part)
        shape = (E, n_out, n_in)
        if base + "_blocks" in tensors or base + "_scales" in tensors:
            blocks = _expect(
                tensors.get(base + "_blocks"), base + "_blocks", (E, full_out, n_in // BLOCK, BLOCK // 2), ("U8",)
            )
            scales = _expect(tensors.get(base + "_scales"), base + "_scales", (E, full_out, n_in // BLOCK), ("U8",))
            qtype, produce = Q.MXFP4, _mxfp4_producer(blocks, scales, rows)
        else:
            weight = _expect(tensors.get(base), base, (E, n_in, full_out), floats)
            qtype = weight_type(shape, out_type)
            produce = _float_expert_producer(weight, rows, qtype)
        out.append(OutTensor(gguf_name(kind, "weight"), shape, qtype, nbytes_of(shape, qtype), produce))
        bias = _expect(tensors.get(base + "_bias"), base + "_bias", (E, full_out), floats)
        out.append(OutTensor(gguf_name(kind, "bias"), (E, n_out), Q.F32, E * n_out * 4, _bias_producer(bias, rows)))

    router_w = _expect(tensors.get(prefix + "router.weight"), prefix + "router.weight", (E, H), floats)
    router_b = _expect(tensors.get(prefix + "router.bias"), prefix + "router.bias", (E,), floats)
    out.append(OutTensor(gguf_name(T.FFN_GATE_INP, "weight"), (E, H), Q.F32, E * H * 4, _f32_producer(router_w)))
    out.append(OutTensor(gguf_name(T.FFN_GATE_INP, "bias"), (E,), Q.F32, E * 4, _f32_producer(router_b)))
    return out


def plan_gpt_oss(arch: Arch, ckpt: Checkpoint, config: Config, out_type: str) -> Plan:
    check_config(config)
    moe = {n: r for n, r in ckpt.tensors.items() if EXPERT_PART in n or ROUTER_PART in n}
    # HF names the sinks without a suffix; the name map and llama.cpp expect `.weight`
    rest = {(n + ".weight" if n.endswith(".sinks") else n): r for n, r in ckpt.tensors.items() if n not in moe}
    plan = default_plan(arch, replace(ckpt, tensors=rest), config, out_type)
    tensors = list(plan.tensors)
    for bid in range(int(config["num_hidden_layers"])):
        tensors += _layer_tensors(bid, moe, config, out_type)
    known = {
        f"model.layers.{b}.mlp.{p}"
        for b in range(int(config["num_hidden_layers"]))
        for p in (
            *(
                f"experts.{proj}{s}"
                for proj in ("gate_up_proj", "down_proj")
                for s in ("", "_blocks", "_scales", "_bias")
            ),
            "router.weight",
            "router.bias",
        )
    }
    if unmapped := sorted(set(moe) - known):
        raise ShapeError(f"{len(unmapped)} tensors have no GGUF name for {arch.name}: {', '.join(unmapped)}")
    tensors.sort(key=lambda t: _order(t.name))
    return Plan(plan.arch, plan.config, tensors, plan.meta)


def _shapes() -> dict[MODEL_TENSOR, Callable[[Config], tuple[int, ...]]]:
    shapes = dense_shapes()
    shapes[T.ATTN_POST_NORM] = lambda c: (c["hidden_size"],)
    shapes[T.ATTN_SINKS] = lambda c: (c["num_attention_heads"],)
    shapes[T.ATTN_OUT] = lambda c: (c["hidden_size"], int(c["num_attention_heads"]) * head_dim(c))
    return shapes


GPT_OSS = Arch(
    hf_names=("GptOssForCausalLM",),
    gguf_arch=MODEL_ARCH.GPT_OSS,
    meta=(*common_meta(), *_expert_meta()),
    shapes=_shapes(),
    required=(T.ATTN_NORM, T.ATTN_POST_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.ATTN_SINKS),
    plan=plan_gpt_oss,
)

ARCHS = (GPT_OSS,)

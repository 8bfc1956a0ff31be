"""What the Qwen3-MoE, Phi-3/4, SmolLM3, Granite and Mistral 3 conversions write, and the configs they refuse.

Logits, tokenization and chat templates of these families are tested with the others (test_logits.py,
test_tokenize.py, test_chat_template.py); this file checks the parts those cannot see: stacked experts equal
the per-expert tensors, metadata equals the config, and a config llama.cpp's graph cannot run is refused with
one line naming the setting.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from gguf import GGUFReader, TokenType

from convert import convert_checkpoint
from convert.errors import ConvertError, ShapeError
from convert.llama_quirks import general_name
from convert.source import read_tensors, to_f32
from convert.vocab import Vocab
from testkit.fixtures.build import build_fixture

pytestmark = pytest.mark.slow


def field(reader: GGUFReader, key: str):
    f = reader.fields[key]
    value = f.parts[f.data[0]]
    return bytes(value).decode() if f.types[0].name == "STRING" else value.tolist()[0]


def edited(tmp_path: Path, arch: str, **changes) -> Path:
    """A copy of a fixture with config.json keys changed (None deletes a key)."""
    out = Path(shutil.copytree(build_fixture(arch), tmp_path / arch))
    config = json.loads((out / "config.json").read_text())
    target = config.get("text_config", config) if arch == "mistral3" else config
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    (out / "config.json").write_text(json.dumps(config))
    return out


def refused(src: Path, tmp_path: Path) -> str:
    with pytest.raises(ConvertError) as e:
        convert_checkpoint(src, tmp_path / "out.gguf", "f32", progress=False)
    assert not list(tmp_path.glob("*.gguf")) and "\n" not in str(e.value)
    return str(e.value)


# --- Qwen3-MoE -----------------------------------------------------------------------------------------------


def test_qwen3moe_experts_are_stacked_in_expert_order(converted):
    src = build_fixture("qwen3moe")
    refs = read_tensors(src)
    reader = GGUFReader(converted("qwen3moe", "f32"))
    tensors = {t.name: t for t in reader.tensors}
    config = json.loads((src / "config.json").read_text())
    n = config.get("num_experts") or config["num_local_experts"]
    for bid in range(config["num_hidden_layers"]):
        for proj, name in (("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")):
            want = np.stack(
                [to_f32(refs[f"model.layers.{bid}.mlp.experts.{e}.{proj}.weight"].read(), "F32") for e in range(n)]
            )
            got = np.asarray(tensors[f"blk.{bid}.{name}.weight"].data).reshape(want.shape)
            assert np.array_equal(got, want), (bid, proj)
    assert field(reader, "qwen3moe.expert_count") == n
    assert field(reader, "qwen3moe.expert_used_count") == config["num_experts_per_tok"]
    assert field(reader, "qwen3moe.expert_feed_forward_length") == config["moe_intermediate_size"]


def test_qwen3moe_router_stays_f32_in_q8_0(converted):
    types = {t.name: t.tensor_type.name for t in GGUFReader(converted("qwen3moe", "q8_0")).tensors}
    assert types["blk.0.ffn_gate_inp.weight"] == "F32" and types["blk.0.ffn_gate_exps.weight"] == "Q8_0"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"norm_topk_prob": False}, "norm_topk_prob"),
        ({"mlp_only_layers": [1]}, "mlp_only_layers"),
        ({"use_sliding_window": True}, "sliding window"),
    ],
)
def test_qwen3moe_refuses_what_llama_cpp_cannot_run(changes, fragment, tmp_path):
    assert fragment in refused(edited(tmp_path, "qwen3moe", **changes), tmp_path)


def test_qwen3moe_missing_expert_is_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    src = Path(shutil.copytree(build_fixture("qwen3moe"), tmp_path / "moe"))
    tensors = load_file(src / "model.safetensors")
    del tensors["model.layers.1.mlp.experts.3.up_proj.weight"]
    save_file(tensors, str(src / "model.safetensors"))
    with pytest.raises(ShapeError, match="layer 1 lacks up_proj of experts 3"):
        convert_checkpoint(src, tmp_path / "out.gguf", "f32", progress=False)


# --- Phi-3 / Phi-4 -------------------------------------------------------------------------------------------


def test_phi3_longrope_and_partial_rotary(converted):
    config = json.loads((build_fixture("phi3") / "config.json").read_text())
    rope = config["rope_parameters"]
    reader = GGUFReader(converted("phi3", "f32"))
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert np.allclose(tensors["rope_factors_short.weight"], rope["short_factor"])
    assert np.allclose(tensors["rope_factors_long.weight"], rope["long_factor"])
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert field(reader, "phi3.rope.dimension_count") == int(head_dim * rope["partial_rotary_factor"])
    orig = rope["original_max_position_embeddings"]
    factor = config["max_position_embeddings"] / orig
    assert math.isclose(
        field(reader, "phi3.rope.scaling.attn_factor"), math.sqrt(1 + math.log(factor) / math.log(orig)), rel_tol=1e-6
    )
    assert field(reader, "phi3.rope.scaling.original_context_length") == orig
    # fused projections kept fused, as llama.cpp's phi3 graph takes them
    assert {"blk.0.attn_qkv.weight", "blk.0.ffn_up.weight"} <= set(tensors) and "blk.0.attn_q.weight" not in tensors


def test_phi3_refuses_heads_that_do_not_fill_hidden(tmp_path):
    assert "head_dim" in refused(edited(tmp_path, "phi3", head_dim=8), tmp_path)


def test_phi3_name_of_a_non_phi3_tokenizer_is_written_apart(converted):
    """The fixture folder is named phi3-*, but its tokenizer lacks Phi-3's tokens and rstrip flags."""
    name = field(GGUFReader(converted("phi3", "f32")), "general.name")
    assert name.startswith("phi 3-")


def test_phi3_name_stays_for_phi3s_own_tokenizer():
    tokens = ["<unk>", "<s>", "</s>", "a", "<|endoftext|>", "<|end|>"]
    C, N, U = int(TokenType.CONTROL), int(TokenType.NORMAL), int(TokenType.USER_DEFINED)
    phi3 = Vocab("llama", tokens, [C, C, U, N, C, C], rstrip=frozenset({2, 5}))
    assert general_name("Phi-3-mini-4k-instruct", phi3) == "Phi-3-mini-4k-instruct"
    other = Vocab("llama", tokens, [C, C, U, N, C, C], rstrip=frozenset())
    assert general_name("Phi-3-mini-4k-instruct", other) == "Phi 3-mini-4k-instruct"
    assert general_name("my-phi3-tune", Vocab("gpt2", ["a"], [N])) == "my-phi 3-tune"
    assert general_name("Phi-4-mini-instruct", other) == "Phi-4-mini-instruct"


# --- SmolLM3, Granite, Mistral 3 -----------------------------------------------------------------------------


def test_smollm3_refuses_another_no_rope_pattern(tmp_path):
    assert "no_rope_layers" in refused(edited(tmp_path, "smollm3", no_rope_layers=[1, 0, 1, 1]), tmp_path)


def test_granite_multipliers_are_written(converted):
    config = json.loads((build_fixture("granite") / "config.json").read_text())
    reader = GGUFReader(converted("granite", "f32"))
    for key, hf in (("embedding_scale", "embedding_multiplier"), ("residual_scale", "residual_multiplier"),
                    ("attention.scale", "attention_multiplier"), ("logit_scale", "logits_scaling")):  # fmt: skip
        assert math.isclose(field(reader, f"granite.{key}"), config[hf], rel_tol=1e-6)


def test_mistral3_text_model_only_with_its_yarn_and_temperature(converted):
    config = json.loads((build_fixture("mistral3") / "config.json").read_text())["text_config"]
    reader = GGUFReader(converted("mistral3", "f32"))
    names = {t.name for t in reader.tensors}
    assert names and all(n.startswith(("blk.", "token_embd", "output")) for n in names)
    rope = config["rope_parameters"]
    assert field(reader, "general.architecture") == "mistral3"
    assert field(reader, "mistral3.rope.scaling.type") == "yarn"
    assert math.isclose(
        field(reader, "mistral3.attention.temperature_scale"), rope["llama_4_scaling_beta"], rel_tol=1e-6
    )
    assert field(reader, "mistral3.rope.scaling.original_context_length") == rope["original_max_position_embeddings"]


@pytest.mark.parametrize(("changes", "fragment"), [({"sliding_window": 8}, "sliding_window")])
def test_mistral3_refuses_what_llama_cpp_cannot_run(changes, fragment, tmp_path):
    assert fragment in refused(edited(tmp_path, "mistral3", **changes), tmp_path)


def test_mistral3_refuses_yarn_mscale_other_than_one(tmp_path):
    src = build_fixture("mistral3")
    rope = dict(json.loads((src / "config.json").read_text())["text_config"]["rope_parameters"], mscale=2.0)
    assert "mscale" in refused(edited(tmp_path, "mistral3", rope_parameters=rope), tmp_path)

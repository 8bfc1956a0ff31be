"""Bad input through the real CLI: one line on stderr naming the problem, exit 2, no traceback, no file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.fixtures.build import build_fixture

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "convert", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str], *fragments: str, folder: Path) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".gguf") or ".tmp-" in p.name]
    assert not leftovers


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A private copy of the llama fixture that a test may break."""
    return Path(shutil.copytree(build_fixture("llama"), tmp_path / "model"))


def test_missing_config(src: Path, tmp_path: Path) -> None:
    (src / "config.json").unlink()
    r = run_cli(src, tmp_path / "out.gguf")
    assert_clean_failure(r, "missing config.json", folder=tmp_path)


def test_missing_tokenizer(src: Path, tmp_path: Path) -> None:
    (src / "tokenizer.json").unlink()
    r = run_cli(src, tmp_path / "out.gguf")
    assert_clean_failure(r, "missing tokenizer", folder=tmp_path)


def test_unsupported_architecture_names_the_supported_list(src: Path, tmp_path: Path) -> None:
    config = json.loads((src / "config.json").read_text())
    config["architectures"] = ["FalconForCausalLM"]
    (src / "config.json").write_text(json.dumps(config))
    r = run_cli(src, tmp_path / "out.gguf")
    assert_clean_failure(
        r, "FalconForCausalLM", "LlamaForCausalLM", "Qwen3ForCausalLM", "Gemma3ForCausalLM", folder=tmp_path
    )


def test_truncated_safetensors(src: Path, tmp_path: Path) -> None:
    weights = src / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 1000)
    r = run_cli(src, tmp_path / "out.gguf")
    assert_clean_failure(r, "model.safetensors is truncated", folder=tmp_path)


def test_corrupt_safetensors_header(src: Path, tmp_path: Path) -> None:
    weights = src / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\xff" * 32  # garbage where the JSON header starts
    weights.write_bytes(bytes(data))
    r = run_cli(src, tmp_path / "out.gguf")
    assert_clean_failure(r, "corrupt safetensors header", folder=tmp_path)


def test_shape_that_does_not_match_config(src: Path, tmp_path: Path) -> None:
    config = json.loads((src / "config.json").read_text())
    config["intermediate_size"] *= 2
    (src / "config.json").write_text(json.dumps(config))
    r = run_cli(src, tmp_path / "out.gguf")
    assert_clean_failure(r, "mlp.", "config.json implies", folder=tmp_path)


def test_missing_shard_of_an_indexed_checkpoint(src: Path, tmp_path: Path) -> None:
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00002-of-00002.safetensors"}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    r = run_cli(src, tmp_path / "out.gguf")
    assert_clean_failure(r, "model-00002-of-00002.safetensors", "missing", folder=tmp_path)


def test_existing_output_needs_force(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "model.gguf"
    out.parent.mkdir()
    out.write_bytes(b"precious")
    r = run_cli(src, out)
    assert r.returncode == 2 and "--force" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == b"precious"
    r = run_cli(src, out, "--force", "--quiet")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"GGUF"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.gguf"]  # no temp file beside it


def test_unknown_type_and_missing_folder(tmp_path: Path) -> None:
    r = run_cli(tmp_path / "nowhere", tmp_path / "out.gguf")
    assert_clean_failure(r, "nowhere", folder=tmp_path)
    r = run_cli(tmp_path, "--type", "q3_k")
    assert_clean_failure(r, "q3_k", folder=tmp_path)


def test_unsupported_rope_scaling_is_refused(src: Path, tmp_path: Path) -> None:
    config = json.loads((src / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    (src / "config.json").write_text(json.dumps(config))
    r = run_cli(src, tmp_path / "out.gguf")
    assert_clean_failure(r, "rope scaling 'dynamic'", "llama3", folder=tmp_path)

"""An embedding checkpoint's pooling -> `{arch}.pooling_type`: from sentence-transformers files or --pooling."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import gguf
import pytest

from convert.__main__ import main
from convert.errors import SourceError, UnsupportedError
from convert.pooling import checkpoint_pooling, pooling_meta
from testkit.fixtures.embedding import MODULES, POOLING_CONFIG, build_qwen3_embedding_fixture


def _st_folder(tmp_path: Path, pooling: dict[str, object], modules: list[dict[str, object]] = MODULES) -> Path:
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling").mkdir(exist_ok=True)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return tmp_path


def test_pooling_from_sentence_transformers_files(tmp_path: Path) -> None:
    assert checkpoint_pooling(build_qwen3_embedding_fixture()) == "last"
    assert pooling_meta("qwen3", build_qwen3_embedding_fixture()) == [
        ("qwen3.pooling_type", 3, gguf.GGUFValueType.UINT32)
    ]
    no_flags = dict.fromkeys(POOLING_CONFIG, False)
    assert checkpoint_pooling(_st_folder(tmp_path, {**no_flags, "pooling_mode_mean_tokens": True})) == "mean"
    assert checkpoint_pooling(_st_folder(tmp_path, {**no_flags, "pooling_mode_cls_token": True})) == "cls"
    assert checkpoint_pooling(_st_folder(tmp_path, {"pooling_mode": "lasttoken"})) == "last"  # the newer spelling


def test_no_embedding_files_no_pooling(tmp_path: Path) -> None:
    assert checkpoint_pooling(tmp_path) is None and pooling_meta("llama", tmp_path) == []
    assert pooling_meta("llama", tmp_path, "cls") == [("llama.pooling_type", 2, gguf.GGUFValueType.UINT32)]
    only_transformer = [m for m in MODULES if m["type"].endswith("Transformer")]
    assert checkpoint_pooling(_st_folder(tmp_path, {}, only_transformer)) is None


def test_poolings_llama_cpp_lacks_are_refused(tmp_path: Path) -> None:
    no_flags = dict.fromkeys(POOLING_CONFIG, False)
    for config in (
        {**no_flags, "pooling_mode_max_tokens": True},
        {**no_flags, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True},
        no_flags,
    ):
        with pytest.raises(UnsupportedError, match="--pooling"):
            checkpoint_pooling(_st_folder(tmp_path, config))
    # an explicit choice converts it anyway
    assert pooling_meta("qwen3", tmp_path, "mean")[0][1] == 1
    dense = [*MODULES, {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}]
    with pytest.raises(UnsupportedError, match="Dense"):
        checkpoint_pooling(_st_folder(tmp_path, POOLING_CONFIG, dense))
    with pytest.raises(UnsupportedError, match="unknown pooling"):
        pooling_meta("qwen3", tmp_path, "max")
    _st_folder(tmp_path, POOLING_CONFIG)
    (tmp_path / "1_Pooling" / "config.json").unlink()
    with pytest.raises(SourceError, match="Pooling"):
        checkpoint_pooling(tmp_path)


def test_cli_writes_the_pooling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_gguf: Callable[[str], Path]
) -> None:
    src = build_qwen3_embedding_fixture()
    out = tmp_path / "e.gguf"
    assert main([str(src), str(out), "--pooling", "cls", "--quiet"]) == 0
    assert gguf.GGUFReader(out).fields["qwen3.pooling_type"].parts[-1][0] == 2  # --pooling wins over the files
    broken = shutil.copytree(src, tmp_path / "broken")
    (broken / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    assert main([str(broken), str(tmp_path / "b.gguf"), "--quiet"]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "b.gguf").exists()
    fields = gguf.GGUFReader(demo_gguf("demo-think")).fields  # a chat model gets no pooling key
    assert not any(k.endswith(".pooling_type") for k in fields)

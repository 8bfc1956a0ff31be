"""`python -m serve` refuses bad settings with one line on stderr and exit status 2, before loading anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serve.config import build_parser, from_args
from servers import REPO


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model-path", "/no/such/model"], "no such file or folder"),
        (["--max-concurrent", "0"], "--max-concurrent"),
        (["--port", "70000"], "--port"),
    ],
)
def test_bad_settings_exit_2_with_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "serve", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr and "Traceback" not in r.stderr


def test_not_a_checkpoint_folder(tmp_path: Path) -> None:
    from serve.errors import ConfigError
    from serve.models import resolve_model

    with pytest.raises(ConfigError, match="config.json"):
        resolve_model(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a .gguf"):
        resolve_model(tmp_path / "notes.txt")


def test_flags_come_from_the_settings_model() -> None:
    flags = {a.option_strings[0] for a in build_parser()._actions if a.option_strings}
    assert {"--model-path", "--max-concurrent", "--max-queue", "--device-map", "--n-gpu-layers", "--router",
            "--api-key-file", "--ctx-size", "--kv-type", "--flash-attn"} <= flags
    config = from_args(["--max-concurrent", "4", "--flash-attn", "--device-map", "cpu"])
    assert config.max_concurrent == 4 and config.flash_attn and config.device_map == "cpu"
    assert config.host == "127.0.0.1" and config.port == 8000  # API.md's defaults

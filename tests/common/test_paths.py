"""hearth_common.paths: the cache under HEARTH_CACHE or the user's cache directory (platformdirs is the oracle), the
demo models found from the checkout, and serve's and the stack's defaults taken from there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import platformdirs

from hearth_common.paths import CACHE_ENV, cache_dir, conversions_dir, demo_dir, stack_state_dir

ROOT = Path(__file__).resolve().parents[2]


def test_cache_dir_is_the_users_unless_hearth_cache_moves_it(tmp_path: Path) -> None:
    assert cache_dir({}) == Path(platformdirs.user_cache_dir("hearth"))
    assert cache_dir({CACHE_ENV: str(tmp_path)}) == tmp_path
    assert cache_dir({CACHE_ENV: "~/elsewhere"}) == Path.home() / "elsewhere"
    assert cache_dir({CACHE_ENV: "rel"}) == Path.cwd() / "rel"  # absolute: children may run in another folder
    assert conversions_dir({CACHE_ENV: str(tmp_path)}) == tmp_path / "gguf"
    assert stack_state_dir({CACHE_ENV: str(tmp_path)}) == tmp_path / "stack"
    assert conversions_dir({}).parent == stack_state_dir({}).parent == cache_dir({})


def test_demo_models_are_the_checkouts() -> None:
    assert demo_dir() == ROOT / "models" / "demo"
    for name in ("demo-think", "demo-harmony", "demo-vision"):
        assert (demo_dir() / name / "config.json").is_file()


def test_programs_take_their_defaults_from_there(tmp_path: Path) -> None:
    """A fresh process with HEARTH_CACHE set: serve's conversion cache and the stack's state dir follow it, and the
    built-in stack's sources are the demo folders."""
    code = (
        "import json; from serve.config import CACHE, ServeConfig; from stack.config import STATE_DIR, load_stack; "
        "print(json.dumps([str(CACHE), str(STATE_DIR), str(ServeConfig().model_path), "
        "[str(m.source) for m in load_stack().models]]))"
    )
    env = {**os.environ, CACHE_ENV: str(tmp_path / "c")}
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    cache, state, model, sources = json.loads(out.stdout)
    assert Path(cache) == tmp_path / "c" / "gguf"
    assert Path(state) == tmp_path / "c" / "stack"
    assert Path(model) == demo_dir() / "demo-think"
    assert [Path(s) for s in sources] == [demo_dir() / n for n in ("demo-think", "demo-harmony", "demo-vision")]
